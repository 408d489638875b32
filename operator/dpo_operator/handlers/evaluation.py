"""DPOEvaluation: resolve both endpoints and the training examples, run one evaluation Job, record its figures.

Events (the resource, its Job and pods, the ModelDeployments and DPOCollection it references) only enqueue it;
:func:`decide` is the whole reconcile, run by :mod:`dpo_operator.runtime.controller`, which writes the outcome to
status. A finished evaluation never runs again: its figures describe the endpoints as they were then.
"""

from __future__ import annotations

from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api import collection as collection_api
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api.common import Phase
from dpo_operator.api.evaluation import (
    KIND,
    DifferenceSummary,
    DPOEvaluationSpec,
    DPOEvaluationStatus,
    EndpointSpec,
    HeldOutStatus,
    Outcomes,
    SideSummary,
    Verdict,
)
from dpo_operator.api.reasons import Reason
from dpo_operator.api.results import EvaluationResult, SideResult, first_valid
from dpo_operator.config import OperatorConfig
from dpo_operator.evaluate.endpoints import Endpoint
from dpo_operator.evaluate.heldout import TrainingExamples
from dpo_operator.handlers.common import enqueue_owner, enqueue_pod_owner, needs_retry_after_fix
from dpo_operator.kube import custom_objects
from dpo_operator.kube.jobs import (
    JobState,
    ensure_job,
    failure,
    get_job,
    job_state,
    pod_problem,
    pod_results,
    spec_applied,
)
from dpo_operator.kube.naming import owner_label, service_name
from dpo_operator.kube.status import Outcome, acknowledge_generation, is_terminal
from dpo_operator.render.evaluation import SPEC_ENV, job_manifest, job_name
from dpo_operator.runtime.controller import RUNTIME, Controller, Result
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure, parse_spec


WAIT_SECONDS = 10.0
ENDPOINT_FAILURES = {"endpointError", "endpointUnavailable"}
WORKFLOW_FAILURES = {"workflowError", "episodeError", "noDecisionPoints"}
SCORE_FAILURES = {"nonFiniteScore", "evaluatorError", "noScore"}
GATE_REASONS = {Verdict.PASSED.value: Reason.GatePassed, Verdict.FAILED.value: Reason.GateFailed,
                Verdict.NO_GATE.value: Reason.NoGate, Verdict.INCONCLUSIVE.value: Reason.Inconclusive}


def _endpoint(namespace: str, side: EndpointSpec, name: str) -> Endpoint | Outcome:
    """The side's URL and model, or why there is none yet (a ModelDeployment not Ready)."""
    if side.base_url is not None:
        assert side.model is not None
        return Endpoint(side.base_url, side.model)
    assert side.model_deployment_ref is not None
    ref = side.model_deployment_ref.name
    deployment = custom_objects.read(deployment_api.KIND, namespace, ref)
    if deployment is None:
        return Outcome(Phase.PENDING.value, Reason.WaitingForEndpoint, f"{name}: ModelDeployment {ref} does not exist (yet)")
    status = deployment.get("status") or {}
    if status.get("phase") in (Phase.FAILED.value, Phase.CANCELLED.value):
        raise PermanentFailure(Reason.EndpointUnavailable, f"{name}: ModelDeployment {ref} ended {status['phase']}: "
                                                           f"{status.get('message', '')}")
    if status.get("phase") != Phase.READY.value or not status.get("endpoint"):
        return Outcome(Phase.PENDING.value, Reason.WaitingForEndpoint,
                       f"{name}: waiting for ModelDeployment {ref} to be Ready (phase {status.get('phase') or 'unknown'})")
    model = side.model or status.get("servedModelName")
    if not model:
        return Outcome(Phase.PENDING.value, Reason.WaitingForEndpoint,
                       f"{name}: ModelDeployment {ref} reports no servedModelName yet")
    return Endpoint(api_root(deployment, namespace, RUNTIME.config), model)


