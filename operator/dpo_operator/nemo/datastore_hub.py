"""Writing through NeMo Datastore's Hugging Face Hub API (``<datastore>/v1/hf``): what differs from the Hub.

- The Datastore refuses ``create_repo`` in a namespace it does not have; namespaces are created through
  ``POST <datastore>/v1/datastore/namespaces``. :func:`ensure_namespace_for_repo` does that first.
- It serves large files through the Git LFS protocol (preupload answers ``lfs``, then the LFS batch endpoint),
  not Xet. huggingface_hub uploads LFS files with Xet whenever ``hf_xet`` is installed unless
  ``HF_HUB_DISABLE_XET`` is set: the upload Job sets it, and :func:`without_xet` sets it in-process for the
  duration of a write (huggingface_hub reads it into ``constants`` at import). :func:`upload_source` also hands
  content over as a buffered stream, which huggingface_hub never sends by Xet.

A plain Hub endpoint (no ``/v1/hf`` suffix) is left alone.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

from dpo_operator.nemo.http import NemoApi

HF_SUFFIX = "/v1/hf"


def datastore_root(hub_endpoint: str) -> str | None:
    """The Datastore root behind a Hub endpoint, or None when the endpoint is not a NeMo Datastore's."""
    endpoint = hub_endpoint.rstrip("/")
    return endpoint.removesuffix(HF_SUFFIX) if endpoint.endswith(HF_SUFFIX) else None


def ensure_namespace(datastore: NemoApi, namespace: str, ok: tuple[int, ...] = ()) -> None:
    """Create the namespace; the Datastore answers 409 or 422 when it exists, which is fine."""
    datastore.request("POST", "/v1/datastore/namespaces", data={"namespace": namespace}, ok=(409, 422, *ok))


def ensure_namespace_for_repo(hub_endpoint: str, repo_id: str, token: str | None) -> bool:
    """Ensure the repo's namespace when ``hub_endpoint`` is a Datastore's; answers whether it is one.

    A server under ``/v1/hf`` without the namespaces API (404/405) is a Hub-compatible server of another kind."""
    root = datastore_root(hub_endpoint)
    if root is None or "/" not in repo_id:
        return False
    with NemoApi(root, token or None, service="datastore") as datastore:
        ensure_namespace(datastore, repo_id.split("/", 1)[0], ok=(404, 405))
    return True


def upload_source(content: bytes, datastore: bool) -> bytes | io.BufferedReader:
    """What to give ``CommitOperationAdd``: bytes for the Hub, a buffered stream for a Datastore (LFS, not Xet)."""
    return io.BufferedReader(io.BytesIO(content)) if datastore else content  # type: ignore[arg-type]


XET_ENV = "HF_HUB_DISABLE_XET"


@contextmanager
def without_xet(datastore: bool) -> Iterator[None]:
    """For a Datastore write: Xet off (the environment variable and huggingface_hub's copy of it), restored after."""
    if not datastore:
        yield
        return
    from huggingface_hub import constants

    before_env, before = os.environ.get(XET_ENV), constants.HF_HUB_DISABLE_XET
    os.environ[XET_ENV], constants.HF_HUB_DISABLE_XET = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = before
        if before_env is None:
            os.environ.pop(XET_ENV, None)
        else:
            os.environ[XET_ENV] = before_env
