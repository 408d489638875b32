"""The two endpoints an evaluation pod calls, as the operator resolved them (a ModelDeployment's endpoint and served
model, or the spec's URL) and their API keys (from Secrets, by the kubelet)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dpo_operator.api.evaluation import DPOEvaluationSpec, EndpointSpec

ENDPOINTS_ENV = "DPO_EVALUATION_ENDPOINTS"
API_KEY_ENV = {"candidate": "CANDIDATE_API_KEY", "baseline": "BASELINE_API_KEY"}
SIDES = ("candidate", "baseline")


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str | None = None

    def to_api(self) -> dict[str, str]:
        return {"baseUrl": self.base_url, "model": self.model}


def endpoints_json(candidate: Endpoint, baseline: Endpoint) -> str:
    """What the operator passes in ``$DPO_EVALUATION_ENDPOINTS`` (no keys: those come from Secrets)."""
    return json.dumps({"candidate": candidate.to_api(), "baseline": baseline.to_api()}, sort_keys=True)


def _from_spec(side: EndpointSpec, name: str) -> Endpoint:
    if side.base_url is None or side.model is None:
        raise ValueError(f"spec.{name}.modelDeploymentRef is resolved by the operator (${ENDPOINTS_ENV}); "
                         f"outside a cluster give spec.{name}.baseUrl and model")
    return Endpoint(side.base_url, side.model)


def resolve(spec: DPOEvaluationSpec) -> dict[str, Endpoint]:
    """Both sides: from ``$DPO_EVALUATION_ENDPOINTS`` when set, else from the spec's URLs."""
    resolved = json.loads(os.environ[ENDPOINTS_ENV]) if os.environ.get(ENDPOINTS_ENV) else {}
    endpoints = {}
    for name in SIDES:
        given = resolved.get(name)
        endpoint = Endpoint(given["baseUrl"], given["model"]) if given else _from_spec(getattr(spec, name), name)
        endpoints[name] = Endpoint(endpoint.base_url, endpoint.model, os.environ.get(API_KEY_ENV[name]) or None)
    if (endpoints["candidate"].base_url.rstrip("/"), endpoints["candidate"].model) == (
            endpoints["baseline"].base_url.rstrip("/"), endpoints["baseline"].model):
        raise ValueError(f"baseline equals candidate ({endpoints['candidate'].model} at "
                         f"{endpoints['candidate'].base_url}): the comparison would measure nothing")
    return endpoints
