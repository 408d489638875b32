"""A hostile HTTP server for security tests: it answers every request with an error whose body echoes the request
line and all its headers (an Authorization header included), padded to a large size."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EchoServer:
    def __init__(self, status: int = 400, padding: int = 5000) -> None:
        self.status = status
        self.padding = padding
        self.requests: list[dict[str, str]] = []
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = dict(self.headers.items())
                echo.requests.append({"method": self.command, "path": self.path, **headers})
                text = f"{self.command} {self.path} " + " ".join(f"{k}: {v}" for k, v in headers.items())
                body = json.dumps({"detail": text + " " + "x" * echo.padding}).encode()
                self.send_response(echo.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815  (http.server's handler names)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "EchoServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
