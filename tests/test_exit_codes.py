"""The exit-code contract (api/exits.py) as the workloads apply it, and the dataset-size warning's arithmetic."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from dpo_operator import cli
from dpo_operator.api.exits import UNRECOVERABLE, ExitCode, NotFound, exit_code
from dpo_operator.collect.llm import ChatClient, LLMError, LLMSettings, ModelNotServed, NeverAnswered
from dpo_operator.collect.runner import BadCollectionInput
from dpo_operator.collect.workflow import WorkflowNotFound, workflow_factory
from dpo_operator.handlers.dataset_size import small_dataset
from dpo_operator.kube.jobs import pod_failure_policy


def test_every_unrecoverable_code_fails_the_job_at_once() -> None:
    rule = pod_failure_policy("trainer")["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [3, 4, 5] == list(UNRECOVERABLE)


def test_exit_codes_follow_the_cause_through_wrapping() -> None:
    assert exit_code(RuntimeError("connection reset")) == ExitCode.MAY_RECOVER == 1
    assert exit_code(ValueError("bad row")) == exit_code(FileNotFoundError("x")) == 3
    assert exit_code(ModelNotServed("serves others")) == exit_code(NeverAnswered("refused")) == 4
    assert exit_code(NotFound("model")) == 5
    try:  # a run's failure, wrapped as the collector does, inside a TaskGroup's exception group
        try:
            raise ExceptionGroup("run", [WorkflowNotFound("workflow 'x' not found")])
        except ExceptionGroup as group:
            raise BadCollectionInput("run 1/1: ...") from group
    except BadCollectionInput as wrapped:
        assert exit_code(wrapped) == 5
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        try:
            raise RepositoryNotFoundError("404 Client Error: Repository Not Found",
                                          response=httpx.Response(404, request=httpx.Request("GET", "https://hf.co")))
        except RepositoryNotFoundError as missing:
            raise OSError("meta/x is not a local folder and is not a valid model identifier") from missing
    except OSError as wrapped:
        assert exit_code(wrapped) == 5


def test_an_unknown_workflow_names_the_known_ones() -> None:
    with pytest.raises(WorkflowNotFound, match="workflow 'tictactoo' not found.*tictactoe"):
        workflow_factory("tictactoo")
    assert exit_code(WorkflowNotFound("x")) == 5


def test_a_missing_model_directory_is_not_found(tmp_path) -> None:  # noqa: ANN001
    from dpo_operator.api.training import DPOTrainingJobSpec

    spec = DPOTrainingJobSpec.model_validate({
        "dataset": {"location": {"pvc": {"claimName": "d", "path": "/ds"}}},
        "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tinny"}},
        "local": {"output": {"claimName": "d", "path": "/m"}}})
    with pytest.raises(NotFound, match="model.pvc.path '/tinny' on PVC models does not exist"):
        cli._check_model_path(str(tmp_path / "tinny"), spec)
    (tmp_path / "tiny").mkdir()
    cli._check_model_path(str(tmp_path / "tiny"), spec)  # exists: fine
    cli._check_model_path("meta-llama/Llama-3.2-1B", spec)  # a hub id: transformers' to find


def _wait(transport: httpx.MockTransport, base_url: str = "http://10.0.0.1:8000/v1", timeout: float = 0.2) -> None:
    async def wait() -> None:
        settings = LLMSettings(base_url, "m", startup_timeout_seconds=timeout)
        async with ChatClient(settings, transport=transport) as chat:
            await chat.wait_until_serving(poll_seconds=0.01)
    asyncio.run(wait())


def test_what_the_endpoint_answers_decides_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from dpo_operator.collect import llm

    monkeypatch.setattr(llm, "OTHER_MODELS_SECONDS", 0.05)
    monkeypatch.setattr(llm, "NEVER_ANSWERED_SECONDS", 0.05)
    others = httpx.MockTransport(lambda r: httpx.Response(200, json={"data": [{"id": "other"}]}))
    with pytest.raises(ModelNotServed, match=r"serves \['other'\], not model 'm' \(listed so for 0s\)"):
        _wait(others, timeout=10)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")
    with pytest.raises(NeverAnswered, match="never answered: its port refused the connection"):
        _wait(httpx.MockTransport(refused), timeout=10)
    # a cluster Service's port refuses while its pods start: waited out until startupTimeoutSeconds
    with pytest.raises(NeverAnswered, match="did not serve model 'm' within 0s"):
        _wait(httpx.MockTransport(refused), base_url="http://nim.team-a.svc.cluster.local:8000/v1", timeout=0.3)

    answered = iter([httpx.Response(503), *[None] * 1000])

    def then_refused(request: httpx.Request) -> httpx.Response:
        response = next(answered)
        if response is None:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return response
    with pytest.raises(LLMError) as caught:  # it answered once: may recover (exit 1)
        _wait(httpx.MockTransport(then_refused), timeout=0.2)
    assert not isinstance(caught.value, NeverAnswered) and exit_code(caught.value) == 1


@pytest.mark.parametrize(("pairs", "batch", "accumulation", "warning"), [
    (40, 64, 1, "batchSize (64) is larger than the dataset (40 training pairs): every epoch is 1 optimizer step(s)"),
    (40, 16, 1, "an epoch is only 3 optimizer step(s) (40 training pairs / batchSize 16; fewer than 5)"),
    (40, 4, 4, "an epoch is only 3 optimizer step(s) (40 training pairs / batchSize 4 / gradientAccumulationSteps 4"),
    (40, 8, 1, None),
    (1000, 64, 1, None),
])
def test_small_datasets_are_named(pairs: int, batch: int, accumulation: int, warning: str | None) -> None:
    found = small_dataset(pairs, batch, accumulation)
    assert (found is None) if warning is None else (found is not None and warning in found)
