"""Generate what manifests/ derives from other sources; `make manifests` writes them, tests fail when stale.

- manifests/install.yaml: the Helm chart rendered with default values in namespace dpo-system (helm-python-sdk,
  no helm binary), preceded by the namespace and the CRDs;
- manifests/argocd/argocd-cm-health.yaml: the Argo CD ConfigMap patch carrying argocd/health.lua for each kind.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "dpo-operator"
INSTALL = ROOT / "manifests" / "install.yaml"
HEALTH_LUA = ROOT / "manifests" / "argocd" / "health.lua"
HEALTH_CM = ROOT / "manifests" / "argocd" / "argocd-cm-health.yaml"
KINDS = ("DPOCollection", "DPOTrainingJob", "ModelDeployment", "DPOEvaluation", "DPOLoop")
NAMESPACE, RELEASE = "dpo-system", "dpo-operator"
HEADER = (f"# Generated from charts/dpo-operator by scripts/render_install.py (make manifests): do not edit.\n"
          f"# kubectl apply --server-side -f manifests/install.yaml  (namespace {NAMESPACE}, all namespaces watched)\n")


def render_chart(values: dict | None = None, namespace: str = NAMESPACE, release: str = RELEASE) -> list[dict]:
    """The chart's templates rendered to objects (NOTES.txt and empty documents dropped)."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=release, namespace=namespace)
    objects: list[dict] = []
    for path in sorted(rendered):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(rendered[path]) if doc)
    return objects


def chart_crds(include_peering: bool = False) -> list[dict]:
    docs = []
    for path in sorted((CHART / "crds").glob("*.yaml")):
        if include_peering or path.name != "kopf-peering.yaml":
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def install_yaml() -> str:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    objects = [namespace, *chart_crds(), *render_chart()]
    return HEADER + "---\n" + "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def health_configmap() -> str:
    """A patch for argocd-cm (kubectl -n argocd patch cm argocd-cm --patch-file ...)."""
    script = HEALTH_LUA.read_text()
    data = {f"resource.customizations.health.dpo.ai_{kind}": script for kind in KINDS}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "argocd-cm", "namespace": "argocd",
                       "labels": {"app.kubernetes.io/part-of": "argocd"}}, "data": data}

    class Literal(str):
        pass

    yaml.add_representer(Literal, lambda dumper, v: dumper.represent_scalar("tag:yaml.org,2002:str", v, style="|"))
    cm["data"] = {k: Literal(v) for k, v in data.items()}
    return ("# Generated from argocd/health.lua by scripts/render_manifests.py (make manifests): do not edit.\n"
            "# kubectl -n argocd patch configmap argocd-cm --patch-file manifests/argocd/argocd-cm-health.yaml\n"
            + yaml.dump(cm, sort_keys=False))


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    for path, text in ((INSTALL, install_yaml()), (HEALTH_CM, health_configmap())):
        path.write_text(text)
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
