"""The Kubernetes API, through the official client: where, as whom, and raw JSON.

Thin and blocking (the ``kubernetes`` client is synchronous): the source calls it from
worker threads. Objects stay JSON as the server sent them, not the client's typed models,
which are slow to build for thousands of Pods and drop fields newer than the client.
Every transport failure becomes an `ApiError` (status 0), every refusal one with the
server's status and reason; timeouts are set here.

The ``kubernetes`` package is imported when a client is made, not with this module: every
``pilotfish`` command loads the plugins, and most never talk to a cluster.

Where the cluster is: a kubeconfig (``--kubeconfig``, ``--context``), or, in a pod, the
service account's token and CA at the standard paths with ``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT`` (the token is read again every minute: the kubelet rotates it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3

if TYPE_CHECKING:
    import kubernetes

TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
CA_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
HOST_ENV, PORT_ENV = "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # a list page or a write
WATCH_GRACE = 30.0  # a watch is quiet at most its timeoutSeconds (and bookmarks come)
CHUNK = 256 * 1024


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason} ({status}): {message}" if status else message)
        self.status, self.reason, self.message = status, reason, message


class ConfigError(Exception):
    """The kubeconfig or the in-cluster files cannot be used; the message says why."""


def in_cluster(environ: Mapping[str, str] = os.environ, token_file: Path = TOKEN_FILE) -> bool:
    """Running in a pod with a service account: the in-cluster config applies."""
    return bool(environ.get(HOST_ENV)) and token_file.is_file()


def load(kubeconfig: Path | None = None, context: str | None = None, *,
         environ: Mapping[str, str] = os.environ, token_file: Path = TOKEN_FILE,
         ca_file: Path = CA_FILE, pool_size: int = 64) -> Client:
    """A client for the kubeconfig's cluster, or (no kubeconfig) the in-cluster one."""
    import kubernetes

    configuration = type.__call__(kubernetes.client.Configuration)
    try:
        if kubeconfig is not None:
            kubernetes.config.load_kube_config(str(kubeconfig), context, configuration,
                                               persist_config=False)
        else:
            loader = kubernetes.config.incluster_config.InClusterConfigLoader(
                token_filename=str(token_file), cert_filename=str(ca_file), environ=environ)
            loader.load_and_set(configuration)
    except (kubernetes.config.ConfigException, OSError, ValueError, KeyError) as exc:
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
        raise ConfigError(f"{where}: {exc}") from exc
    configuration.connection_pool_maxsize = pool_size  # one connection per open watch
    configuration.retries = False  # the source retries, with its backoff
    return Client(kubernetes.client.ApiClient(configuration))


class Client:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def close(self) -> None:
        self.api.close()

    def _open(self, method: str, path: str, query: Mapping[str, str] | None = None,
              body: Any = None, read_timeout: float = READ_TIMEOUT,
              content_type: str = "application/json") -> urllib3.BaseHTTPResponse:
        from kubernetes.client import ApiException

        request = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json",
                           **({"Content-Type": content_type} if body else {})},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(*request, _request_timeout=(CONNECT_TIMEOUT,
                                                                     read_timeout)).response
        except ApiException as exc:
            raise ApiError(exc.status or 0, str(exc.reason or ""), str(exc.reason)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, "", f"{self.host}: {exc}") from exc
        if not 200 <= response.status < 300:
            try:
                data = response.read()
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            finally:
                response.release_conn()
            raise _refusal(response.status, data)
        return response

    def request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                body: Any = None, content_type: str = "application/json"
                ) -> dict[str, Any]:
        """One request, its JSON answer (a list page, an object); ``content_type`` says
        what ``body`` is (a PATCH's kind of patch)."""
        response = self._open(method, path, query, body, content_type=content_type)
        try:
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, "", f"{self.host}{path}: {exc}") from exc
        finally:
            response.release_conn()
        return _json(data, path)

    def watch(self, path: str, query: Mapping[str, str]) -> Watch:
        """Open a watch (the query carries ``watch=true`` and its ``timeoutSeconds``)."""
        timeout = float(query.get("timeoutSeconds") or 0) + WATCH_GRACE
        return Watch(self._open("GET", path, query, read_timeout=timeout), path)


class Watch:
    """An open watch's response: its events as they arrive."""

    def __init__(self, response: urllib3.BaseHTTPResponse, path: str) -> None:
        self.response, self.path = response, path
        self._buffer = b""

    def read(self) -> list[dict[str, Any]] | None:
        """The events that arrived (blocks until some do); None when the watch ended."""
        events: list[dict[str, Any]] = []
        while not events:
            try:
                chunk = self.response.read1(CHUNK)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                raise ApiError(0, "", f"watch {self.path} broke off: {exc}") from exc
            if not chunk:
                if self._buffer.strip():
                    raise ApiError(0, "", f"watch {self.path} ended inside an event")
                return None
            lines = (self._buffer + chunk).split(b"\n")
            self._buffer = lines.pop()
            events += [_json(line, self.path) for line in lines if line.strip()]
        return events

    def interrupt(self) -> None:
        """Stop the watch from another thread: a `read` blocked on it returns at once
        (with an error). The reading side still calls `close`."""
        self.response.shutdown()

    def close(self) -> None:
        self.response.close()
        self.response.release_conn()


def _json(data: bytes, path: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ApiError(0, "", f"{path}: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(0, "", f"{path}: not a JSON object")
    return value


def _refusal(status: int, data: bytes) -> ApiError:
    """The server's ``Status``, or what it sent instead."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return ApiError(status, str(body.get("reason") or ""), str(body.get("message") or ""))
    return ApiError(status, "", data.decode("utf-8", "replace")[:200])

