"""istiod's webhook port (15017): sidecar injection at ``/inject`` and config validation at
``/validate``, over TLS with the serving certificate discovery's CA issued itself (renewed
with it), as the API server calls them.

The answers are ``admission``'s; this module only moves them: ``POST`` with
``Content-Type: application/json`` (else 405 / 415), a malformed review answered 400 with
the field at fault, and nothing a caller sends stops the server (a handler's bug is a 500
for that request alone). ``/inject/KEY/VALUE/...`` sets proxy environment, as Istio's path
parameters do. Settings are read per request, so a changed ``istio`` ConfigMap applies to
the next pod.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import yaml

from pilotfish.core import meshconfig
from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.core.objects import ConfigKey, ConfigObject
from pilotfish.core.plugins import Plugins
from pilotfish.core.security.provider import ServingCert
from pilotfish.core.store import ConfigError, ConfigStore
from pilotfish.discovery import admission
from pilotfish.discovery.inject.settings import InjectionError, Settings
from pilotfish.discovery.tls_front import load_serving
from pilotfish.validation import FIELD_VALIDATION, check, known_kind, validate

log = logging.getLogger("pilotfish.webhooks")

MAX_BODY = 8 * 1024 * 1024  # a review holds the object and the old one: 2 x 1.5 MiB at most


def tls_context(serving: ServingCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    load_serving(context, serving)
    return context


class Webhooks:
    """The two webhooks, for one discovery: its mesh config and store (for the ``istio``
    ConfigMap), its plugins' checks, and the serving certificate (``renewed`` swaps it)."""

    def __init__(self, config: meshconfig.MeshConfig, store: ConfigStore, plugins: Plugins,
                 serving: ServingCert) -> None:
        self.config = config
        self.store = store
        self.plugins = plugins
        self.context = tls_context(serving)
        self.port = 0
        self._unknown = FIELD_VALIDATION[config.discovery.field_validation]
        self._mesh_key = ConfigKey("ConfigMap", config.mesh.root_namespace,
                                   meshconfig.MESH_CONFIGMAP)
        self._cached: tuple[Any, Settings] | None = None
        self.settings()  # bad injection values fail the start, naming the value

    def renewed(self, serving: ServingCert) -> None:
        load_serving(self.context, serving)

    # -- settings ------------------------------------------------------------------------

    def settings(self) -> Settings:
        """The injector values of the mesh config file, with Istio's mesh config: ``mesh:``
        under the fields the ``istio`` ConfigMap sets (a ConfigMap that cannot be read is
        left out, as discovery leaves it out)."""
        holder = self.store.get(self._mesh_key)
        text = (holder.body.get("data") or {}).get("mesh") if holder is not None else None
        if self._cached is not None and self._cached[0] == text:
            return self._cached[1]
        mesh = dict(self.config.mesh_fields)
        if isinstance(text, str):
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError:
                data = {}
            if isinstance(data, dict):
                mesh.update({k: v for k, v in data.items() if k in meshconfig.MESH_FIELDS})
        settings = Settings.create(self.config.injection, mesh)
        self._cached = (text, settings)
        return settings

    # -- validation ----------------------------------------------------------------------

    def _known(self, obj: ConfigObject) -> bool:
        return known_kind(obj) or self.store.kinds.lookup(obj) is not None

    def _check(self, obj: ConfigObject) -> list[ConfigError]:
        checks = self.plugins.validate_config
        if known_kind(obj):
            return check(obj, checks, unknown_fields=self._unknown)
        return validate(obj, checks, unknown_fields=self._unknown)  # a plugin's kind

    # -- HTTP ----------------------------------------------------------------------------

    def server(self) -> HttpServer:
        return HttpServer({"/inject": self.inject, "/validate": self.validate,
                           "/validate/": self.validate}, fallback=self._by_prefix,
                          max_body=MAX_BODY)

    async def _by_prefix(self, request: Request) -> Response:
        if request.path.startswith("/inject/"):
            return await self.inject(request)
        return Response.text(f"404 not found: {request.path}; the webhooks are /inject and "
                             "/validate\n", 404)

    async def inject(self, request: Request) -> Response:
        return self._answer(request, lambda review: admission.inject_review(
            review, self.settings(), request.path, self.namespace_annotations))

    def namespace_annotations(self, namespace: str) -> Mapping[str, str]:
        """A Namespace's annotations as the config source holds it ({} when it does not,
        as with files): on OpenShift they give the proxy's uid and gid."""
        holder = self.store.get(ConfigKey("Namespace", "", namespace))
        return holder.annotations if holder is not None else {}

    async def validate(self, request: Request) -> Response:
        return self._answer(request, lambda review: admission.validate_review(
            review, self._check, self._known))

    def _answer(self, request: Request,
                handle: Callable[[admission.Review], Mapping[str, Any]]) -> Response:
        if request.method != "POST":
            return Response(405, f"{request.path}: use POST\n".encode(),
                            headers=(("allow", "POST"),))
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            return Response.text(f"Content-Type: expected application/json, got "
                                 f"{content_type or 'none'}\n", 415)
        try:
            review = admission.parse(request.body)
            answer = handle(review)
        except admission.ReviewError as exc:
            log.info("%s from %s: bad AdmissionReview: %s", request.path, request.peer, exc)
            return Response.text(f"bad AdmissionReview: {exc}\n", 400)
        except InjectionError as exc:  # the settings themselves: say so to the caller
            log.warning("%s: cannot inject: %s", request.path, exc)
            return Response.text(f"cannot inject: {exc}\n", 500)
        return Response(200, json.dumps(answer).encode(), "application/json")

    async def serve(self, address: str, *,
                    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve on ``address`` until cancelled; ``task_status`` gets the bound port."""
        async with anyio.create_task_group() as tg:
            self.port = await tg.start(lambda task_status: self.server().serve(
                address, ssl_context=self.context, task_status=task_status))
            log.info("webhooks (/inject, /validate) on %s, port %d", address, self.port)
            task_status.started(self.port)
