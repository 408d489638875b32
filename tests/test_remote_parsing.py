"""Parsing remote answers and our own timestamps: strict where a wrong answer must not pass (a status that is not
an object is a failed poll), tolerant where RFC 3339 allows other forms; and a reconcile that raises something
unexpected is retried with backoff, never dropped."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dpo_operator.api.training import KIND
from dpo_operator.kube.conditions import parse_time, seconds_since
from dpo_operator.nemo import customizer as nemo
from dpo_operator.nemo.http import NemoApi, NemoError
from dpo_operator.runtime.controller import Controller, Result, Runtime
from dpo_operator.runtime.errors import is_transient


def answering(body: str) -> NemoApi:
    return NemoApi("http://customizer", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=body.encode(), headers={"content-type": "application/json"})))


def test_a_status_answer_that_is_not_an_object_is_a_failed_poll() -> None:
    with answering(json.dumps([{"status": "running"}])) as api, pytest.raises(NemoError) as failed:
        nemo.job_status(api, "job-1")
    assert failed.value.transient and is_transient(failed.value)
    assert "not a JSON object" in str(failed.value)


def test_numbers_a_float_cannot_hold_are_left_out_not_a_crash() -> None:
    huge = "1" + "0" * 400
    body = f'{{"status": "running", "percentage_done": {huge}, "steps_completed": 12, "train_loss": NaN}}'
    with answering(body) as api:
        status = nemo.job_status(api, "job-1")
    assert status.phase == "Running"
    assert status.progress == {"stepsCompleted": 12}


@pytest.mark.parametrize("text", ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.250Z", "2026-01-02t03:04:05z",
                                  "2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05.123456789Z",
                                  "2026-01-02 03:04:05Z"])
def test_rfc3339_forms_are_read(text: str) -> None:
    parsed = parse_time(text)
    assert parsed is not None
    assert parsed.astimezone(datetime.UTC).replace(microsecond=0) == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize("text", [None, "", "yesterday", 1735787045, "2026-13-02T03:04:05Z"])
def test_what_is_not_a_timestamp_is_none(text: Any) -> None:
    assert parse_time(text) is None and seconds_since(text) is None


def test_an_unexpected_exception_is_retried_with_backoff_and_reported_while_pending() -> None:
    def broken(body: dict[str, Any]) -> Result:
        raise ValueError("an answer we could not read")

    runtime = Runtime()
    controller = Controller(KIND, broken, lambda body: None)
    body: dict[str, Any] = {"metadata": {"name": "x", "namespace": "n", "uid": "u"}, "status": {"phase": "Pending"}}
    delays = []
    for retry in range(4):
        result, failed = runtime._decide(controller, body, retry)
        assert failed
        assert result.outcome is not None and result.outcome.reason == "Retrying"
        assert "ValueError: an answer we could not read" in result.outcome.message
        delays.append(result.requeue_after)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    running = {**body, "status": {"phase": "Running"}}
    result, failed = runtime._decide(controller, running, 9)
    assert failed and result.outcome is None  # a running resource keeps its status
    assert result.requeue_after == runtime.config.max_backoff_seconds


def test_a_service_that_trickles_its_answer_is_cut_off_at_the_deadline() -> None:
    """httpx's timeouts are per read: a body sent a byte at a time never trips them. The deadline is total."""
    import asyncio

    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                await asyncio.sleep(0.05)
                yield b" "

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Trickle()))
    with NemoApi("http://slow", transport=transport, deadline=0.5) as api, pytest.raises(NemoError) as cut:
        api.request("GET", "/v1/customization/jobs/x/status")
    assert cut.value.transient and "no complete answer within 0.5s" in str(cut.value)
