"""The ``dpo-operator`` command: run the operator, generate CRDs, and run the workloads."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpo_operator import __version__
from dpo_operator.api.results import (
    TERMINATION_MESSAGE_LIMIT,
    CollectionResult,
    EvaluationResult,
    DataCheckResult,
    PodError,
    TrainingResult,
    UploadResult,
    ValidationResult,
)


def configure_logging(log_format: str, verbose: bool) -> None:
    """The operator's log lines: text, or JSON (one object a line, the resource's namespace and name under "k8s",
    through kopf's own formatter) for a log collector. kopf's handler replaces the plain one ``main``'s basicConfig
    put on the root logger, which wrote every line a second time."""
    import kopf

    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
                   log_refkey="k8s")


def _run(args: argparse.Namespace) -> int:
    import kopf

    import dpo_operator.handlers  # noqa: F401  (registers the handlers)

    configure_logging(args.log_format, args.verbose)
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


def _write_result(path: str | None, payload: str) -> None:
    """The pod's result for the operator: /dev/termination-log holds at most 4096 bytes."""
    if path:
        Path(path).write_text(payload[:TERMINATION_MESSAGE_LIMIT])


def _load_spec(args: argparse.Namespace, model: Any) -> Any:
    """The spec from ``--spec FILE`` (a manifest or a bare spec, YAML or JSON) or ``--spec-env VAR`` (JSON)."""
    import os

    import yaml

    raw = os.environ[args.spec_env] if args.spec_env else Path(args.spec).read_text()
    document = yaml.safe_load(raw)
    return model.model_validate(document.get("spec", document) if "kind" in document else document)


def _exit_code(exc: BaseException) -> int:
    """The exit-code contract (dpo_operator.api.exits): 3, 4 or 5 for a failure no retry can fix, on which the Job's
    podFailurePolicy fails at once; 1 otherwise."""
    from dpo_operator.api.exits import exit_code

    return exit_code(exc)


def _collect(args: argparse.Namespace) -> int:
    import json
    import os

    from dpo_operator.api.collection import DPOCollectionSpec
    from dpo_operator.collect.runner import run_collection

    try:
        spec = _load_spec(args, DPOCollectionSpec)
        if spec.workflow.nat is not None and spec.workflow.nat.workflow_output is None:
            from dpo_operator import natenv

            natenv.hand_over(args.argv)  # NAT runs in the image's NAT environment
        data_root, name = Path(os.environ.get("DPO_DATA_ROOT", "/data")), os.environ.get("DPO_RESOURCE_NAME", "local")
        if args.shard:  # one pod of an Indexed Job: its share of the candidates, no dataset yet
            from dpo_operator.collect.shard import run_shard, shard_index

            summary = json.dumps(run_shard(spec, data_root=data_root, index=shard_index()), sort_keys=True)
            _write_result(args.result_file, summary)
            print(summary)
            return 0
        if args.merge:
            from dpo_operator.collect.shard import merge_shards

            result = merge_shards(spec, data_root=data_root, name=name)
        else:
            result = run_collection(spec, data_root=data_root,
                                    output_dir=Path(args.output_dir) if args.output_dir else None, name=name)
    except Exception as exc:  # noqa: BLE001  (reported to the operator, then exit 1)
        logging.getLogger("dpo_operator.collect").error("collection failed: %s", exc)
        _write_result(args.result_file, PodError(error=f"{type(exc).__name__}: {exc}").to_json())
        return _exit_code(exc)
    from dataclasses import asdict

    reported = CollectionResult.model_validate(asdict(result)).to_json()
    _write_result(args.result_file, reported)
    print(reported)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import os

    from dpo_operator.api.evaluation import DPOEvaluationSpec
    from dpo_operator.evaluate.runner import run_evaluation

    try:
        spec = _load_spec(args, DPOEvaluationSpec)
        if spec.workflow.nat is not None:
            from dpo_operator import natenv

            natenv.hand_over(args.argv)  # NAT runs in the image's NAT environment
        result: EvaluationResult = run_evaluation(
            spec, data_root=Path(os.environ.get("DPO_DATA_ROOT", "/data")),
            output_dir=Path(args.output_dir) if args.output_dir else None)
    except Exception as exc:  # noqa: BLE001  (reported to the operator, then exit 1 or 3)
        logging.getLogger("dpo_operator.evaluate").exception("evaluation failed")
        _write_result(args.result_file, PodError(error=f"{type(exc).__name__}: {exc}").to_json())
        return _exit_code(exc)
    reported = result.to_json()
    _write_result(args.result_file, reported)
    print(reported)
    return 0