def api_root(deployment: dict[str, Any], namespace: str, config: OperatorConfig) -> str:
    """The OpenAI API root (``.../v1``) an evaluation pod calls for a Ready ModelDeployment: its status.endpoint,
    or, for a NIM Service (backend kubernetes), the configured workload URL template when one is set."""
    spec = deployment.get("spec") or {}
    root = str(deployment["status"]["endpoint"])
    template = config.workload_endpoint_url_template
    if template and spec.get("backend", "kubernetes") == "kubernetes":
        root = template.format(name=service_name(deployment["metadata"]["name"]), namespace=namespace,
                               port=spec.get("port", 8000))
    root = root.rstrip("/")
    return root if root.endswith("/v1") else f"{root}/v1"


def _training(namespace: str, spec: DPOEvaluationSpec) -> TrainingExamples | Outcome | None:
    """What the heldOut collection played, read from its spec (it must exist: held out means held out)."""
    ref = spec.held_out.collection_ref if spec.held_out else None
    if ref is None:
        return None
    found = custom_objects.read(collection_api.KIND, namespace, ref.name)
    if found is None:
        return Outcome(Phase.PENDING.value, Reason.WaitingForCollection,
                       f"heldOut.collectionRef: DPOCollection {ref.name} does not exist (yet); the examples it played "
                       "cannot be excluded without it")
    collection = collection_api.DPOCollectionSpec.model_validate(found.get("spec") or {})
    return TrainingExamples(ref.name, collection.workflow.to_api(), collection.seed)


def _plan(namespace: str, spec: DPOEvaluationSpec) -> tuple[Endpoint, Endpoint, TrainingExamples | None] | Outcome:
    candidate = _endpoint(namespace, spec.candidate, "candidate")
    baseline = _endpoint(namespace, spec.baseline, "baseline")
    for waiting in (candidate, baseline):
        if isinstance(waiting, Outcome):
            return waiting
    assert isinstance(candidate, Endpoint) and isinstance(baseline, Endpoint)
    if (candidate.base_url.rstrip("/"), candidate.model) == (baseline.base_url.rstrip("/"), baseline.model):
        raise InvalidSpec(f"spec.baseline: resolves to the candidate's endpoint ({candidate.model} at "
                          f"{candidate.base_url}): the comparison would measure nothing")
    training = _training(namespace, spec)
    if isinstance(training, Outcome):
        return training
    return candidate, baseline, training


def _side(reported: SideResult) -> SideSummary:
    return SideSummary(endpoint=reported.endpoint, model=reported.model, mean=reported.mean, count=reported.count,
                       failures=reported.failures, failures_by_reason=reported.failures_by_reason or None,
                       invalid_answers=reported.invalid_answers)


def record(status: DPOEvaluationStatus, result: EvaluationResult) -> None:
    status.candidate, status.baseline = _side(result.candidate), _side(result.baseline)
    status.difference = DifferenceSummary(mean=result.mean_difference, lower=result.lower, upper=result.upper,
                                          confidence=result.confidence, pairs=result.pairs, method=result.method,
                                          resamples=result.resamples, seed=result.seed)
    status.outcomes = Outcomes(wins=result.wins, ties=result.ties, losses=result.losses)
    status.verdict = Verdict(result.verdict)
    status.verdict_message = result.verdict_message
    status.held_out = HeldOutStatus(pool=result.pool, excluded=result.excluded, evaluated=result.examples,
                                    description=result.held_out)
    status.result_path = result.result_path


