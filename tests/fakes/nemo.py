"""An in-process emulator of the NeMo Microservices v1 APIs the operator uses, on one port, bound to NVIDIA's
``nemo-microservices`` SDK (1.5.0): every request body we send is validated against the SDK's request types and
every answer against its response models, in strict mode and without unknown fields. A violation answers 500
and is kept in ``violations``; leaving the ``with`` block raises if there was any.

- Entity Store: namespaces; datasets (409 when they exist, ``GET`` of one); model entities, which a completed
  customization job creates only when it was asked for an ``output_model`` (as the SDK documents), under that
  name as given (``GET /v1/models/{ns}/{name}`` finds it; no version is invented).
- Datastore: ``POST /v1/datastore/namespaces`` (409 when it exists) and the Hub API under ``/v1/hf`` (FakeHub),
  where a repo can only be created in an existing Datastore namespace. Both take the Datastore's (HF) token.
- Customizer: customization configs (``GET /v1/customization/configs/{ns}/{name}``, as the SDK's
  ``CustomizationConfig``; :data:`DEFAULT_CONFIG` is there from the start, others via :meth:`add_config`);
  ``POST /v1/customization/jobs`` (refuses a missing namespace, a config that does not exist or whose
  ``training_options`` do not offer the job's training/finetuning type pair, an unregistered dataset or one whose
  files are not in the Datastore, as the real service would refuse or fail such a job), ``GET`` of the paginated list
  (``filter[...]`` honoured; a page past the end is empty), of one job, of its status, and ``POST .../cancel``.
  The status answer's top-level ``train_loss``/``val_loss`` are the best checkpoint's; the live series is in
  ``metrics.metrics`` (see :func:`live`).
- Deployment Management: configs and model deployments (create, get, list, delete); each deployment walks
  through ``deployment_script``. Its NIM answers under the deployment's ``url``: ``/v1/health/ready`` once
  ready, and ``/v1/models`` lists the config's model and, with the Entity Store as PEFT source, the LoRA adapters
  of that base model (after ``peft_refresh_polls`` listings, as NIM_PEFT_REFRESH_INTERVAL delays them).

Each job walks through ``script`` (a list of status answers, one per status poll, the last one repeating);
failures are injected per route via ``fail`` as in FakeHub. All requests are recorded in ``calls``.
"""

from __future__ import annotations

import datetime
import itertools
import json
from typing import Any

from aiohttp import web
from nemo_microservices.types import CustomizationConfig, Dataset, DeploymentConfig, Model, Namespace
from nemo_microservices.types.customization import (
    CustomizationJob,
    CustomizationJobOutputsPage,
    CustomizationStatusDetails,
)
from nemo_microservices.types.customization.job_create_params import JobCreateParams
from nemo_microservices.types.customization.job_list_params import JobListParams
from nemo_microservices.types.dataset_create_params import DatasetCreateParams
from nemo_microservices.types.deployment import ModelDeployment, ModelDeploymentsPage
from nemo_microservices.types.deployment.config_create_params import ConfigCreateParams
from nemo_microservices.types.deployment.model_deployment_create_params import ModelDeploymentCreateParams
from nemo_microservices.types.namespace_create_params import NamespaceCreateParams
from pydantic import BaseModel, TypeAdapter, ValidationError

from tests.fakes.hub import FakeHub

TRAIN_FILE = "training/training_file.jsonl"


def timestamp() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat()


