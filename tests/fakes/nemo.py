"""An in-process emulator of the NeMo Microservices v1 APIs the operator uses, on one port.

- Entity Store: ``POST /v1/namespaces`` and ``POST /v1/datasets`` (409 when they exist).
- Datastore: ``POST /v1/datastore/namespaces`` (409 when it exists) and the Hub API under ``/v1/hf`` (FakeHub).
- Deployment Management: configs and model deployments (create, get, delete); each deployment walks
  through ``deployment_script``.
- Customizer: ``POST /v1/customization/jobs`` (refuses a dataset that is not registered or whose files are not in
  the Datastore, as the real service would fail such a job), paginated ``GET /v1/customization/jobs``,
  ``GET .../{id}/status`` and ``POST .../{id}/cancel``.

Each job walks through ``script`` (a list of status answers, one per poll, the last one repeating); failures
are injected per route via ``fail`` as in FakeHub. All requests are recorded in ``calls``.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tests.fakes.hub import FakeHub

TRAIN_FILE = "training/training_file.jsonl"
DEFAULT_SCRIPT: list[dict[str, Any]] = [
    {"status": "pending", "percentage_done": None, "epochs_completed": None, "train_loss": None},
    {"status": "running", "percentage_done": 50.0, "epochs_completed": 0, "steps_completed": 5, "train_loss": 0.6},
    {"status": "completed", "percentage_done": 100.0, "epochs_completed": 1, "steps_completed": 10,
     "train_loss": 0.4, "val_loss": 0.45},
]


class FakeNemo(FakeHub):
    def __init__(self, api_key: str | None = None, hf_token: str | None = None) -> None:
        super().__init__(prefix="/v1/hf", token=hf_token)
        self.api_key = api_key
        self.entity_namespaces: set[str] = set()
        self.datastore_namespaces: set[str] = set()
        self.datasets: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.script: list[dict[str, Any]] = list(DEFAULT_SCRIPT)
        self._scripts: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.configs: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.deployment_script: list[str] = ["pending", "ready"]  # status per GET, the last repeating
        self._deployment_scripts: dict[str, list[str]] = {}

    @property
    def url(self) -> str:
        return self.root_url

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/namespaces", self._entity_namespace)
        app.router.add_post("/v1/datastore/namespaces", self._datastore_namespace)
        app.router.add_post("/v1/datasets", self._dataset)
        app.router.add_post("/v1/customization/jobs", self._create_job)
        app.router.add_get("/v1/customization/jobs", self._list_jobs)
        app.router.add_get("/v1/customization/jobs/{id}/status", self._job_status)
        app.router.add_post("/v1/customization/jobs/{id}/cancel", self._cancel_job)
        app.router.add_post("/v1/deployment/configs", self._create_config)
        app.router.add_delete("/v1/deployment/configs/{ns}/{name}", self._delete_config)
        app.router.add_post("/v1/deployment/model-deployments", self._create_deployment)
        app.router.add_get("/v1/deployment/model-deployments/{ns}/{name}", self._get_deployment)
        app.router.add_delete("/v1/deployment/model-deployments/{ns}/{name}", self._delete_deployment)
        super().routes(app)

    def _guard(self, request: web.Request, route: str) -> web.Response | None:
        return self._refuse(request, route, self.api_key, {"detail": "Not authenticated"}, "detail")

    async def _entity_namespace(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "entity-namespace")) is not None:
            return refused
        namespace = (await request.json())["id"]
        if namespace in self.entity_namespaces:
            return web.json_response({"detail": f"namespace {namespace} already exists"}, status=409)
        self.entity_namespaces.add(namespace)
        return web.json_response({"id": namespace}, status=201)

    async def _datastore_namespace(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "datastore-namespace")) is not None:
            return refused
        namespace = (await request.post())["namespace"]
        if namespace in self.datastore_namespaces:
            return web.json_response({"message": "namespace exists"}, status=409)
        self.datastore_namespaces.add(namespace)
        return web.json_response({"namespace": namespace}, status=201)

    async def _dataset(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "dataset")) is not None:
            return refused
        body = await request.json()
        if body["namespace"] not in self.entity_namespaces:
            return web.json_response({"detail": f"namespace {body['namespace']} not found"}, status=404)
        key = f"{body['namespace']}/{body['name']}"
        if key in self.datasets:
            return web.json_response({"detail": f"dataset {key} already exists"}, status=409)
        self.datasets[key] = body
        return web.json_response(body, status=201)

    async def _create_job(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "create-job")) is not None:
            return refused
        body = await request.json()
        dataset = self.datasets.get(f"{body['dataset']['namespace']}/{body['dataset']['name']}")
        if dataset is None:
            return web.json_response({"detail": "dataset not found"}, status=404)
        repo = dataset["files_url"].removeprefix("hf://datasets/")
        if TRAIN_FILE not in self.repos.get(repo, {}):
            return web.json_response({"detail": f"{dataset['files_url']} has no {TRAIN_FILE}"}, status=422)
        job_id = f"cust-{next(self._ids):06d}"
        job = {"id": job_id, "status": "created", "config": body["config"], "dataset": body["dataset"],
               "hyperparameters": body["hyperparameters"], "description": body.get("description"),
               "output_model": body.get("output_model") or f"{body['dataset']['namespace']}/dpo-model@{job_id}"}
        self.jobs[job_id] = job
        self._scripts[job_id] = [dict(step) for step in self.script]
        return web.json_response(job)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "list-jobs")) is not None:
            return refused
        page, size = int(request.query.get("page", 1)), int(request.query.get("page_size", 10))
        jobs = list(self.jobs.values())
        pages = max(1, -(-len(jobs) // size))
        return web.json_response({"object": "list", "data": jobs[(page - 1) * size: page * size],
                                  "pagination": {"page": page, "page_size": size, "total_pages": pages,
                                                 "total_results": len(jobs)}})

    async def _job_status(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "job-status")) is not None:
            return refused
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"detail": "job not found"}, status=404)
        if job["status"] not in ("cancelled",):
            script = self._scripts[job["id"]]
            step = script.pop(0) if len(script) > 1 else script[0]
            job.update(step)
        return web.json_response({k: v for k, v in job.items() if k not in ("config", "dataset", "hyperparameters")})

    async def _cancel_job(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "cancel-job")) is not None:
            return refused
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"detail": "job not found"}, status=404)
        if job["status"] in ("completed", "failed", "cancelled"):
            return web.json_response({"detail": f"job is {job['status']}"}, status=409)
        job["status"] = "cancelled"
        return web.json_response(job)

    # ------------------------------------------------------------------ Deployment Management

    async def _create_config(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "create-config")) is not None:
            return refused
        body = await request.json()
        key = f"{body['namespace']}/{body['name']}"
        if key in self.configs:
            return web.json_response({"detail": f"config {key} already exists"}, status=409)
        self.configs[key] = body
        return web.json_response(body, status=201)

    async def _delete_config(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "delete-config")) is not None:
            return refused
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        if self.configs.pop(key, None) is None:
            return web.json_response({"detail": "not found"}, status=404)
        return web.json_response({"message": "deleted"})

    async def _create_deployment(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "create-deployment")) is not None:
            return refused
        body = await request.json()
        key = f"{body['namespace']}/{body['name']}"
        if body["config"] not in self.configs:
            return web.json_response({"detail": f"config {body['config']} not found"}, status=404)
        if key in self.deployments:
            return web.json_response({"detail": f"deployment {key} already exists"}, status=409)
        self.deployments[key] = {**body, "url": f"{self.url}/nim/{key}", "status_details": {"status": "created"}}
        self._deployment_scripts[key] = list(self.deployment_script)
        return web.json_response(self.deployments[key], status=201)

    async def _get_deployment(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-deployment")) is not None:
            return refused
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        deployment = self.deployments.get(key)
        if deployment is None:
            return web.json_response({"detail": "not found"}, status=404)
        script = self._deployment_scripts[key]
        deployment["status_details"] = {"status": script.pop(0) if len(script) > 1 else script[0],
                                        "description": "scripted"}
        return web.json_response(deployment)

    async def _delete_deployment(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "delete-deployment")) is not None:
            return refused
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        if self.deployments.pop(key, None) is None:
            return web.json_response({"detail": "not found"}, status=404)
        return web.json_response({"message": "deleted"})
