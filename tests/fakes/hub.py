"""An in-process emulator of a Hugging Face Hub-compatible API (what NeMo Datastore serves under /v1/hf).

Enough of the protocol for huggingface_hub's HfApi, as strict as the Hub where we rely on it:
- repo creation (409 with a url when it exists; ``namespaces``, when given, must hold the repo's namespace, as
  NeMo Datastore requires), for the repo type in the request (``model`` when absent, as on the Hub);
- pre-upload answers ``lfs`` for large (>= 10 MB) or binary files, ``regular`` otherwise; the LFS batch endpoint
  hands out upload and verify URLs, and an ``lfsFile`` in a commit must name an uploaded object. There is no Xet
  (NeMo Datastore has none): a client that tries it gets a 404;
- NDJSON commits apply additions and deletions (files and folders) to the named revision, atomically;
- downloads honour repo type and revision; a missing repo answers ``RepoNotFound``, a missing revision
  ``RevisionNotFound``, a missing file ``EntryNotFound`` (the X-Error-Code huggingface_hub maps to its errors).
Failures can be injected per route.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from typing import Any

from aiohttp import web

from dpo_operator.embedded.http_thread import AppThread

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's: files of 10 MB and more go by LFS
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def is_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(sample) - 4  # a multi-byte character cut at the end of the sample is still text
    return False


class FakeHub(AppThread):
    def __init__(self, prefix: str = "/v1/hf", token: str | None = None, namespaces: set[str] | None = None) -> None:
        super().__init__()
        self.prefix = prefix
        self.token = token
        self.namespaces = namespaces  # None: any namespace (the Hub); a set: only these (NeMo Datastore)
        self.repos: dict[str, dict[str, bytes]] = {}  # dataset repos, branch main: repo id -> path -> content
        self.other: dict[tuple[str, str, str], dict[str, bytes]] = {}  # (type, repo id, revision) -> files
        self.commits: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.fail: dict[str, list[int]] = defaultdict(list)  # route name -> statuses to answer first
        self.calls: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return self.root_url + self.prefix

    def routes(self, app: web.Application) -> None:
        p = self.prefix
        app.router.add_post(p + "/api/repos/create", self._create)
        app.router.add_post(p + "/api/{type}/{ns}/{name}/preupload/{rev}", self._preupload)
        app.router.add_post(p + "/api/{type}/{ns}/{name}/commit/{rev}", self._commit)
        app.router.add_post(p + "/{ns}/{name}.git/info/lfs/objects/batch", self._lfs_batch)
        app.router.add_post(p + "/{type}/{ns}/{name}.git/info/lfs/objects/batch", self._lfs_batch)
        app.router.add_put(p + "/lfs-storage/{oid}", self._lfs_put)
        app.router.add_post(p + "/lfs-verify/{oid}", self._lfs_verify)
        app.router.add_get(p + "/{type}/{ns}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_get(p + "/{ns}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_route("*", p + "/{tail:.*}", self._unknown)

    # ------------------------------------------------------------------ repos

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes] | None:
        """A revision's files (the live dict), or None when the repo or revision does not exist."""
        if repo_type == "dataset" and revision == "main":
            return self.repos.get(repo_id)
        return self.other.get((repo_type, repo_id, revision))

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (repo_type == "dataset" and repo_id in self.repos) or \
            any(t == repo_type and r == repo_id for t, r, _ in self.other)

    def _new_repo(self, repo_type: str, repo_id: str) -> None:
        if repo_type == "dataset":
            self.repos[repo_id] = {}
        else:
            self.other[(repo_type, repo_id, "main")] = {}

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

    @staticmethod
    def _not_found(code: str, message: str) -> web.Response:
        return web.json_response({"error": message}, status=404, headers={"X-Error-Code": code})

    def _locate(self, request: web.Request, default_type: str = "model") -> tuple[str, str, str, web.Response | None]:
        """(repo type, repo id, revision) of a request, or the RepoNotFound / RevisionNotFound answer."""
        kind = request.match_info.get("type")
        repo_type = TYPES.get(kind, "") if kind is not None else default_type
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        revision = request.match_info.get("rev", "main")
        if not repo_type or not self.exists(repo_type, repo_id):
            return repo_type, repo_id, revision, self._not_found("RepoNotFound", f"Repository {repo_id} not found")
        if self.files(repo_type, repo_id, revision) is None:
            return repo_type, repo_id, revision, self._not_found("RevisionNotFound", f"Invalid rev id: {revision}")
        return repo_type, repo_id, revision, None

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "create")) is not None:
            return refused
        body = await request.json()
        repo_type = body.get("type") or "model"
        if repo_type not in TYPES.values():
            return web.json_response({"error": f"Invalid repo type {repo_type}"}, status=400)
        owner = body.get("organization") or body.get("namespace")
        repo_id = body["name"] if "/" in body["name"] else f"{owner}/{body['name']}"
        if self.namespaces is not None and repo_id.split("/", 1)[0] not in self.namespaces:
            return web.json_response({"error": f"namespace {repo_id.split('/', 1)[0]} does not exist"}, status=404)
        url = f"{self.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        if self.exists(repo_type, repo_id):
            return web.json_response({"error": "You already created this repo", "url": url}, status=409)
        self._new_repo(repo_type, repo_id)
        return web.json_response({"url": url, "name": repo_id})

    # ------------------------------------------------------------------ uploads

    async def _preupload(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "preupload")) is not None:
            return refused
        *_, missing = self._locate(request)
        if missing is not None:
            return missing
        body = await request.json()
        answer = []
        for item in body.get("files", []):
            lfs = item["size"] >= LFS_THRESHOLD or is_binary(base64.b64decode(item.get("sample", "")))
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return web.json_response({"files": answer})

    async def _lfs_batch(self, request: web.Request) -> web.Response:
        """The Git LFS batch API: an upload (and verify) action per object not stored yet."""
        if (refused := self._check(request, "lfs-batch")) is not None:
            return refused
        *_, missing = self._locate(request)
        if missing is not None:
            return missing
        body = await request.json()
        if body.get("operation") != "upload" or body.get("hash_algo", "sha256") != "sha256":
            return web.json_response({"message": "only sha256 uploads are supported"}, status=422)
        objects = []
        for item in body["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-storage/{item['oid']}"},
                                    "verify": {"href": f"{self.endpoint}/lfs-verify/{item['oid']}"}}
            objects.append(entry)
        return web.json_response({"transfer": "basic", "objects": objects},
                                 content_type="application/vnd.git-lfs+json")

    async def _lfs_put(self, request: web.Request) -> web.Response:
        self.calls.append(("lfs-upload", request.path))
        content = await request.read()
        oid = request.match_info["oid"]
        if hashlib.sha256(content).hexdigest() != oid:
            return web.json_response({"error": "content does not match its oid"}, status=400)
        self.lfs_objects[oid] = content
        return web.Response(status=200)

    async def _lfs_verify(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "lfs-verify")) is not None:
            return refused
        body = await request.json()
        stored = self.lfs_objects.get(request.match_info["oid"])
        if stored is None or len(stored) != body.get("size"):
            return web.json_response({"error": "object not uploaded"}, status=422)
        return web.json_response({"message": "verified"})

    async def _commit(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "commit")) is not None:
            return refused
        repo_type, repo_id, revision, missing = self._locate(request)
        if missing is not None:
            return missing
        files = self.files(repo_type, repo_id, revision)
        assert files is not None
        staged = dict(files)
        header: dict[str, Any] = {}
        for line in (await request.text()).splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256" or value["oid"] not in self.lfs_objects:
                    return web.json_response({"error": f"LFS object {value['oid']} was not uploaded"}, status=422)
                staged[value["path"]] = self.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                if staged.pop(value["path"], None) is None:
                    return web.json_response({"error": f"file {value['path']} does not exist"}, status=404)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                staged = {path: content for path, content in staged.items() if not path.startswith(folder)}
            else:
                return web.json_response({"error": f"unknown commit operation {key}"}, status=400)
        files.clear()
        files.update(staged)  # all operations of a commit land together
        self.commits[repo_id].append({"summary": header.get("summary"), "files": sorted(staged),
                                      "revision": revision, "type": repo_type})
        oid = f"{len(self.commits[repo_id]):040x}"
        return web.json_response({"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})

    # ------------------------------------------------------------------ downloads

    async def _resolve(self, request: web.Request) -> web.Response:
        """File download (GET, and HEAD for metadata) with the headers huggingface_hub requires."""
        if (refused := self._check(request, "resolve")) is not None:
            return refused
        repo_type, repo_id, revision, missing = self._locate(request)
        if missing is not None:
            return missing
        content = (self.files(repo_type, repo_id, revision) or {}).get(request.match_info["path"])
        if content is None:
            return self._not_found("EntryNotFound", "Entry not found")
        commit = f"{len(self.commits[repo_id]):040x}"
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        return web.Response(body=content, headers={"ETag": etag, "X-Repo-Commit": commit,
                                                    "Content-Type": "application/octet-stream"})

    async def _unknown(self, request: web.Request) -> web.Response:
        self.calls.append(("unknown", f"{request.method} {request.path}"))
        return web.json_response({"error": f"not emulated: {request.method} {request.path}"}, status=404)