def _missing_data(result: EvaluationResult) -> tuple[Reason, str] | None:
    """Why some examples have no score (Failed: a gate never passes on missing data), or None."""
    if result.examples == 0:
        return Reason.NoHeldOutExamples, f"no examples left to evaluate: {result.held_out}"
    reasons: dict[str, int] = {}
    problems = []
    for name, side in (("candidate", result.candidate), ("baseline", result.baseline)):
        for reason, count in side.failures_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
        if side.failures:
            problems.append(f"{name}: {side.failures} of {result.examples} examples have no score "
                            f"({', '.join(f'{k} {v}' for k, v in sorted(side.failures_by_reason.items()))}"
                            f"{'; first: ' + side.first_error if side.first_error else ''})")
    if not problems:
        return None
    reason = (Reason.EndpointFailed if ENDPOINT_FAILURES & set(reasons) else
              Reason.WorkflowFailed if WORKFLOW_FAILURES & set(reasons) else
              Reason.ScoreNotFinite if SCORE_FAILURES & set(reasons) else Reason.IncompleteEvaluation)
    return reason, "; ".join(problems) + "; verdict Inconclusive"


def _summary(result: EvaluationResult) -> str:
    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.4g}"

    return (f"candidate {show(result.candidate.mean)} vs baseline {show(result.baseline.mean)} over "
            f"{result.pairs} examples: difference {show(result.mean_difference)} "
            f"[{show(result.lower)}, {show(result.upper)}]; verdict {result.verdict}")


def outcome_for(namespace: str, job: dict[str, Any], state: JobState) -> Outcome:
    name = job["metadata"]["name"]
    fields = DPOEvaluationStatus(job_name=name)
    if state.phase == Phase.SUCCEEDED.value:
        result = first_valid(EvaluationResult, pod_results(namespace, name))
        if result is None:  # never a verdict without figures
            fields.failure_reason = Reason.ResultUnavailable
            fields.verdict = Verdict.INCONCLUSIVE
            return Outcome(Phase.FAILED.value, Reason.ResultUnavailable,
                           f"job {name} completed but no pod of it left a readable result (termination message)",
                           fields, conditions={"GatePassed": (False, Reason.Inconclusive, "no result")})
        record(fields, result)
        missing = _missing_data(result)
        gate = {"GatePassed": (result.verdict == Verdict.PASSED.value, GATE_REASONS[result.verdict],
                               result.verdict_message)}
        if missing is not None:
            fields.failure_reason = missing[0]
            return Outcome(Phase.FAILED.value, missing[0], missing[1], fields, conditions=gate)
        return Outcome(state.phase, Reason.Evaluated, _summary(result), fields, conditions=gate)
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, name, state)
        fields.failure_reason = explained.reason
        fields.verdict = Verdict.INCONCLUSIVE
        return Outcome(state.phase, explained.reason, explained.message, fields,
                       conditions={"GatePassed": (False, Reason.Inconclusive, "the evaluation failed")})
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        state = pod_problem(namespace, name) or state
    return Outcome(state.phase, state.reason, state.message, fields)


def decide(body: dict[str, Any]) -> Result:
    """The evaluation's one decision: once both endpoints are known, its Job (created once), and its outcome."""
    if is_terminal(body) and not needs_retry_after_fix(body):
        return Result(acknowledge_generation(KIND, body))
    spec = parse_spec(DPOEvaluationSpec, body)
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    job = get_job(namespace, job_name(name))
    if job is None:
        if (body.get("status") or {}).get("jobName"):
            raise PermanentFailure(Reason.JobMissing, f"job {job_name(name)} disappeared before its result was "
                                                      "recorded; delete and re-create the DPOEvaluation to run again")
        plan = _plan(namespace, spec)
        if isinstance(plan, Outcome):
            return Result(plan, requeue_after=WAIT_SECONDS)
        job = ensure_job(namespace, job_manifest(body, spec, RUNTIME.config, *plan))
    outcome = outcome_for(namespace, job, job_state(job))
    outcome.applied = spec_applied(job, SPEC_ENV, spec.to_api())  # a pod cannot change: later edits are not run
    return Result(outcome)


def next_check(body: Any) -> float | None:
    """A periodic level-based resync while the evaluation runs, in case a Job or pod event was missed."""
    return None if is_terminal(body) else RUNTIME.config.collection_resync_seconds


