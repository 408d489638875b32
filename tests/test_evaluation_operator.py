"""The operator side of an evaluation: the API root of a ModelDeployment it names, and which pod results it trusts."""

from __future__ import annotations

from typing import Any

from dpo_operator.config import OperatorConfig
from dpo_operator.handlers.evaluation import api_root


def deployment(backend: str = "kubernetes", endpoint: str = "http://trained.team-a.svc.cluster.local:8010",
               port: int = 8010) -> dict[str, Any]:
    return {"metadata": {"name": "trained"}, "spec": {"backend": backend, "port": port},
            "status": {"phase": "Ready", "endpoint": endpoint, "servedModelName": "trained"}}


def test_the_status_endpoint_gets_the_openai_root() -> None:
    assert api_root(deployment(), "team-a", OperatorConfig()) == "http://trained.team-a.svc.cluster.local:8010/v1"
    assert api_root(deployment(endpoint="http://nemo/v1/"), "team-a", OperatorConfig()) == "http://nemo/v1"


def test_a_workload_url_template_replaces_the_service_dns_name_of_a_nim_service() -> None:
    local = OperatorConfig(workload_endpoint_url_template="http://127.0.0.1:{port}")
    assert api_root(deployment(), "team-a", local) == "http://127.0.0.1:8010/v1"
    named = OperatorConfig(workload_endpoint_url_template="http://{name}.{namespace}.example:{port}")
    assert api_root(deployment(), "team-a", named) == "http://trained.team-a.example:8010/v1"
    # NeMo Deployment Management serves elsewhere: its reported endpoint is used as it is
    assert api_root(deployment("nemo", "http://nemo-nim:8000"), "team-a", local) == "http://nemo-nim:8000/v1"


def test_a_result_with_an_unknown_verdict_is_no_result() -> None:
    from dpo_operator.api.results import EvaluationResult, first_valid

    side = {"count": 3, "failures": 0}
    reported = {"examples": 3, "candidate": side, "baseline": side, "verdict": "Passed"}
    assert first_valid(EvaluationResult, [{**reported, "verdict": "Probably"}]) is None
    assert first_valid(EvaluationResult, [{"error": "boom"}, reported]).verdict == "Passed"