@contextlib.contextmanager
def _dataset_directory(args: argparse.Namespace, reading: Any) -> Iterator[str]:
    """``--dataset-dir`` as is, or the files ``reading`` names of a ``--dataset-hub`` repo, downloaded into a
    temporary directory."""
    if args.dataset_dir:
        yield args.dataset_dir
        return
    import os
    import tempfile

    from dpo_operator.train.sources import download_hub

    with tempfile.TemporaryDirectory() as tmp:
        yield str(download_hub(args.dataset_hub_endpoint, args.dataset_hub, args.dataset_hub_revision,
                               os.environ.get("DATASET_HF_TOKEN"), reading, Path(tmp) / "dataset"))


def _check_model_path(model: str | None, spec: Any) -> None:
    """A model directory that does not exist is "not found" (exit code 5), not what transformers would make of it
    (a hub repository id, "Repo id must be in the form ...")."""
    if not model or not model.startswith("/") or Path(model).is_dir():
        return
    from dpo_operator.api.exits import NotFound

    pvc = spec.model.pvc
    where = f"model.pvc.path {pvc.path!r} on PVC {pvc.claim_name}" if pvc is not None else f"model {model}"
    raise NotFound(f"model directory not found: {where} does not exist"
                   + (" (it is a file, not a directory)" if Path(model).exists() else "")
                   + "; check the path, or that the model was copied there")


def _check_starting_point(args: argparse.Namespace, spec: Any) -> None:
    """model.adapter must be a LoRA adapter agreeing with hyperparameters.lora (exit 3 otherwise; 5 when missing),
    and a referenceModel directory must exist (5): both before any weight is read."""
    if getattr(args, "adapter", None):
        from dpo_operator.train.adapters import check_adapter

        check_adapter(args.adapter, spec.hyperparameters.lora)
    reference = getattr(args, "reference_model", None)
    if reference and reference.startswith("/") and not Path(reference).is_dir():
        from dpo_operator.api.exits import NotFound

        pvc = spec.reference_model.pvc if spec.reference_model is not None else None
        where = f"referenceModel.pvc.path {pvc.path!r} on PVC {pvc.claim_name}" if pvc is not None else reference
        raise NotFound(f"reference model directory not found: {where} does not exist; check the path")


