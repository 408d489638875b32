"""The kubernetes API client the handlers use (in-cluster config, else $KUBECONFIG).

The kubernetes client sets no timeout on a request by default: one stalled connection would hold a worker
forever. Every call made through this client gets a total timeout unless the caller passes its own.
"""

from __future__ import annotations

import threading
from typing import Any

import kubernetes
from kubernetes.config.config_exception import ConfigException

DEFAULT_REQUEST_TIMEOUT = 30.0

_lock = threading.Lock()
_client: kubernetes.client.ApiClient | None = None


class TimedApiClient(kubernetes.client.ApiClient):  # type: ignore[misc]
    """An ApiClient whose requests default to ``request_timeout`` seconds (total, for connect and read)."""

    def __init__(self, configuration: kubernetes.client.Configuration, request_timeout: float) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout

    def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None, post_params: Any = None,
                 _request_timeout: Any = None) -> Any:
        return super().call_api(method, url, header_params, body, post_params,
                                self.request_timeout if _request_timeout is None else _request_timeout)


def load(request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> kubernetes.client.ApiClient:
    """(Re)load the configuration; the operator calls this once at startup."""
    global _client
    with _lock:
        try:
            kubernetes.config.load_incluster_config()
            configuration = kubernetes.client.Configuration.get_default_copy()
        except ConfigException:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(client_configuration=configuration)
        configuration.retries = 3
        _client = TimedApiClient(configuration, request_timeout)
        return _client


def api_client() -> kubernetes.client.ApiClient:
    return _client if _client is not None else load()


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


def batch() -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api_client())


def apps() -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api_client())


def custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client())


def events() -> kubernetes.client.EventsV1Api:
    return kubernetes.client.EventsV1Api(api_client())
