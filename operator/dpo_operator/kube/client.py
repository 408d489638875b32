"""The kubernetes API client the handlers use (in-cluster config, else $KUBECONFIG)."""

from __future__ import annotations

import threading

import kubernetes
from kubernetes.config.config_exception import ConfigException

_lock = threading.Lock()
_client: kubernetes.client.ApiClient | None = None


def load() -> kubernetes.client.ApiClient:
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
        _client = kubernetes.client.ApiClient(configuration)
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
