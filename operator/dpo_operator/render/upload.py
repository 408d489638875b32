"""The upload Job that copies a dataset for a customizer DPOTrainingJob into NeMo Datastore (v1) or a NeMo platform
fileset (v2) (pure builders)."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import StorageLocation
from dpo_operator.api.training import KIND, DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.kube.naming import child_name, labels_for
from dpo_operator.kube.pods import container, pod_spec, secret_env
from dpo_operator.nemo.datastore_hub import XET_ENV
from dpo_operator.render.job import job, spec_env
from dpo_operator.render.paths import MOUNT_ROOT, mounted
from dpo_operator.render.training import SPEC_ENV


PLATFORM_KEY_ENV = "NEMO_API_KEY"  # v2: the platform's key in the upload pod


def upload_job_name(name: str) -> str:
    return child_name(name, "upload")


def upload_manifest(body: Any, spec: DPOTrainingJobSpec, location: StorageLocation, repo: str,
                    config: OperatorConfig) -> dict[str, Any]:
    """v1: the dataset into NeMo Datastore repo ``repo`` (its Hugging Face API, with the HF token)."""
    backend = spec.customizer
    assert backend is not None and backend.datastore_url is not None
    return _upload_job(body, spec, location, config,
                       [f"--datastore-url={backend.datastore_url}", f"--repo={repo}"],
                       [{"name": XET_ENV, "value": "1"},  # NeMo Datastore speaks Git LFS, not Xet
                        *secret_env("HF_TOKEN", backend.hf_token_secret_ref)],
                       {"HF_TOKEN": backend.datastore_url})


def platform_upload_manifest(body: Any, spec: DPOTrainingJobSpec, location: StorageLocation, fileset: str,
                             config: OperatorConfig) -> dict[str, Any]:
    """v2: the dataset as the platform's DPO rows into fileset ``fileset`` of ``customizer.workspace`` (files API,
    with the platform's API key)."""
    backend = spec.customizer
    assert backend is not None and backend.platform_url is not None
    return _upload_job(body, spec, location, config,
                       [f"--platform-url={backend.platform_url}", f"--workspace={backend.workspace}",
                        f"--fileset={fileset}"],
                       secret_env(PLATFORM_KEY_ENV, backend.api_key_secret_ref),
                       {PLATFORM_KEY_ENV: backend.platform_url})


def _upload_job(body: Any, spec: DPOTrainingJobSpec, location: StorageLocation, config: OperatorConfig,
                destination: list[str], destination_env: list[dict[str, Any]],
                secret_destinations: dict[str, str]) -> dict[str, Any]:
    name = body["metadata"]["name"]
    labels = labels_for(KIND.kind, name, "uploader")
    # an argv, never parsed by a shell; each value from the spec is one --flag=value argument
    # the spec's dataset section says how to read, check and convert the source (render.training.SPEC_ENV)
    command = ["dpo-operator", "upload-dataset", f"--spec-env={SPEC_ENV}", *destination,
               "--result-file=/dev/termination-log"]
    env = [spec_env(SPEC_ENV, spec.to_api()),
           {"name": "DPO_DATASET_LOCATION", "value": location.describe()},
           *destination_env]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if location.pvc is not None:
        command += [f"--dataset-dir={mounted(location.pvc)}"]
        volumes.append({"name": "dataset", "persistentVolumeClaim": {"claimName": location.pvc.claim_name,
                                                                      "readOnly": True}})
        mounts.append({"name": "dataset", "mountPath": f"{MOUNT_ROOT}/{location.pvc.claim_name}", "readOnly": True})
    else:
        assert location.hub is not None
        command += [f"--source-endpoint={location.hub.endpoint}", f"--source-repo={location.hub.repo_id}",
                    f"--source-revision={location.hub.revision}"]
        env += secret_env("SOURCE_HF_TOKEN", location.hub.token_secret_ref)
    uploader = container(spec.template, name="uploader", default_image=config.workload_image, command=command,
                         env=env, volume_mounts=mounts)
    # no activeDeadlineSeconds: the Customizer's deadline counts from submission
    return job(KIND.kind, body, upload_job_name(name), labels, spec.job, spec.template,
               pod_spec(spec.template, [uploader], volumes=volumes, config=config), deadline=False,
               secret_destinations={**secret_destinations,
                                    "SOURCE_HF_TOKEN": location.hub.endpoint if location.hub else None})
