"""The emulated API server's watch under load: many watchers that come and go (timeouts, clients that hang up)
while objects are written concurrently. Every write completes, the server logs no failure, and a watch resumed from a
resourceVersion sees every event once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from dpo_operator.kubeemu.cluster import EmbeddedCluster

WATCHERS = 30  # concurrent watch loops, each reconnecting until the writers are done
WRITERS, WRITES = 4, 40  # each writer creates WRITES ConfigMaps and patches each once
NAMESPACE = "default"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


@pytest.fixture()
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster() as embedded:
        yield embedded


async def watch_until(client: httpx.AsyncClient, since: str, last: int) -> list[tuple[int, str]]:
    """(resourceVersion, name) of each event from ``since`` on, until the event at resourceVersion ``last``."""
    seen: list[tuple[int, str]] = []
    async with client.stream("GET", CONFIGMAPS, params={"watch": "true", "resourceVersion": since,
                                                        "timeoutSeconds": "60"}) as response:
        async for line in response.aiter_lines():
            event = json.loads(line)
            assert event["type"] != "ERROR", event
            meta = event["object"]["metadata"]
            seen.append((int(meta["resourceVersion"]), meta["name"]))
            if seen[-1][0] >= last:
                return seen
    raise AssertionError(f"the watch ended before resourceVersion {last}: {seen[-3:]}")


async def churn(client: httpx.AsyncClient, done: asyncio.Event, index: int) -> int:
    """Open watches again and again, each ended one of three ways: the client hangs up while the server waits for a
    change (the test server then cancels the watch's handler, as aiohttp does when a client goes away), the client
    hangs up after the first event of the initial listing, or the server ends it (``timeoutSeconds``). Returns how
    many watches it opened."""
    opened = 0
    while not done.is_set():
        opened += 1
        how = (index + opened) % 3
        if how == 0:
            since = (await client.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2), client.stream("GET", CONFIGMAPS, params={
                        "watch": "true", "resourceVersion": since}) as response:
                    async for _ in response.aiter_lines():
                        break
            continue
        params = {"watch": "true", "timeoutSeconds": "1", **({"resourceVersion": "0"} if how == 1 else {})}
        async with client.stream("GET", CONFIGMAPS, params=params) as response:
            async for _ in response.aiter_lines():
                if how == 1:
                    break  # leaving the block closes the connection mid-stream
    return opened


async def write(client: httpx.AsyncClient, writer: int) -> None:
    for i in range(WRITES):
        name = f"w{writer}-{i}"
        created = await client.post(CONFIGMAPS, json={"metadata": {"name": name}, "data": {"n": "0"}})
        assert created.status_code == 201, created.text
        patched = await client.patch(f"{CONFIGMAPS}/{name}", json={"data": {"n": "1"}},
                                     headers={"Content-Type": "application/merge-patch+json"})
        assert patched.status_code == 200, patched.text


async def storm(url: str) -> tuple[list[tuple[int, str]], list[int]]:
    limits = httpx.Limits(max_connections=WATCHERS + WRITERS + 2)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0), limits=limits) as client:
        start = (await client.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
        done = asyncio.Event()
        watchers = [asyncio.create_task(churn(client, done, i)) for i in range(WATCHERS)]
        await asyncio.gather(*(write(client, w) for w in range(WRITERS)))
        done.set()
        opened = await asyncio.gather(*watchers)
        last = (await client.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
        return await watch_until(client, start, int(last)), opened


def test_watches_that_come_and_go_under_concurrent_writes(cluster: EmbeddedCluster,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="dpo_operator.kubeemu")
    events, opened = asyncio.run(storm(cluster.url))
    failures = [r.getMessage() + (r.exc_text or "") for r in caplog.records if r.name.startswith("dpo_operator.kubeemu")]
    assert failures == []
    assert all(count >= 1 for count in opened)
    revisions = [revision for revision, _ in events]
    assert revisions == sorted(set(revisions))  # each event once, in resourceVersion order
    names = [name for _, name in events]
    expected = {f"w{w}-{i}" for w in range(WRITERS) for i in range(WRITES)}
    assert {n: names.count(n) for n in expected} == dict.fromkeys(expected, 2)  # ADDED, then MODIFIED


def test_a_watch_behind_the_kept_history_gets_410_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from dpo_operator.kubeemu import apiserver

    monkeypatch.setattr(apiserver, "EVENT_HISTORY", 5)  # each resource keeps its last 5 events
    with EmbeddedCluster() as embedded, httpx.Client(base_url=embedded.url, timeout=30) as client:
        versions = [client.post(CONFIGMAPS, json={"metadata": {"name": f"c{i}"}}).json()["metadata"]["resourceVersion"]
                    for i in range(10)]

        def watch(since: str) -> list[dict]:
            with client.stream("GET", CONFIGMAPS, params={"watch": "true", "resourceVersion": since,
                                                          "timeoutSeconds": "1"}) as response:
                return [json.loads(line) for line in response.iter_lines() if line]

        gone = watch(versions[0])  # c1..c4 were evicted
        assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in gone] == [("ERROR", 410, "Expired")]
        kept = watch(versions[4])  # c5..c9 are all still kept
        assert [e["object"]["metadata"]["name"] for e in kept] == [f"c{i}" for i in range(5, 10)]
