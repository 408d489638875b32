"""The evaluation Job of a DPOEvaluation (pure: spec, resolved endpoints and configuration in, manifest out)."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.evaluation import KIND, DPOEvaluationSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.evaluate.endpoints import API_KEY_ENV, ENDPOINTS_ENV, Endpoint, endpoints_json
from dpo_operator.evaluate.heldout import TRAINING_EXAMPLES_ENV, TrainingExamples
from dpo_operator.kube.naming import child_name, labels_for
from dpo_operator.kube.pods import container, pod_spec, pvc_volume, secret_env
from dpo_operator.render.collection import nat_config_maps
from dpo_operator.render.job import job, spec_env

SPEC_ENV = "DPO_EVALUATION_SPEC"


def job_name(name: str) -> str:
    return child_name(name, "eval")


def _nat_inputs(spec: DPOEvaluationSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, mounts and env for a NAT workflow's ConfigMaps (the same places the collection pod uses)."""
    nat = spec.workflow.nat
    return nat_config_maps(nat) if nat is not None else ([], [], [])


def job_manifest(body: Any, spec: DPOEvaluationSpec, config: OperatorConfig, candidate: Endpoint, baseline: Endpoint,
                 training: TrainingExamples | None) -> dict[str, Any]:
    """The Job that plays both endpoints (as resolved by the operator) and reports the comparison."""
    name = body["metadata"]["name"]
    labels = labels_for(KIND.kind, name, "evaluator")
    volumes, mounts = [], []
    if spec.output is not None:
        volumes.append(pvc_volume("output", spec.output))
        mounts.append({"name": "output", "mountPath": config.data_root})
    nat_volumes, nat_mounts, nat_env = _nat_inputs(spec)
    volumes.extend(nat_volumes)
    mounts.extend(nat_mounts)
    env = [
        spec_env(SPEC_ENV, spec.to_api()),
        {"name": ENDPOINTS_ENV, "value": endpoints_json(candidate, baseline)},
        *([{"name": TRAINING_EXAMPLES_ENV, "value": training.to_json()}] if training is not None else []),
        {"name": "DPO_DATA_ROOT", "value": config.data_root},
        {"name": "DPO_RESOURCE_NAME", "value": name},
        *nat_env,
        *secret_env(API_KEY_ENV["candidate"], spec.candidate.api_key_secret_ref),
        *secret_env(API_KEY_ENV["baseline"], spec.baseline.api_key_secret_ref),
    ]
    evaluator = container(
        spec.template, name="evaluator", default_image=config.workload_image,
        command=["dpo-operator", "evaluate", "--spec-env", SPEC_ENV, "--result-file", "/dev/termination-log"],
        env=env, volume_mounts=mounts,
    )
    return job(KIND.kind, body, job_name(name), labels, spec.job, spec.template,
               pod_spec(spec.template, [evaluator], volumes=volumes, config=config),
               secret_destinations={API_KEY_ENV["candidate"]: candidate.base_url if spec.candidate.api_key_secret_ref
                                    else None,
                                    API_KEY_ENV["baseline"]: baseline.base_url if spec.baseline.api_key_secret_ref
                                    else None})
