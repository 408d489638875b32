"""The strict NeMo platform fake's core refuses what NVIDIA's definitions refuse and never sends a wrong answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes.platform import Answer, Call, FakePlatformCore, PlatformViolation, route, timestamp

FILESETS = "/apis/files/v2/workspaces/{workspace}/filesets"


class TinyPlatform(FakePlatformCore):
    """One handler: creating a fileset, optionally with an answer that misses a required field."""

    broken = False

    @route("POST", FILESETS, "create-fileset")
    async def create_fileset(self, call: Call) -> Answer:
        record: dict[str, Any] = {
            "id": self.new_id("fileset"), "name": call.body["name"], "workspace": call.workspace, "description": "",
            "purpose": call.body.get("purpose", "generic"), "storage": {"type": "local", "path": "/data"},
            "metadata": {}, "custom_fields": {}, "project": "", "created_at": timestamp(), "updated_at": timestamp()}
        if self.broken:
            del record["storage"]
        return Answer(200, record)


def _post(fake: TinyPlatform, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(fake.url + path, json=body, **kwargs)


def test_valid_request_and_answer_pass() -> None:
    with TinyPlatform() as fake:
        answer = _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "pairs", "purpose": "dataset"})
        assert answer.status_code == 200 and answer.json()["workspace"] == "default"
        assert fake.calls == [("create-fileset", "POST", "/apis/files/v2/workspaces/default/filesets")]


def test_an_invalid_request_gets_the_platforms_422_and_is_kept() -> None:
    with TinyPlatform() as fake:
        bad_name = _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "Pairs"})
        unknown = _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "pairs", "size": 1})
        query = httpx.post(fake.url + "/apis/files/v2/workspaces/default/filesets?dry_run=1", json={"name": "pairs"})
        assert {r.status_code for r in (bad_name, unknown, query)} == {422}
        assert bad_name.json()["detail"][0]["loc"] == ["body", "name"]
        assert "size" in unknown.json()["detail"][0]["msg"] and unknown.json()["detail"][0]["loc"] == ["body"]
        assert query.json()["detail"][0]["loc"] == ["query", "dry_run"]
        assert len(fake.take_rejected()) == 3


def test_leaving_with_an_unexpected_rejection_fails_the_test() -> None:
    with pytest.raises(PlatformViolation, match="pattern"):
        with TinyPlatform() as fake:
            _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "-x"})


def test_a_wrong_answer_is_never_sent() -> None:
    with pytest.raises(PlatformViolation, match="'storage' is a required property"):
        with TinyPlatform() as fake:
            fake.broken = True
            answer = _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "pairs"})
            assert answer.status_code == 500 and "fileset-" not in answer.text  # the record stays here


def test_workspaces_auth_unknown_and_unimplemented_operations() -> None:
    with pytest.raises(PlatformViolation) as caught:
        with TinyPlatform(api_key="k", workspaces=("team",)) as fake:
            headers = {"Authorization": "Bearer k"}
            assert _post(fake, "/apis/files/v2/workspaces/team/filesets", {"name": "pairs"}).status_code == 401
            assert _post(fake, "/apis/files/v2/workspaces/other/filesets", {"name": "pairs"},
                         headers=headers).json() == {"detail": "Workspace 'other' not found"}
            assert _post(fake, "/apis/files/v2/workspaces/team/filesets", {"name": "pairs"},
                         headers=headers).status_code == 200
            assert httpx.get(fake.url + "/v1/customization/jobs", headers=headers).status_code == 404
            assert httpx.get(fake.url + "/apis/files/v2/workspaces/team/filesets/pairs",
                             headers=headers).status_code == 501
    assert "no such operation" in str(caught.value) and "does not implement" in str(caught.value)


def test_failures_are_injected_per_route() -> None:
    with TinyPlatform() as fake:
        fake.fail["create-fileset"] = [503]
        assert _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "pairs"}).status_code == 503
        assert _post(fake, "/apis/files/v2/workspaces/default/filesets", {"name": "pairs"}).status_code == 200


def test_a_handler_for_an_operation_the_platform_lacks_is_refused() -> None:
    class Wrong(FakePlatformCore):
        @route("POST", "/apis/files/v2/workspaces/{workspace}/datasets", "nope")
        async def nope(self, call: Call) -> Answer:
            return Answer(200)

    with pytest.raises(PlatformViolation, match="not in NVIDIA's definitions"):
        Wrong()


def _rl_job(fake: Any, training: dict[str, Any], **spec: Any) -> httpx.Response:
    body = {"name": "dpo-a", "spec": {"model": "default/m", "dataset": "default/pairs", "training": training,
                                      **spec}}
    return httpx.post(fake.url + "/apis/customization/v2/workspaces/default/rl/jobs", json=body)


def test_the_rl_backend_refuses_what_nvidias_dpo_schema_refuses() -> None:
    from tests.fakes.platform_training import TrainingPlatform

    with TrainingPlatform() as fake:
        peft = _rl_job(fake, {"type": "dpo", "peft": {"type": "lora"}})
        lora = _rl_job(fake, {"type": "dpo", "finetuning_type": "lora"})
        unknown = _rl_job(fake, {"type": "dpo"}, output_model="x")
        beta = _rl_job(fake, {"type": "dpo", "ref_policy_kl_penalty": -1})
        untyped = _rl_job(fake, {"learning_rate": 0.1})
        assert {r.status_code for r in (peft, lora, unknown, beta, untyped)} == {422}
        assert peft.json()["detail"][0]["loc"] == ["body", "spec", "training"]
        assert "'peft' was unexpected" in peft.json()["detail"][0]["msg"]
        assert "'finetuning_type' was unexpected" in lora.json()["detail"][0]["msg"]
        assert "'output_model' was unexpected" in unknown.json()["detail"][0]["msg"]
        assert beta.json()["detail"][0]["loc"] == ["body", "spec", "training", "ref_policy_kl_penalty"]
        assert len(fake.take_rejected()) == 5 and fake.jobs == {}
        no_backend = httpx.post(fake.url + "/apis/customization/v2/workspaces/default/automodel/jobs",
                                json={"spec": {}})
        assert no_backend.status_code == 422 and "no customization backend 'automodel'" in no_backend.text
        fake.take_rejected()
