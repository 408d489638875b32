"""The NeMo platform fake's files, customization (``rl`` backend) and Jobs routes: what a DPO training run uses.

- Files: filesets (create: 409 when it exists; get), a fileset's file listing, file upload (``PUT .../-/{path}``)
  and download.
- Customization: ``GET /apis/customization/v2/healthz``; ``POST .../{backend}/jobs`` (the body and its ``spec``
  validated against NVIDIA's models by the core; then, as the platform's transform does, the model entity must
  exist and the dataset fileset must hold ``training.jsonl`` and ``validation.jsonl``; a taken name is a 409), and
  ``GET .../{backend}/jobs/{name}``. The stored spec is the canonical one (``output`` resolved to
  ``{name, type: model, fileset}``).
- Jobs: ``GET .../jobs/{name}``, ``.../status`` (each job walks through ``script``, one entry per status poll, the
  last repeating; a ``completed`` entry registers the output model entity and its fileset, as the job's last step
  does), ``.../logs`` and ``POST .../cancel`` (409 once the job is terminal).
"""

from __future__ import annotations

from typing import Any

from tests.fakes.platform import Answer, Call, FakePlatformCore, error, route, timestamp

FILES = "/apis/files/v2/workspaces/{workspace}/filesets"
CUSTOMIZATION = "/apis/customization/v2/workspaces/{workspace}/{backend}/jobs"
JOBS = "/apis/jobs/v2/workspaces/{workspace}/jobs/{name}"
TERMINAL = {"completed", "error", "cancelled"}
DPO_FILES = ("training.jsonl", "validation.jsonl")


def progress(step: int, epoch: int, percentage: float, train: list[float] = (),  # type: ignore[assignment]
             val: list[float] = (), val_accuracy: list[float] = (),  # type: ignore[assignment]
             every: int = 10) -> dict[str, Any]:
    """A training task's ``status_details`` as NVIDIA's TrainingProgressCallback reports them: phase, step,
    epoch, percentage, the latest value of each metric and its series under ``metrics``."""
    def series(values: list[float]) -> list[dict[str, Any]]:
        return [{"step": (i + 1) * every, "epoch": epoch, "value": v} for i, v in enumerate(values)]
    metrics = {"train_loss": series(list(train)), "val_loss": series(list(val))}
    if val_accuracy:
        metrics["val_accuracy"] = series(list(val_accuracy))
    latest = {name: points[-1]["value"] for name, points in metrics.items() if points}
    return {"phase": "training", "backend": "nemo_rl", "step": step, "epoch": epoch, "percentage_done": percentage,
            **latest, "metrics": metrics}


DEFAULT_SCRIPT: list[dict[str, Any]] = [
    {"status": "pending", "status_details": {}},
    {"status": "active", "status_details": progress(5, 0, 50, train=[0.69, 0.6])},
    {"status": "completed", "status_details": {**progress(10, 1, 100, train=[0.69, 0.6, 0.42], val=[0.5, 0.45]),
                                               "phase": "completed", "message": "Training completed"}},
]