def _train(args: argparse.Namespace) -> int:
    """Train, then leave at once when several ranks ran (see dpo_operator.train.trainer._FINISHED): the result is
    written and the checkpoints are complete, nothing is left to tear down but torch's process group."""
    import os

    code = _train_once(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _train_once(args: argparse.Namespace) -> int:
    import os

    from dpo_operator.api.training import DPOTrainingJobSpec
    from dpo_operator.train.preemption import EXIT_CODE, Preempted
    from dpo_operator.train.sources import Reading
    from dpo_operator.train.trainer import TrainConfig, train

    from dpo_operator.paths import no_backsteps

    try:
        spec = _load_spec(args, DPOTrainingJobSpec)
        for flag in ("output_dir", "dataset_dir", "model", "adapter", "reference_model"):
            if getattr(args, flag) and getattr(args, flag).startswith("/"):  # a directory (a model may be a hub id)
                no_backsteps(getattr(args, flag), f"--{flag.replace('_', '-')}")
        _check_model_path(args.model, spec)
        _check_starting_point(args, spec)
        with _dataset_directory(args, Reading.from_spec(spec.dataset, spec.hyperparameters.seed)) as dataset_dir:
            config = TrainConfig.from_spec(spec, args.model or spec.model.name, dataset_dir, args.output_dir,
                                           adapter=args.adapter, reference=args.reference_model)
            if args.max_steps:
                config.max_steps = args.max_steps
            summary = train(config)
    except Preempted as exc:  # SIGTERM: the checkpoint is saved; no error (a resumed pod continues from it)
        logging.getLogger("dpo_operator.train").warning("%s", exc)
        return EXIT_CODE
    except Exception as exc:  # noqa: BLE001  (reported to the operator, then exit 1)
        logging.getLogger("dpo_operator.train").exception("training failed")
        _write_result(args.result_file, PodError(error=f"{type(exc).__name__}: {exc}").to_json())
        return _exit_code(exc)
    train_metrics = summary.get("train") or {}
    validation = summary.get("validation")
    result = TrainingResult(output_model=summary.get("outputModel"), steps=summary["steps"],
                            train_loss=train_metrics.get("loss"), reward_accuracy=train_metrics.get("rewards/accuracies"),
                            smoothed_train_loss=summary.get("smoothedTrainLoss"),
                            val_loss=(validation or {}).get("val/loss"),
                            validation=ValidationResult.from_metrics(validation) if validation else None,
                            tokens_per_second=train_metrics.get("tokens_per_second"),
                            resumed_from_step=summary.get("resumedFromStep"))
    if int(os.environ.get("RANK", "0")) == 0:
        _write_result(args.result_file, result.to_json())
    return 0


def _check_data(args: argparse.Namespace) -> int:
    """The data check before training: exit 0 with a DataCheckResult (passed or not), 3/1 when it cannot run."""
    import os

    from dpo_operator.api.training import DPOTrainingJobSpec
    from dpo_operator.datacheck.run import check
    from dpo_operator.paths import no_backsteps
    from dpo_operator.train.sources import Reading

    try:
        spec = _load_spec(args, DPOTrainingJobSpec)
        _check_model_path(args.model, spec)  # a typo'd model path fails here (not found), before any GPU pod
        _check_starting_point(args, spec)  # so does an adapter that contradicts hyperparameters.lora
        for flag in ("card_dir", "dataset_dir", "model", "adapter", "reference_model"):
            if getattr(args, flag) and getattr(args, flag).startswith("/"):
                no_backsteps(getattr(args, flag), f"--{flag.replace('_', '-')}")
        reading = Reading.from_spec(spec.dataset, spec.hyperparameters.seed)
        with _dataset_directory(args, reading) as dataset_dir:
            result, _ = check(Path(dataset_dir), reading, spec.dataset.check, spec.hyperparameters.max_seq_length,
                              args.model, Path(args.card_dir) if args.card_dir else None,
                              {"location": os.environ.get("DPO_DATASET_LOCATION", dataset_dir)})
    except Exception as exc:  # noqa: BLE001  (reported to the operator, then exit 1 or 3)
        logging.getLogger("dpo_operator.datacheck").exception("data check could not run")
        _write_result(args.result_file, PodError(error=f"{type(exc).__name__}: {exc}").to_json())
        return _exit_code(exc)
    reported = DataCheckResult.model_validate(result).to_json()
    _write_result(args.result_file, reported)
    print(reported)
    return 0


def _upload_dataset(args: argparse.Namespace) -> int:
    import os

    from dpo_operator.nemo import datastore

    from dpo_operator.paths import no_backsteps

    try:
        if args.dataset_dir:
            no_backsteps(args.dataset_dir, "--dataset-dir")
        if args.platform_url and not (args.fileset and (args.spec or args.spec_env)):
            raise ValueError("--platform-url needs --fileset and --spec or --spec-env")
        if args.datastore_url and not args.repo:
            raise ValueError("--datastore-url needs --repo")
        if args.spec or args.spec_env:  # the operator's upload pod: read, check and convert as the spec says
            from dpo_operator.api.training import DPOTrainingJobSpec

            result = _checked_upload(args, _load_spec(args, DPOTrainingJobSpec))
        elif args.dataset_dir:
            files = datastore.read_directory(Path(args.dataset_dir))
            result = datastore.upload(files, args.datastore_url, args.repo, os.environ.get("HF_TOKEN"))
        else:
            files = datastore.read_hub(args.source_endpoint, args.source_repo, args.source_revision,
                                       os.environ.get("SOURCE_HF_TOKEN"))
            result = datastore.upload(files, args.datastore_url, args.repo, os.environ.get("HF_TOKEN"))
    except Exception as exc:  # noqa: BLE001  (reported to the operator, then exit 1)
        logging.getLogger("dpo_operator.upload").error("dataset upload failed: %s", exc)
        _write_result(args.result_file, PodError(error=f"{type(exc).__name__}: {exc}").to_json())
        return _exit_code(exc)
    uploaded = UploadResult.model_validate(result)
    while len(uploaded.to_json()) > TERMINATION_MESSAGE_LIMIT and uploaded.data_check is not None and \
            (uploaded.data_check.warnings or uploaded.data_check.failures[1:]):
        (uploaded.data_check.warnings or uploaded.data_check.failures).pop()
    reported = uploaded.to_json()
    _write_result(args.result_file, reported)
    print(reported)
    return 0


def _checked_upload(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    """Read the source as ``spec.dataset`` says, check it (unless disabled), convert it to the Customizer's JSONL
    and upload it with the data card; a failed check uploads nothing and answers its verdict."""
    import contextlib
    import os
    import tempfile

    from dpo_operator.datacheck.run import check
    from dpo_operator.nemo import datastore
    from dpo_operator.nemo.customizer_jsonl import customizer_files
    from dpo_operator.nemo.platform import files as platform_files_api
    from dpo_operator.nemo.platform.client import PlatformClient
    from dpo_operator.nemo.platform.dpo_rows import platform_files
    from dpo_operator.render.upload import PLATFORM_KEY_ENV
    from dpo_operator.train.sources import Reading, download_hub, open_splits

    reading = Reading.from_spec(spec.dataset, spec.hyperparameters.seed)
    with contextlib.ExitStack() as stack:
        if args.dataset_dir:
            directory = Path(args.dataset_dir)
        else:
            target = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "dataset"
            directory = download_hub(args.source_endpoint, args.source_repo, args.source_revision,
                                     os.environ.get("SOURCE_HF_TOKEN"), reading, target)
        checked: DataCheckResult | None = None
        card: list[tuple[str, bytes]] = []
        if spec.dataset.check.enabled:
            location = os.environ.get("DPO_DATASET_LOCATION", str(directory))
            checked, card = check(directory, reading, spec.dataset.check, spec.hyperparameters.max_seq_length,
                                  None, None, {"location": location})
            if not checked.passed:
                return {"filesUrl": None, "dataCheck": checked.model_dump(by_alias=True, mode="json")}
        metrics = directory / "metrics.json"
        convert = platform_files if args.platform_url else customizer_files
        files = convert(open_splits(directory, reading), metrics.read_bytes() if metrics.is_file() else b"{}")
        files.extra = [(f"data-check/{name}", content) for name, content in card]
        if args.platform_url:
            client = PlatformClient(args.platform_url, args.workspace, os.environ.get(PLATFORM_KEY_ENV) or None)
            result = platform_files_api.upload_dataset(files, client, args.fileset, "DPO preference pairs uploaded "
                                                       f"by dpo-operator ({os.environ.get('DPO_DATASET_LOCATION')})")
        else:
            result = datastore.upload(files, args.datastore_url, args.repo, os.environ.get("HF_TOKEN"))
    if checked is not None:
        checked.data_card = f"{result['filesUrl']}/data-check/datacard.json"
        result["dataCheck"] = checked.model_dump(by_alias=True, mode="json")
    return result


def _serve(args: argparse.Namespace) -> int:
    from dpo_operator.embedded.model_server import serve_from_env

    serve_from_env(host=args.host)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dpo_operator.embedded.demo import run_demo

    return run_demo(Path(args.workdir), examples=args.examples, timeout=args.timeout)


def _demo_loop(args: argparse.Namespace) -> int:
    from dpo_operator.embedded.demo_loop import LoopDemoConfig, run_demo_loop

    return run_demo_loop(Path(args.workdir), LoopDemoConfig(
        examples=args.examples, held_out=args.held_out, rounds=args.rounds, epochs=args.epochs,
        warmup_steps=args.warmup_steps, timeout=args.timeout))


def _dev_cluster(args: argparse.Namespace) -> int:
    from dpo_operator.embedded.dev_cluster import run_dev_cluster

    return run_dev_cluster(Path(args.workdir), port=args.port, policy_port=args.policy_port)


def _report(args: argparse.Namespace) -> int:
    import os

    from dpo_operator.report.page import render
    from dpo_operator.report.sources import ReportError, gather

    kind, _, name = args.resource.partition("/")
    if not name:
        print(f"error: name the resource as <kind>/<name>, e.g. dpotj/{args.resource}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    try:
        data = gather(kind, args.namespace, name, Path(args.from_dir) if args.from_dir else None)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Path(args.output).write_text(render(data))
    for note in data.notes:
        print(f"report: {note}", file=sys.stderr)
    print(args.output)
    return 0


def _add_dataset_source_args(parser: argparse.ArgumentParser, dir_help: str) -> None:
    """Where a training or check pod reads the dataset: a mounted directory, or a Hub-compatible dataset repo."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset-dir", help=dir_help)
    source.add_argument("--dataset-hub", help="namespace/name of a dataset repo (token: $DATASET_HF_TOKEN)")
    parser.add_argument("--dataset-hub-endpoint", help="Hub API root of --dataset-hub")
    parser.add_argument("--dataset-hub-revision", default="main")


def _add_workload_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """What every workload command takes: its spec (file or env var) and where to report the result."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help=f"a {kind} manifest or spec (YAML/JSON file)")
    source.add_argument("--spec-env", help="environment variable holding the spec as JSON")
    parser.add_argument("--result-file", help="write the result summary (JSON) here, e.g. /dev/termination-log")


def _from_nat(args: argparse.Namespace) -> int:
    from dpo_operator.collect.nat_finetune import NatConfigError
    from dpo_operator.natconvert import convert

    try:
        conversion = convert(Path(args.config), [tuple(o) for o in args.override or []], name=args.name,
                             claim=args.pvc)
    except NatConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(conversion.to_yaml(args.config), end="")
    for note in conversion.notes:
        print(f"from-nat: no exact equivalent: {note}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpo-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf)")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable; default: all)")
    run.add_argument("--standalone", action="store_true", help="no peering: assume this is the only operator instance")
    run.add_argument("--peering", default=None, help="kopf peering object name (for several replicas)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("DPO_LOG_FORMAT") or "text",
                     help="text lines, or one JSON object a line (default: $DPO_LOG_FORMAT, else text)")
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="generate the CRDs from the API models")
    crds.add_argument("-o", "--output", default="crds", help="output directory")
    crds.set_defaults(func=_crds)

    collect = sub.add_parser("collect", help="run a preference-pair collection (what a collection pod runs)")
    _add_workload_args(collect, "DPOCollection")
    collect.add_argument("--output-dir", help="write the dataset to this directory instead of spec.output")
    stage = collect.add_mutually_exclusive_group()
    stage.add_argument("--shard", action="store_true", help="collect shard $JOB_COMPLETION_INDEX of spec.parallelism "
                                                            "(an Indexed Job's pod) into <output>.shards")
    stage.add_argument("--merge", action="store_true", help="merge the shards' candidates into the dataset")
    collect.set_defaults(func=_collect)

    evaluate = sub.add_parser("evaluate", help="compare a candidate and a baseline endpoint on held-out examples "
                                               "(what an evaluation pod runs)")
    _add_workload_args(evaluate, "DPOEvaluation")
    evaluate.add_argument("--output-dir", help="write evaluation.json to this directory instead of spec.output")
    evaluate.set_defaults(func=_evaluate)

    train = sub.add_parser("train", help="run DPO/SFT training (what a training pod runs; needs the [workload] extra)")
    _add_workload_args(train, "DPOTrainingJob")
    train.add_argument("--model", help="model directory or hub id (default: spec.model.name)")
    train.add_argument("--adapter", help="the saved LoRA adapter directory of spec.model.adapter")
    train.add_argument("--reference-model", help="referenceModel's directory or hub id (default: its name)")
    _add_dataset_source_args(train, "directory with training/ and validation/ JSONL files")
    train.add_argument("--output-dir", required=True, help="checkpoints, metrics.jsonl and final/ go here")
    train.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    train.set_defaults(func=_train)

    check_data = sub.add_parser("check-data", help="check a training dataset before any GPU is requested (what the "
                                                   "check pod runs)")
    _add_workload_args(check_data, "DPOTrainingJob")
    check_data.add_argument("--model", help="tokenizer directory or hub id (lengths in words without one)")
    check_data.add_argument("--adapter", help="the saved LoRA adapter directory of spec.model.adapter (its config is "
                                              "checked against hyperparameters.lora)")
    check_data.add_argument("--reference-model", help="referenceModel's directory (checked to exist)")
    _add_dataset_source_args(check_data, "the dataset location's directory")
    check_data.add_argument("--card-dir", help="write datacard.json and lengths.png here")
    check_data.set_defaults(func=_check_data)

    upload = sub.add_parser("upload-dataset", help="copy a dataset into NeMo Datastore (what an upload pod runs)")
    spec_source = upload.add_mutually_exclusive_group()
    spec_source.add_argument("--spec", help="a DPOTrainingJob manifest or spec: read, check and convert the dataset "
                                            "as its dataset section says")
    spec_source.add_argument("--spec-env", help="environment variable holding that spec as JSON")
    source = upload.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset-dir", help="directory with training/ and validation/ JSONL files")
    source.add_argument("--source-repo", help="namespace/name of a dataset repo on --source-endpoint")
    upload.add_argument("--source-endpoint", help="Hub API root of --source-repo (token: $SOURCE_HF_TOKEN)")
    upload.add_argument("--source-revision", default="main")
    destination = upload.add_mutually_exclusive_group(required=True)
    destination.add_argument("--datastore-url", help="v1: NeMo Datastore root (token: $HF_TOKEN)")
    destination.add_argument("--platform-url", help="v2: NeMo platform root (key: $NEMO_API_KEY); needs --spec or "
                                                    "--spec-env (the rows are converted to the platform's DPO format)")
    upload.add_argument("--repo", help="v1: namespace/name of the dataset repo to write")
    upload.add_argument("--workspace", default="default", help="v2: the platform workspace of --fileset")
    upload.add_argument("--fileset", help="v2: the dataset fileset to write (training.jsonl, validation.jsonl)")
    upload.add_argument("--result-file", help="write the result summary (JSON) here, e.g. /dev/termination-log")
    upload.set_defaults(func=_upload_dataset)

    serve = sub.add_parser("serve", help="a development stand-in for a NIM: serve a local model (NIM_* environment)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(func=_serve)

    from_nat = sub.add_parser("from-nat", help="print a nat finetune config (NeMo Customizer DPO) as a ConfigMap, "
                                               "DPOCollection, DPOTrainingJob and ModelDeployment for kubectl apply")
    from_nat.add_argument("config", help="the NAT config YAML (as given to nat finetune --config_file)")
    from_nat.add_argument("-o", "--override", nargs=2, action="append", metavar=("KEY", "VALUE"),
                          help="override a config value in dot notation, as nat finetune -o does (repeatable)")
    from_nat.add_argument("--name", help="base name of the resources (default: the config file's name)")
    from_nat.add_argument("--pvc", default="dpo-data", help="PVC the dataset is written to (default: dpo-data)")
    from_nat.set_defaults(func=_from_nat)

    report = sub.add_parser("report", help="write one self-contained HTML page about a DPOTrainingJob or "
                                           "DPOCollection: status figures, training curves, dataset summary")
    report.add_argument("resource", help="<kind>/<name>, e.g. dpotj/tictactoe-dpo or dpocollection/ttt")
    report.add_argument("-n", "--namespace", default="default")
    report.add_argument("--from-dir", help="a local copy of its output directory (a training job's "
                                           "<output>/<name>: plots/, metrics.jsonl, summary.json; a collection's "
                                           "dataset directory: metrics.json). On the dev cluster: "
                                           ".dev-cluster/pvc/<claim>/<path>")
    report.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    report.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    report.set_defaults(func=_report)

    demo = sub.add_parser("demo", help="run the pipeline on an embedded, emulated cluster (no cluster, no GPU)")
    demo.add_argument("--workdir", default=".demo", help="where local volumes and pod logs go")
    demo.add_argument("--examples", type=int, default=200, help="tic-tac-toe positions (episodes) to collect on")
    demo.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    demo.set_defaults(func=_demo)

    demo_loop = sub.add_parser("demo-loop", help="rounds of on-policy DPO (a DPOLoop) on an embedded, emulated cluster "
                                                 "(no cluster, no GPU)")
    demo_loop.add_argument("--workdir", default=".demo/loop", help="where local volumes, pod logs and the plot "
                                                                   "(score-per-round.png) go")
    demo_loop.add_argument("--examples", type=int, default=200, help="tic-tac-toe positions each round collects on")
    demo_loop.add_argument("--held-out", type=int, default=200, help="held-out positions each round's gate evaluates")
    demo_loop.add_argument("--rounds", type=int, default=3, help="the loop's maxRounds")
    demo_loop.add_argument("--epochs", type=int, default=3, help="training epochs per round")
    demo_loop.add_argument("--warmup-steps", type=int, default=300, help="supervised warm-up steps of the starting "
                                                                         "policy")
    demo_loop.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    demo_loop.set_defaults(func=_demo_loop)

    dev = sub.add_parser("dev-cluster", help="keep an emulated cluster (API server, CRDs, operator, local executor) "
                                             "running for kubectl, until Ctrl-C")
    dev.add_argument("--workdir", default=".dev-cluster", help="kubeconfig, local volumes and pod logs go here")
    dev.add_argument("--port", type=int, default=None, help="API server port (default: a free one)")
    dev.add_argument("--policy-port", type=int, default=0, help="port of the tic-tac-toe policy server (default: free)")
    dev.set_defaults(func=_dev_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for natenv.hand_over
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