def live(train: list[float] = (), val: list[float] = (), every: int = 10,  # type: ignore[assignment]
         val_accuracy: list[float] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """The live metric series of a status answer: one point every ``every`` steps."""
    def series(values: list[float]) -> list[dict[str, Any]]:
        return [{"step": (i + 1) * every, "value": v, "timestamp": timestamp()} for i, v in enumerate(values)]
    metrics = {"train_loss": series(list(train)), "val_loss": series(list(val))}
    if val_accuracy:
        metrics["val_accuracy"] = series(list(val_accuracy))
    return {"metrics": {"keys": list(metrics), "metrics": metrics}}


DEFAULT_SCRIPT: list[dict[str, Any]] = [
    {"status": "pending", "percentage_done": None, "epochs_completed": None, "train_loss": None},
    {"status": "running", "percentage_done": 50.0, "epochs_completed": 0, "steps_completed": 5,
     **live(train=[0.69, 0.6])},
    {"status": "completed", "percentage_done": 100.0, "epochs_completed": 1, "steps_completed": 10, "best_epoch": 0,
     "train_loss": 0.4, "val_loss": 0.45, **live(train=[0.69, 0.6, 0.42], val=[0.5, 0.45])},
]


DEFAULT_CONFIG = "meta/llama-3.2-1b-instruct@v1.0.0+A100"
DEFAULT_OPTIONS = (("dpo", "lora"), ("dpo", "all_weights"), ("sft", "lora"))


class SdkViolation(AssertionError):
    pass


def _extras(value: Any, where: str = "") -> list[str]:
    """Fields no SDK model declares, anywhere in a validated model."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{where}.{key}" for key in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += _extras(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _extras(item, f"{where}.{key}")
    return found


def _dropped(sent: Any, kept: Any, where: str = "") -> list[str]:
    """Keys of a request that its TypedDict does not declare (pydantic drops them silently)."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        return [f"{where}.{k}" for k in sent if k not in kept] + \
            [p for k in sent if k in kept for p in _dropped(sent[k], kept[k], f"{where}.{k}")]
    return []


class FakeNemo(FakeHub):
    def __init__(self, api_key: str | None = None, hf_token: str | None = None) -> None:
        self.datastore_namespaces: set[str] = set()
        super().__init__(prefix="/v1/hf", token=hf_token, namespaces=self.datastore_namespaces)
        self.api_key = api_key
        self.entity_namespaces: set[str] = set()
        self.datasets: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}  # Entity Store model entities by "namespace/name"
        self.jobs: dict[str, dict[str, Any]] = {}     # CustomizationJob answers by id
        self.details: dict[str, dict[str, Any]] = {}  # CustomizationStatusDetails answers by job id
        self.script: list[dict[str, Any]] = list(DEFAULT_SCRIPT)
        self._scripts: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.configs: dict[str, dict[str, Any]] = {}  # deployment configs
        self.customization_configs: dict[str, dict[str, Any]] = {}  # CustomizationConfig answers by "ns/name"
        self.add_config(DEFAULT_CONFIG)
        self.deployments: dict[str, dict[str, Any]] = {}
        self.deployment_script: list[str] = ["pending", "ready"]  # status per GET, the last repeating
        self._deployment_scripts: dict[str, list[str]] = {}
        self.peft_refresh_polls = 0  # /v1/models listings before a new adapter shows up
        self.model_listings: dict[str, int] = {}
        self.violations: list[str] = []
        self.job_warnings: list[dict[str, str]] = []  # JobWarning entries every new job carries
        # routes whose success is answered with an HTML page (a proxy in the way), after doing the work
        self.garbled: set[str] = set()

    def add_config(self, config: str, options: tuple[tuple[str, str], ...] = DEFAULT_OPTIONS) -> None:
        """A customization config (``namespace/name@version``, no namespace: ``default``) offering ``options``,
        (training type, finetuning type) pairs."""
        namespace, name = config.split("/", 1) if "/" in config else ("default", config)
        self.customization_configs[f"{namespace}/{name}"] = {
            "name": name, "namespace": namespace, "max_seq_length": 4096, "created_at": timestamp(),
            "training_options": [{"training_type": t, "finetuning_type": f, "micro_batch_size": 1, "num_gpus": 1}
                                 for t, f in options]}

    def _config(self, config: str) -> dict[str, Any] | None:
        return self.customization_configs.get(config if "/" in config else f"default/{config}")

    @property
    def url(self) -> str:
        return self.root_url

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self.violations and exc[0] is None:
            raise SdkViolation("the NeMo fake was asked or answered what the SDK does not allow:\n"
                               + "\n".join(self.violations))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/namespaces", self._entity_namespace)
        app.router.add_post("/v1/datastore/namespaces", self._datastore_namespace)
        app.router.add_post("/v1/datasets", self._create_dataset)
        app.router.add_get("/v1/datasets/{ns}/{name}", self._get_dataset)
        app.router.add_get("/v1/models/{ns}/{name}", self._get_model)
        app.router.add_get("/v1/customization/configs/{ns}/{name}", self._get_customization_config)
        app.router.add_post("/v1/customization/jobs", self._create_job)
        app.router.add_get("/v1/customization/jobs", self._list_jobs)
        app.router.add_get("/v1/customization/jobs/{id}", self._get_job)
        app.router.add_get("/v1/customization/jobs/{id}/status", self._job_status)
        app.router.add_post("/v1/customization/jobs/{id}/cancel", self._cancel_job)
        app.router.add_post("/v1/deployment/configs", self._create_config)
        app.router.add_get("/v1/deployment/configs/{ns}/{name}", self._get_config)
        app.router.add_delete("/v1/deployment/configs/{ns}/{name}", self._delete_config)
        app.router.add_post("/v1/deployment/model-deployments", self._create_deployment)
        app.router.add_get("/v1/deployment/model-deployments", self._list_deployments)
        app.router.add_get("/v1/deployment/model-deployments/{ns}/{name}", self._get_deployment)
        app.router.add_delete("/v1/deployment/model-deployments/{ns}/{name}", self._delete_deployment)
        app.router.add_get("/nim/{ns}/{name}/v1/health/ready", self._nim_ready)
        app.router.add_get("/nim/{ns}/{name}/v1/models", self._nim_models)
        super().routes(app)

    # ------------------------------------------------------------------ SDK binding

    def _answer(self, model: type[BaseModel], payload: dict[str, Any], status: int = 200) -> web.Response:
        """Answer ``payload`` if it is what the SDK's ``model`` accepts strictly and completely."""
        text = json.dumps(payload)
        try:
            problems = [f"unknown field {f}" for f in _extras(model.model_validate_json(text, strict=True))]
        except ValidationError as exc:
            problems = [str(exc)]
        if problems:
            self.violations.append(f"answer as {model.__name__}: {'; '.join(problems)}")
            return web.json_response({"detail": f"fake answer violates the SDK: {problems}"}, status=500)
        return web.Response(text=text, status=status, content_type="application/json")

    async def _request(self, request: web.Request, params: type) -> dict[str, Any] | web.Response:
        """The JSON body, if the SDK's request type for it accepts it strictly and completely; else a 422."""
        body = await request.json()
        try:
            kept = TypeAdapter(params).validate_python(body, strict=True)
            problems = [f"unknown field {f}" for f in _dropped(body, kept)]
        except ValidationError as exc:
            problems = [str(exc)]
        if problems:
            self.violations.append(f"request as {params.__name__}: {'; '.join(problems)}")
            return web.json_response({"detail": problems}, status=422)
        return body

    def _guard(self, request: web.Request, route: str) -> web.Response | None:
        return self._refuse(request, route, self.api_key, {"detail": "Not authenticated"}, "detail")

    @staticmethod
    def _missing(what: str) -> web.Response:
        return web.json_response({"detail": f"{what} not found"}, status=404)

    # ------------------------------------------------------------------ Entity Store and Datastore namespaces

    async def _entity_namespace(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "entity-namespace")) is not None:
            return refused
        body = await self._request(request, NamespaceCreateParams)
        if isinstance(body, web.Response):
            return body
        namespace = body["id"]
        if namespace in self.entity_namespaces:
            return web.json_response({"detail": f"namespace {namespace} already exists"}, status=409)
        self.entity_namespaces.add(namespace)
        return self._answer(Namespace, {"id": namespace, "description": body.get("description"),
                                        "created_at": timestamp(), "updated_at": timestamp()}, 201)

    async def _datastore_namespace(self, request: web.Request) -> web.Response:
        if (refused := self._check(request, "datastore-namespace")) is not None:  # the Datastore's token
            return refused
        namespace = (await request.post())["namespace"]
        if namespace in self.datastore_namespaces:
            return web.json_response({"message": "namespace exists"}, status=409)
        self.datastore_namespaces.add(str(namespace))
        return web.json_response({"namespace": namespace}, status=201)

    # ------------------------------------------------------------------ datasets and models

    async def _create_dataset(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "dataset")) is not None:
            return refused
        body = await self._request(request, DatasetCreateParams)
        if isinstance(body, web.Response):
            return body
        if body.get("namespace") not in self.entity_namespaces:
            return self._missing(f"namespace {body.get('namespace')}")
        key = f"{body['namespace']}/{body['name']}"
        if key in self.datasets:
            return web.json_response({"detail": f"dataset {key} already exists"}, status=409)
        self.datasets[key] = {**body, "id": f"dataset-{next(self._ids)}", "created_at": timestamp(),
                              "updated_at": timestamp()}
        return self._answer(Dataset, self.datasets[key], 201)

    async def _get_dataset(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-dataset")) is not None:
            return refused
        dataset = self.datasets.get(f"{request.match_info['ns']}/{request.match_info['name']}")
        return self._missing("dataset") if dataset is None else self._answer(Dataset, dataset)

    async def _get_model(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-model")) is not None:
            return refused
        model = self.models.get(f"{request.match_info['ns']}/{request.match_info['name']}")
        return self._missing("model") if model is None else self._answer(Model, model)

    # ------------------------------------------------------------------ Customizer

    async def _get_customization_config(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-customization-config")) is not None:
            return refused
        config = self.customization_configs.get(f"{request.match_info['ns']}/{request.match_info['name']}")
        return self._missing("customization config") if config is None else self._answer(CustomizationConfig, config)

    async def _create_job(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "create-job")) is not None:
            return refused
        body = await self._request(request, JobCreateParams)
        if isinstance(body, web.Response):
            return body
        namespace = body.get("namespace") or "default"
        if namespace not in self.entity_namespaces:
            return self._missing(f"namespace {namespace}")
        config = self._config(str(body["config"]))
        if config is None:
            return self._missing(f"customization config {body['config']}")
        # training_type is optional in the SDK; the Customizer's default is sft
        pair = (body["hyperparameters"].get("training_type", "sft"), body["hyperparameters"].get("finetuning_type"))
        if pair not in [(o["training_type"], o["finetuning_type"]) for o in config["training_options"]]:
            return web.json_response({"detail": f"training option {pair} is not offered by config {body['config']}"},
                                     status=422)
        dataset = self.datasets.get(f"{body['dataset']['namespace']}/{body['dataset']['name']}")
        if dataset is None:
            return self._missing("dataset")
        repo, _, revision = dataset["files_url"].removeprefix("hf://datasets/").partition("@")
        if TRAIN_FILE not in (self.files("dataset", repo, revision or "main") or {}):
            return web.json_response({"detail": f"{dataset['files_url']} has no {TRAIN_FILE}"}, status=422)
        job_id = f"cust-{next(self._ids):06d}"
        output = body.get("output_model")
        if output is not None:
            if "/" not in output or output.split("/", 1)[0] not in self.entity_namespaces:
                return web.json_response({"detail": f"output_model {output}: namespace not found"}, status=422)
        job = {"id": job_id, "namespace": namespace, "status": "created", "created_at": timestamp(),
               "updated_at": timestamp(), "config": body["config"], "dataset": body["dataset"],
               "hyperparameters": body["hyperparameters"], "description": body.get("description"),
               "output_model": output, **({"warnings": list(self.job_warnings)} if self.job_warnings else {})}
        self.jobs[job_id] = job
        self.details[job_id] = {"status": "created", "created_at": job["created_at"], "updated_at": timestamp(),
                                "status_logs": [{"updated_at": timestamp(), "message": "created"}]}
        self._scripts[job_id] = [dict(step) for step in self.script]
        if "create-job" in self.garbled:
            return web.Response(text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        return self._answer(CustomizationJob, job)

    def _matches(self, job: dict[str, Any], filters: dict[str, str]) -> bool:
        values = {"namespace": job.get("namespace"), "status": job.get("status"),
                  "dataset": self.datasets.get(f"{job['dataset']['namespace']}/{job['dataset']['name']}", {})
                  .get("files_url"),
                  "finetuning_type": job["hyperparameters"].get("finetuning_type"),
                  "training_type": job["hyperparameters"].get("training_type"),
                  "base_model": str(job["config"]).split("@", 1)[0]}
        return all(values[key] == value for key, value in filters.items())

    @staticmethod
    def _page(request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        page, size = int(request.query.get("page", 1)), int(request.query.get("page_size", 10))
        data = items[(page - 1) * size: page * size]
        return {"object": "list", "data": data,
                "pagination": {"page": page, "page_size": size, "current_page_size": len(data),
                               "total_pages": max(1, -(-len(items) // size)), "total_results": len(items)}}

    def _query(self, request: web.Request, params: type) -> dict[str, Any] | web.Response:
        """Query parameters (``filter[key]=value`` nested, as the SDK encodes them) the SDK's type accepts."""
        query: dict[str, Any] = {}
        for key, value in request.query.items():
            outer, _, inner = key.partition("[")
            if inner:
                query.setdefault(outer, {})[inner.rstrip("]")] = value
            else:
                query[key] = value
        try:
            kept = TypeAdapter(params).validate_python(query)  # lax: query values arrive as strings
            problems = [f"unknown parameter {f}" for f in _dropped(query, kept)]
        except ValidationError as exc:
            problems = [str(exc)]
        if problems:
            self.violations.append(f"query as {params.__name__}: {'; '.join(problems)}")
            return web.json_response({"detail": problems}, status=422)
        return query

    async def _list_jobs(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "list-jobs")) is not None:
            return refused
        query = self._query(request, JobListParams)
        if isinstance(query, web.Response):
            return query
        filters = {k: v for k, v in query.get("filter", {}).items() if k in
                   ("namespace", "status", "dataset", "finetuning_type", "training_type", "base_model")}
        if set(query.get("filter", {})) - set(filters):
            return web.json_response({"detail": "filter not emulated"}, status=501)
        jobs = [job for job in self.jobs.values() if self._matches(job, filters)]
        return self._answer(CustomizationJobOutputsPage, self._page(request, jobs))

    async def _get_job(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-job")) is not None:
            return refused
        job = self.jobs.get(request.match_info["id"])
        return self._missing("job") if job is None else self._answer(CustomizationJob, job)

    def _advance(self, job_id: str) -> None:
        job, details = self.jobs[job_id], self.details[job_id]
        if job["status"] in ("cancelled", "completed", "failed"):
            return
        script = self._scripts[job_id]
        step = dict(script.pop(0) if len(script) > 1 else script[0])
        logs = [{"updated_at": timestamp(), **entry} for entry in step.pop("status_logs", [])]
        details.update(step, updated_at=timestamp())
        details["status_logs"] = details.get("status_logs", []) + logs
        job.update(status=details["status"], updated_at=details["updated_at"])
        if job["status"] == "completed" and job.get("output_model"):
            self._create_model_entity(job)

    def _create_model_entity(self, job: dict[str, Any]) -> None:
        """What the Customizer writes to the Entity Store for a job's output model (only when one was asked)."""
        namespace, name = job["output_model"].split("/", 1)
        hp = job["hyperparameters"]
        entity: dict[str, Any] = {"namespace": namespace, "name": name, "base_model": str(job["config"]).split("@")[0],
                                  "created_at": timestamp(), "updated_at": timestamp()}
        if hp.get("finetuning_type") == "lora":
            entity["peft"] = {"finetuning_type": "lora"}
        self.models[job["output_model"]] = entity

    async def _job_status(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "job-status")) is not None:
            return refused
        job_id = request.match_info["id"]
        if job_id not in self.jobs:
            return self._missing("job")
        self._advance(job_id)
        return self._answer(CustomizationStatusDetails, self.details[job_id])

    async def _cancel_job(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "cancel-job")) is not None:
            return refused
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self._missing("job")
        if job["status"] in ("completed", "failed", "cancelled"):
            return web.json_response({"detail": f"job is {job['status']}"}, status=409)
        job.update(status="cancelled", updated_at=timestamp())
        self.details[job["id"]].update(status="cancelled", updated_at=job["updated_at"])
        return self._answer(CustomizationJob, job)

    # ------------------------------------------------------------------ Deployment Management

    def add_deployment(self, namespace: str, name: str, model: str, status: str = "ready",
                       description: str = "deployed by hand") -> None:
        """A model deployment someone else made (e.g. a base-model NIM), already in ``status``."""
        key = f"{namespace}/{name}"
        self.configs[key] = {"name": name, "namespace": namespace, "model": model,
                             "nim_deployment": {"image_name": "nvcr.io/nim/x", "image_tag": "1", "gpu": 1}}
        self.deployments[key] = {"name": name, "namespace": namespace, "config": key, "description": description,
                                 "url": f"{self.url}/nim/{key}", "status_details": {"status": status},
                                 "created_at": timestamp()}
        self._deployment_scripts[key] = [status]

    async def _create_config(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "create-config")) is not None:
            return refused
        body = await self._request(request, ConfigCreateParams)
        if isinstance(body, web.Response):
            return body
        key = f"{body['namespace']}/{body['name']}"
        if key in self.configs:
            return web.json_response({"detail": f"config {key} already exists"}, status=409)
        self.configs[key] = {**body, "created_at": timestamp()}
        return self._answer(DeploymentConfig, self.configs[key], 201)

    async def _get_config(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-config")) is not None:
            return refused
        config = self.configs.get(f"{request.match_info['ns']}/{request.match_info['name']}")
        return self._missing("config") if config is None else self._answer(DeploymentConfig, config)

    async def _delete_config(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "delete-config")) is not None:
            return refused
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        if self.configs.pop(key, None) is None:
            return self._missing("config")
        return web.json_response({"message": "deleted"})

    async def _create_deployment(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "create-deployment")) is not None:
            return refused
        body = await self._request(request, ModelDeploymentCreateParams)
        if isinstance(body, web.Response):
            return body
        key = f"{body['namespace']}/{body['name']}"
        if body["config"] not in self.configs:
            return self._missing(f"config {body['config']}")
        if key in self.deployments:
            return web.json_response({"detail": f"deployment {key} already exists"}, status=409)
        self.deployments[key] = {**body, "url": f"{self.url}/nim/{key}", "status_details": {"status": "created"},
                                 "created_at": timestamp()}
        self._deployment_scripts[key] = list(self.deployment_script)
        return self._answer(ModelDeployment, self.deployments[key], 201)

    async def _list_deployments(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "list-deployments")) is not None:
            return refused
        namespace = request.query.get("filter[namespace]")
        items = [d for d in self.deployments.values() if namespace is None or d["namespace"] == namespace]
        return self._answer(ModelDeploymentsPage, self._page(request, items))

    async def _get_deployment(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "get-deployment")) is not None:
            return refused
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        deployment = self.deployments.get(key)
        if deployment is None:
            return self._missing("deployment")
        script = self._deployment_scripts[key]
        deployment["status_details"] = {"status": script.pop(0) if len(script) > 1 else script[0],
                                        "description": "scripted"}
        return self._answer(ModelDeployment, deployment)

    async def _delete_deployment(self, request: web.Request) -> web.Response:
        if (refused := self._guard(request, "delete-deployment")) is not None:
            return refused
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        if self.deployments.pop(key, None) is None:
            return self._missing("deployment")
        return web.json_response({"message": "deleted"})

    # ------------------------------------------------------------------ the NIM behind a deployment

    async def _nim_ready(self, request: web.Request) -> web.Response:
        deployment = self.deployments.get(f"{request.match_info['ns']}/{request.match_info['name']}")
        if deployment is None or deployment["status_details"]["status"] != "ready":
            return web.json_response({"object": "health.response", "message": "Service is not ready."}, status=503)
        return web.json_response({"object": "health.response", "message": "Service is ready."})

    async def _nim_models(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['ns']}/{request.match_info['name']}"
        deployment = self.deployments.get(key)
        if deployment is None:
            return self._missing("deployment")
        base = self.configs.get(deployment["config"], {}).get("model")
        listed = [{"id": base, "object": "model", "owned_by": "system"}]
        self.model_listings[key] = self.model_listings.get(key, 0) + 1
        if self.model_listings[key] > self.peft_refresh_polls:  # NIM_PEFT_SOURCE = the Entity Store
            listed += [{"id": name, "object": "model", "owned_by": "system", "parent": base}
                       for name, entity in self.models.items() if entity.get("peft") and entity["base_model"] == base]
        return web.json_response({"object": "list", "data": listed})
