"""Run the real operator (kopf) in a background thread, for the embedded demo."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf


class OperatorThread:
    def __init__(self, namespaces: list[str]) -> None:
        import dpo_operator.handlers  # noqa: F401  (registers the handlers)

        self.namespaces = namespaces
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="dpo-operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(kopf.operator(standalone=True, namespaces=self.namespaces, clusterwide=not self.namespaces,
                                      stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as exc:  # noqa: BLE001  (reported by stop())
            self.error = exc

    def start(self, timeout: float = 60.0) -> "OperatorThread":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the operator did not start in {timeout}s: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> "OperatorThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