RUNTIME.register(Controller(KIND, decide, next_check))


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def evaluation_changed(body: kopf.Body, **_: Any) -> None:
    RUNTIME.enqueue(KIND, body)


@kopf.on.event("batch", "v1", "jobs", labels={owner_label(KIND.kind): kopf.PRESENT})
def evaluation_job_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    enqueue_owner(KIND, body, namespace, type)


@kopf.on.event("", "v1", "pods", labels={owner_label(KIND.kind): kopf.PRESENT})
def evaluation_pod_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    enqueue_pod_owner(KIND, body, namespace, type)


def dependencies(spec: Any) -> set[tuple[str, str]]:
    """(kind, name) of each resource the evaluation waits for: the ModelDeployments of its sides, the DPOCollection
    whose examples it holds out."""
    found = {(deployment_api.KIND.kind, ref) for side in ("candidate", "baseline")
             if (ref := ((spec.get(side) or {}).get("modelDeploymentRef") or {}).get("name"))}
    if held := ((spec.get("heldOut") or {}).get("collectionRef") or {}).get("name"):
        found.add((collection_api.KIND.kind, held))
    return found


def _running(body: kopf.Body, **_: Any) -> bool:
    return not is_terminal(body)


# kopf keeps this index from its watch of DPOEvaluations (an object that stops matching ``when`` leaves it): a
# dependency's event finds the evaluations that wait for it without listing every DPOEvaluation of the namespace
@kopf.index(GROUP, VERSION, KIND.plural, when=_running)
def evaluations_by_dependency(body: kopf.Body, namespace: str, name: str, uid: str,
                              **_: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(namespace, kind, name) of each dependency -> the evaluation's identity (what the runtime enqueues)."""
    ref = {"metadata": {"namespace": namespace, "name": name, "uid": uid}}
    return {(namespace, kind, dependency): ref for kind, dependency in dependencies(body.get("spec") or {})}


def _release_waiting(kind: str, body: kopf.Body, namespace: str, type: str | None, waiting: Any) -> None:
    if type == "DELETED":
        return
    for evaluation in waiting.get((namespace, kind, body["metadata"]["name"]), ()):
        RUNTIME.enqueue(KIND, evaluation)


def _endpoint_settled(body: kopf.Body, **_: Any) -> bool:
    return (body.get("status") or {}).get("phase") in (Phase.READY.value, Phase.FAILED.value, Phase.CANCELLED.value)


def _appeared(type: str | None, **_: Any) -> bool:
    """ADDED, or None: listed when the operator (re)starts."""
    return type in (None, "ADDED")


# The ``when`` filters are checked by kopf before it calls a handler: an event that cannot matter costs no
# thread hand-over and no log line (every DPOCollection event called every one of these before).
@kopf.on.event(GROUP, VERSION, deployment_api.KIND.plural, when=_endpoint_settled)
def endpoint_changed(body: kopf.Body, namespace: str, type: str | None, evaluations_by_dependency: Any,
                     **_: Any) -> None:
    """A ModelDeployment that becomes Ready (or fails) releases the evaluations waiting for it."""
    _release_waiting(deployment_api.KIND.kind, body, namespace, type, evaluations_by_dependency)


@kopf.on.event(GROUP, VERSION, collection_api.KIND.plural, when=_appeared)
def held_out_collection_changed(body: kopf.Body, namespace: str, type: str | None, evaluations_by_dependency: Any,
                                **_: Any) -> None:
    """A DPOCollection that appears releases the evaluations that hold its examples out. An evaluation waits only
    for the collection to exist (it reads the spec when it plans its Job), so only its appearance is looked at,
    not its status writes (listing the evaluations on every status write of every collection was the most
    frequent API call with 2,000 collections; now none is made: :func:`evaluations_by_dependency`)."""
    _release_waiting(collection_api.KIND.kind, body, namespace, type, evaluations_by_dependency)
