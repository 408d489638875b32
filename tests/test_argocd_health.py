"""The Argo CD health script (manifests/argocd/health.lua, run with lupa) copes with generations given as strings
and reads conditions, not only the phase."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_install import health, resource  # noqa: F401  (the lupa fixture)


def with_conditions(phase: str | None, conditions: list[dict[str, Any]], generation: Any = 2, observed: Any = 2,
                    message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "conditions": conditions, "message": message}
    if phase is not None:
        status["phase"] = phase
    return {"metadata": {"name": "x", "generation": generation}, "spec": {}, "status": status}


def condition(type_: str, status: str = "True", observed: Any = 2, reason: str = "R", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": observed,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("obj, expected", [
    (resource("Succeeded", generation=2, observed="2"), "Healthy"),          # string observedGeneration
    (resource("Succeeded", generation="3", observed="2"), "Progressing"),    # both strings, not yet observed
    (resource("Ready", generation="2", observed=2), "Healthy"),
    (resource("Ready", generation=10, observed="9"), "Progressing"),       # compared as numbers, not text
    (resource("Ready", observed="not-a-number"), "Progressing"),
    (with_conditions(None, [condition("Failed", message="the job failed (OOMKilled)")]), "Degraded"),
    (with_conditions("Running", [condition("Failed", message="boom")]), "Degraded"),
    (with_conditions("Succeeded", [condition("Succeeded", observed="2")]), "Healthy"),
    (with_conditions("Succeeded", [condition("Succeeded", observed=1)]), "Progressing"),   # stale condition
    (with_conditions("Ready", [condition("Ready"), condition("Failed", status="False")]), "Healthy"),
    (with_conditions("Pending", [condition("Suspended", observed="2")]), "Suspended"),
    (with_conditions("Pending", [condition("Failed", observed=1)]), "Progressing"),  # an old generation's failure
    (with_conditions("Pending", []), "Progressing"),
    (with_conditions("Queued", [condition("Queued", reason="Preempted")]), "Progressing"),  # Kueue holds it
    (with_conditions("Queued", [condition("Queued"), condition("Suspended", status="False")]), "Progressing"),
])
def test_string_generations_and_conditions(health: Any, obj: dict[str, Any], expected: str) -> None:  # noqa: F811
    status, message = health(obj)
    assert status == expected, (obj, message)


def test_a_queued_resource_says_so(health: Any) -> None:  # noqa: F811
    status, message = health(with_conditions("Queued", [condition("Queued", reason="Preempted")],
                                             message="preempted by Kueue; queued again in LocalQueue team-a"))
    assert status == "Progressing" and message.startswith("Queued: preempted by Kueue")


def test_a_failed_condition_message_is_shown(health: Any) -> None:  # noqa: F811
    status, message = health(with_conditions(None, [condition("Failed", message="the job failed (OOMKilled)")]))
    assert status == "Degraded" and "OOMKilled" in message and message.startswith("Failed")


def test_an_evaluation_verdict_is_in_the_message(health: Any) -> None:  # noqa: F811
    refused = with_conditions("Succeeded", [condition("Succeeded")], message="candidate -0.5 vs baseline -0.2")
    refused["status"]["verdict"] = "Failed"
    status, message = health(refused)
    assert status == "Healthy"  # the comparison ran: what it found is the verdict, not the resource's health
    assert message == "Succeeded (verdict Failed): candidate -0.5 vs baseline -0.2"
    missing = with_conditions("Failed", [condition("Failed", reason="EndpointFailed", message="baseline: 3 of 30")])
    missing["status"]["verdict"] = "Inconclusive"
    status, message = health(missing)
    assert status == "Degraded" and message.startswith("Failed (verdict Inconclusive): baseline: 3 of 30")


def test_a_loop_shows_its_round_and_why_it_stopped(health: Any) -> None:  # noqa: F811
    running = with_conditions("Running", [condition("Progressing")], message="round 2: DPOCollection lp-r2-collect")
    running["status"].update(currentRound=2, roundPhase="Collecting")
    status, message = health(running)
    assert status == "Progressing" and message.startswith("Running (round 2, Collecting): round 2")
    stopped = with_conditions("Succeeded", [condition("Succeeded")], message="stopped after round 1")
    stopped["status"].update(currentRound=1, roundPhase="Done", stopReason="NotPromoted")
    status, message = health(stopped)
    assert status == "Healthy" and "(stopped: NotPromoted)" in message
