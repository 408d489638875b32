"""Run the emulated API server in a background thread and point kubeconfig-based clients at it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import kmock
import yaml

from dpo_operator.kubeemu.apiserver import EmulatedKubernetes


def write_kubeconfig(url: str, path: Path) -> Path:
    """A kubeconfig with one context that talks to ``url`` without credentials."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "embedded", "cluster": {"server": url}}],
        "users": [{"name": "embedded", "user": {"token": "embedded"}}],
        "contexts": [{"name": "embedded", "context": {"cluster": "embedded", "user": "embedded", "namespace": "default"}}],
        "current-context": "embedded",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class EmbeddedCluster:
    """An EmulatedKubernetes served over HTTP on 127.0.0.1 from its own event loop thread."""

    def __init__(self, port: int | None = None, log_root: Path | None = None) -> None:
        """``log_root``: where the local executor writes pod output (``<workdir>/pods``), served as pod logs."""
        self.port = port
        self.log_root = log_root
        self.server: EmulatedKubernetes | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-apiserver", daemon=True)
        self._stop: asyncio.Event | None = None
        self._served: concurrent.futures.Future[None] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="dpo-embedded-")
        self.kubeconfig = Path(self._tmp.name) / "kubeconfig"

    async def _serve(self, ready: concurrent.futures.Future[str]) -> None:
        self._stop = asyncio.Event()
        async with EmulatedKubernetes(log_root=self.log_root) as server, kmock.Server(server, port=self.port) as http:
            self.server = server
            ready.set_result(str(http.url).rstrip("/"))
            await self._stop.wait()

    def start(self) -> "EmbeddedCluster":
        self._thread.start()
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._served = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        self.url = ready.result(timeout=30)
        write_kubeconfig(self.url, self.kubeconfig)
        return self

    def use_as_default(self) -> None:
        """Make this cluster what the kubernetes client and kopf find through $KUBECONFIG."""
        os.environ["KUBECONFIG"] = str(self.kubeconfig)
        from kubernetes.config import kube_config

        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(self.kubeconfig)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._served is not None:
            try:
                self._served.result(timeout=15)
            except (concurrent.futures.TimeoutError, asyncio.CancelledError):
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._tmp.cleanup()

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
