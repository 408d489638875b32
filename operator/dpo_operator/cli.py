"""The ``dpo-operator`` command: run the operator, generate CRDs, and run the workloads."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import kopf

    import dpo_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=args.standalone,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        peering_name=args.peering,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from dpo_operator import crdgen

    for path in crdgen.write_crds(Path(args.output)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpo-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf)")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable; default: all)")
    run.add_argument("--standalone", action="store_true", help="no peering: assume this is the only operator instance")
    run.add_argument("--peering", default=None, help="kopf peering object name (for several replicas)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="generate the CRDs from the API models")
    crds.add_argument("-o", "--output", default="crds", help="output directory")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
