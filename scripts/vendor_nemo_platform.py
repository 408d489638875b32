"""Vendor NVIDIA's NeMo platform (v2) definitions into tests/fixtures/nemo_platform/ from the ``nemo-platform`` wheel.

- ``openapi.yaml``: the platform's OpenAPI document (files, jobs, models, entities, secrets, inference-gateway),
  copied byte for byte from ``nemo_platform_ext/cli/docs/fern/openapi/openapi.yaml``;
- ``customization.schema.json``: the customization router's routes are not in that document (the service is a
  plugin whose backends mount ``/apis/customization/v2/workspaces/{workspace}/{backend}/jobs``), so their bodies are
  generated as JSON Schema (2020-12, ``$defs``) from NVIDIA's own pydantic models, imported from the wheel
  (they import on Python 3.11 although the wheel asks for 3.12): the create request and job answer
  (``nmp.customization_common.sdk.types``) and the ``rl`` backend's job spec (``nemo_rl_plugin.schema.RlJobInput``,
  ``extra='forbid'`` throughout, so ``peft`` or any unknown field is refused as the platform refuses it);
- ``SOURCE.md``: package, version, the wheel's sha256 and the paths.

Usage: ``python scripts/vendor_nemo_platform.py /path/to/nemo_platform-0.6.0-py3-none-any.whl``
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "nemo_platform"
OPENAPI = "nemo_platform_ext/cli/docs/fern/openapi/openapi.yaml"
# (JSON Schema name, module, class): what the fake validates the customization routes against
MODELS = (
    ("CustomizationJobCreateRequest", "nmp.customization_common.sdk.types", "CustomizationJobCreateRequest"),
    ("CustomizationJob", "nmp.customization_common.sdk.types", "CustomizationJob"),
    ("CustomizationHealthResponse", "nmp.customization_common.sdk.types", "CustomizationHealthResponse"),
    ("RlJobInput", "nemo_rl_plugin.schema", "RlJobInput"),
)
PAGE = ("CustomizationJobsPage", "nemo_platform_plugin.schema", "Page")  # Page[CustomizationJob]: the list answer
SOURCES = {
    "CustomizationJobCreateRequest": "nmp/customization_common/sdk/types.py",
    "CustomizationJob": "nmp/customization_common/sdk/types.py",
    "CustomizationHealthResponse": "nmp/customization_common/sdk/types.py",
    "RlJobInput": "nemo_rl_plugin/schema.py (training: nmp/rl/schemas/job.py DPOTraining | GRPOTraining)",
    "CustomizationJobsPage": "nemo_platform_plugin/schema.py Page[CustomizationJob] (nemo_platform_plugin/jobs/"
                             "api_factory.py list_jobs)",
}
ROUTES = "nmp/customization_common/sdk/endpoints.py (POST/GET /apis/customization/v2/workspaces/{workspace}/" \
         "{backend}/jobs[/{name}]); nemo_rl_plugin/jobs/jobs.py (job_collection_path /rl/jobs)"


def customization_schema(wheel: Path) -> dict[str, Any]:
    """JSON Schema of NVIDIA's customization models, imported from the wheel (unpacked: ``nmp`` is a namespace
    package, which zipimport cannot import)."""
    from pydantic.json_schema import models_json_schema

    unpacked = tempfile.mkdtemp(prefix="nemo-platform-")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    sys.path.insert(0, unpacked)
    models = [getattr(importlib.import_module(module), cls) for _, module, cls in MODELS]
    page = getattr(importlib.import_module(PAGE[1]), PAGE[2])[models[1]]
    models.append(page)
    keyed, schema = models_json_schema([(m, "validation") for m in models], ref_template="#/$defs/{model}")
    defs = dict(schema.get("$defs", {}))
    for (name, _, _), model in zip((*MODELS, PAGE), models, strict=True):
        ref = keyed[(model, "validation")]["$ref"].rsplit("/", 1)[-1]
        if ref != name:
            defs[name] = {"$ref": f"#/$defs/{ref}"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="nemo_platform-<version>-py3-none-any.whl")
    args = parser.parse_args()
    wheel: Path = args.wheel.resolve()
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    version = wheel.name.split("-")[1]
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        (OUT / "openapi.yaml").write_bytes(archive.read(OPENAPI))
    (OUT / "customization.schema.json").write_text(json.dumps(customization_schema(wheel), indent=1, sort_keys=True)
                                                   + "\n")
    models = "\n".join(f"- `{name}`: `{SOURCES[name]}`" for name, _, _ in (*MODELS, PAGE))
    (OUT / "SOURCE.md").write_text(f"""# NVIDIA NeMo platform definitions (vendored; do not edit)

Regenerate with `python scripts/vendor_nemo_platform.py {wheel.name}`.

- Package: `nemo-platform` {version} (PyPI), wheel `{wheel.name}`
- sha256 of the wheel: `{digest}`
- `openapi.yaml`: `{OPENAPI}` in the wheel, verbatim (OpenAPI 3.1).
- `customization.schema.json`: JSON Schema generated (pydantic `models_json_schema`, validation mode) from the
  wheel's pydantic models, imported on Python {sys.version_info.major}.{sys.version_info.minor}:
{models}
- Customization routes (not in `openapi.yaml`): {ROUTES}.
- DPO rows: `nemo_customizer/skills/nemo-customizer/references/dataset-formats.md` § NeMo-RL (DPO):
  `{{prompt, chosen, rejected}}` in `training.jsonl` and `validation.jsonl` at the root of one fileset.
- In {version} the `automodel` route's job input (`nemo_automodel_plugin/schema.py` `TrainingSpec.training_type`)
  offers `sft` and `distillation` only: DPO runs on the `rl` backend.
""")


if __name__ == "__main__":
    main()