class TrainingPlatform(FakePlatformCore):
    """Files, customization and Jobs routes (compose with other route mixins by subclassing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}  # PlatformJobResponse records by (workspace, name)
        self.script: list[dict[str, Any]] = list(DEFAULT_SCRIPT)
        self.scripts: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.logs: list[str] = ["loading model", "training"]  # every job's log lines

    # ------------------------------------------------------------------ files

    @staticmethod
    def _fileset_answer(record: dict[str, Any]) -> dict[str, Any]:
        return dict(record)

    @route("POST", FILES, "create-fileset")
    async def create_fileset(self, call: Call) -> Answer:
        assert call.workspace is not None
        key = (call.workspace, call.body["name"])
        if key in self.filesets:
            return error(409, f"Fileset '{call.workspace}/{call.body['name']}' already exists")
        self.filesets[key] = {
            "id": self.new_id("fileset"), "name": call.body["name"], "workspace": call.workspace,
            "description": call.body.get("description", ""), "purpose": call.body.get("purpose", "generic"),
            "storage": {"type": "local", "path": f"/data/{call.workspace}/{call.body['name']}"},
            "metadata": call.body.get("metadata", {}), "custom_fields": call.body.get("custom_fields", {}),
            "project": call.body.get("project", ""), "created_at": timestamp(), "updated_at": timestamp()}
        self.files[key] = {}
        return Answer(200, self._fileset_answer(self.filesets[key]))

    @route("GET", FILES + "/{name}", "get-fileset")
    async def get_fileset(self, call: Call) -> Answer:
        record = self.filesets.get((str(call.workspace), call.params["name"]))
        if record is None:
            return error(404, f"Fileset '{call.workspace}/{call.params['name']}' not found")
        return Answer(200, self._fileset_answer(record))

    def _file(self, workspace: str, fileset: str, path: str, content: bytes) -> dict[str, Any]:
        return {"file_ref": f"{workspace}/{fileset}/{path}", "path": path, "size": len(content),
                "file_url": f"{self.url}/apis/files/v2/workspaces/{workspace}/filesets/{fileset}/-/{path}"}

    @route("GET", FILES + "/{name}/files", "list-files")
    async def list_files(self, call: Call) -> Answer:
        key = (str(call.workspace), call.params["name"])
        if key not in self.filesets:
            return error(404, f"Fileset '{key[0]}/{key[1]}' not found")
        return Answer(200, {"data": [self._file(*key, path, content) for path, content in self.files[key].items()]})

    @route("PUT", FILES + "/{name}/-/{path}", "upload-file")
    async def upload_file(self, call: Call) -> Answer:
        key = (str(call.workspace), call.params["name"])
        if key not in self.filesets:
            return error(404, f"Fileset '{key[0]}/{key[1]}' not found")
        self.files[key][call.params["path"]] = bytes(call.body)
        return Answer(200, self._file(*key, call.params["path"], bytes(call.body)))

    @route("GET", FILES + "/{name}/-/{path}", "download-file")
    async def download_file(self, call: Call) -> Answer:
        content = self.files.get((str(call.workspace), call.params["name"]), {}).get(call.params["path"])
        if content is None:
            return error(404, f"File '{call.params['path']}' not found")
        return Answer(200, raw=content)

    # ------------------------------------------------------------------ customization

    @route("GET", "/apis/customization/v2/healthz", "customization-health")
    async def health(self, call: Call) -> Answer:
        return Answer(200, {"plugin": "customization", "status": "ok", "contributors": ["rl"]})

    def _ref(self, ref: str, workspace: str) -> tuple[str, str]:
        owner, _, name = ref.rpartition("/")
        return owner or workspace, name

    @route("POST", CUSTOMIZATION, "create-job")
    async def create_job(self, call: Call) -> Answer:
        workspace, backend, spec = str(call.workspace), call.params["backend"], call.body["spec"]
        name = call.body.get("name") or self.new_id("rl")
        if (workspace, name) in self.jobs:
            return error(409, f"Job '{workspace}/{name}' already exists")
        if self._ref(spec["model"], workspace) not in self.models:
            return error(422, f"Model entity '{spec['model']}' not found")
        dataset = self._ref(spec["dataset"], workspace)
        missing = [f for f in DPO_FILES if f not in self.files.get(dataset, {})]
        if dataset not in self.filesets or (spec["training"]["type"] == "dpo" and missing):
            return error(422, f"Dataset fileset '{spec['dataset']}' is missing or lacks {', '.join(missing)}")
        output = (spec.get("output") or {}).get("name") or f"{name}-output"
        canonical = {**spec, "name": name, "output": {"name": output, "type": "model", "fileset": output}}
        self.jobs[(workspace, name)] = {
            "id": self.new_id("job"), "attempt_id": "1", "name": name, "workspace": workspace, "source": backend,
            "description": call.body.get("description", ""), "spec": canonical,
            "platform_spec": {"steps": [{"name": "training", "executor": {
                "provider": "gpu", "container": {"image": "nvcr.io/nvidia/nemo-microservices/nemo-rl:fake"}}}]},
            "fileset": f"{workspace}/{name}", "status": "created", "status_details": {}, "error_details": {},
            "custom_fields": call.body.get("custom_fields") or {}, "created_at": timestamp(),
            "updated_at": timestamp()}
        self.scripts[(workspace, name)] = [dict(step) for step in self.script]
        return Answer(200, self._customization_job(self.jobs[(workspace, name)]))

    @staticmethod
    def _customization_job(job: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "name", "description", "workspace", "created_at", "updated_at", "spec", "status",
                "status_details", "error_details", "custom_fields")
        return {k: job[k] for k in keys if k in job}

    @route("GET", CUSTOMIZATION + "/{name}", "get-job")
    async def get_customization_job(self, call: Call) -> Answer:
        job = self.jobs.get((str(call.workspace), call.params["name"]))
        if job is None or job["source"] != call.params["backend"]:
            return error(404, f"Job '{call.workspace}/{call.params['name']}' not found")
        return Answer(200, self._customization_job(job))

    # ------------------------------------------------------------------ jobs

    def _job(self, call: Call) -> dict[str, Any] | None:
        return self.jobs.get((str(call.workspace), call.params["name"]))

    @route("GET", JOBS, "get-platform-job")
    async def get_job(self, call: Call) -> Answer:
        job = self._job(call)
        return error(404, "Job not Found") if job is None else Answer(200, dict(job))

    @route("GET", JOBS + "/status", "job-status")
    async def job_status(self, call: Call) -> Answer:
        job = self._job(call)
        if job is None:
            return error(404, "Job not Found")
        if job["status"] not in TERMINAL:
            steps = self.scripts[(job["workspace"], job["name"])]
            step = steps.pop(0) if len(steps) > 1 else steps[0]
            job.update(status=step["status"], updated_at=timestamp(),
                       status_details={**job["status_details"], **step.get("status_details", {})},
                       error_details=step.get("error_details", {}))
            if job["status"] == "completed":
                self._register_output(job)
        return Answer(200, {
            "id": job["id"], "name": job["name"], "status": job["status"], "status_details": job["status_details"],
            "error_details": job["error_details"], "created_at": job["created_at"], "updated_at": job["updated_at"],
            "steps": [{"id": f"{job['id']}-training", "name": "training", "status": job["status"],
                       "status_details": job["status_details"], "error_details": job["error_details"], "tasks": [],
                       "created_at": job["created_at"], "updated_at": job["updated_at"]}]})

    def _register_output(self, job: dict[str, Any]) -> None:
        """What the job's model_entity step does: the output fileset and a full-weight model entity."""
        workspace, output = job["workspace"], job["spec"]["output"]["name"]
        self.filesets[(workspace, output)] = {
            "id": self.new_id("fileset"), "name": output, "workspace": workspace, "description": "trained model",
            "purpose": "model", "storage": {"type": "local", "path": f"/data/{workspace}/{output}"}, "metadata": {},
            "custom_fields": {}, "project": "", "created_at": timestamp(), "updated_at": timestamp()}
        self.files[(workspace, output)] = {"config.json": b"{}", "model.safetensors": b"weights"}
        base_workspace, base = self._ref(job["spec"]["model"], workspace)
        self.add_model(f"{workspace}/{output}", fileset=f"{workspace}/{output}", finetuning_type="all_weights",
                       base_model=f"{base_workspace}/{base}")

    @route("GET", JOBS + "/logs", "job-logs")
    async def job_logs(self, call: Call) -> Answer:
        job = self._job(call)
        if job is None:
            return error(404, "Job not Found")
        lines = self.logs[-int(call.query.get("tail", len(self.logs) or 1)):]
        return Answer(200, {"data": [{"timestamp": timestamp(), "job": job["name"], "job_step": "training",
                                      "job_task": "0", "message": line} for line in lines],
                            "total": len(lines), "next_page": "", "prev_page": ""})

    @route("POST", JOBS + "/cancel", "cancel-job")
    async def cancel_job(self, call: Call) -> Answer:
        job = self._job(call)
        if job is None:
            return error(404, "Job not Found")
        if job["status"] in TERMINAL:
            return error(409, f"Job '{job['name']}' is {job['status']}: nothing to cancel")
        job.update(status="cancelled", updated_at=timestamp())
        return Answer(200, dict(job))
