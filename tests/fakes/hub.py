"""An in-process emulator of a Hugging Face Hub-compatible API (what NeMo Datastore serves under /v1/hf).

Enough of the protocol for huggingface_hub's HfApi: repo creation (409 with a url when it exists),
pre-upload, and NDJSON commits with base64 file contents. Failures can be injected per route.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from typing import Any

from aiohttp import web

from dpo_operator.embedded.http_thread import AppThread


class FakeHub(AppThread):
    def __init__(self, prefix: str = "/v1/hf", token: str | None = None) -> None:
        super().__init__()
        self.prefix = prefix
        self.token = token
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.fail: dict[str, list[int]] = defaultdict(list)  # route name -> statuses to answer first
        self.calls: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return self.root_url + self.prefix

    def routes(self, app: web.Application) -> None:
        p = self.prefix
        app.router.add_post(p + "/api/repos/create", self._create)
        app.router.add_post(p + "/api/{type}s/{ns}/{name}/preupload/{rev}", self._preupload)
        app.router.add_post(p + "/api/{type}s/{ns}/{name}/commit/{rev}", self._commit)
        app.router.add_get(p + "/datasets/{ns}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_route("*", p + "/{tail:.*}", self._unknown)

    def _check(self, request: web.Request, route: str) -> web.Response | None:
        return self._refuse(request, route, self.token, {"error": "Invalid credentials"}, "error")

    def _refuse(self, request: web.Request, route: str, credential: str | None, unauthorized: dict[str, str],
                message_key: str) -> web.Response | None:
        """Record the call; answer 401 without the expected bearer credential, or the next injected failure."""
        self.calls.append((route, request.path))
        if credential is not None and request.headers.get("Authorization") != f"Bearer {credential}":
            return web.json_response(unauthorized, status=401)
        if self.fail[route]:
            return web.json_response({message_key: "injected failure"}, status=self.fail[route].pop(0))
        return None

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "create")) is not None:
            return refused
        body = await request.json()
        repo_id = f"{body.get('organization') or body.get('namespace')}/{body['name']}" if "/" not in body["name"] else body["name"]
        url = f"{self.endpoint}/datasets/{repo_id}"
        if repo_id in self.repos:
            return web.json_response({"error": "You already created this dataset repo", "url": url}, status=409)
        self.repos[repo_id] = {}
        return web.json_response({"url": url, "name": repo_id})

    async def _preupload(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "preupload")) is not None:
            return refused
        body = await request.json()
        return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                            for f in body.get("files", [])]})

    async def _commit(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "commit")) is not None:
            return refused
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        if repo_id not in self.repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        staged: dict[str, bytes] = {}
        header: dict[str, Any] = {}
        for line in (await request.text()).splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                staged[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        self.repos[repo_id].update(staged)  # all files of a commit land together
        self.commits[repo_id].append({"summary": header.get("summary"), "files": sorted(staged)})
        oid = f"{len(self.commits[repo_id]):040x}"
        return web.json_response({"commitUrl": f"{self.endpoint}/datasets/{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})

    async def _resolve(self, request: web.Request) -> web.Response:
        """File download (GET, and HEAD for metadata) with the headers huggingface_hub requires."""
        if (refused := self._check(request, "resolve")) is not None:
            return refused
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        content = self.repos.get(repo_id, {}).get(request.match_info["path"])
        if content is None:
            return web.json_response({"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"})
        commit = f"{len(self.commits[repo_id]):040x}"
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        return web.Response(body=content, headers={"ETag": etag, "X-Repo-Commit": commit,
                                                    "Content-Type": "application/octet-stream"})

    async def _unknown(self, request: web.Request) -> web.Response:
        self.calls.append(("unknown", f"{request.method} {request.path}"))
        return web.json_response({"error": f"not emulated: {request.method} {request.path}"}, status=404)
