"""The fake API server: Kubernetes' REST paths and verbs over HTTP(S), on the store.

``FakeKubeApi.serve`` runs it in a task group; ``running()`` runs it in a thread of its own
(an anyio blocking portal) for synchronous tests and the `kubernetes` client. Test hooks
(``seed``, ``compact``, ``cut_watches``, ``bookmark``, ``add_token``, ``revoke_token``,
``set_service_address``, ``statistics``) may be called from the test's thread or the
server's loop.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import datetime
import functools
import json
import secrets
import ssl
import string
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import yaml

from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.testing.certs import ca_signed
from pilotfish.testing.kube import admission, apply, errors, objects
from pilotfish.testing.kube.patches import PatchError, json_patch, merge_patch, strategic_merge
from pilotfish.testing.kube.resources import CRDS, Registry, ResourceType
from pilotfish.testing.kube.store import Store, key_of
from pilotfish.testing.kube.tokens import API_AUDIENCE, Tokens, TokenUser, service_account
from pilotfish.testing.kube.watches import Selection, Watches, revision, true

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's limit on a request body
NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ADMIN = TokenUser("kubernetes-admin", groups=("system:masters", "system:authenticated"))
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0+pilotfish.fake",
           "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
           "compiler": "", "platform": "linux/amd64"}
APPLY = "application/apply-patch+yaml"
_WEBHOOKS = "admissionregistration.k8s.io"
_T = TypeVar("_T")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _serves(rtype: ResourceType, subresource: str) -> bool:
    if subresource == "status":
        return rtype.status
    return subresource == "token" and rtype.storage == ("", "serviceaccounts")


def _json(body: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode(),
                    "application/json")


class _Call:
    """One resource request, its path parsed."""

    def __init__(self, rtype: ResourceType, namespace: str, name: str, subresource: str,
                 http: Request, user: dict[str, Any]) -> None:
        self.rtype, self.namespace, self.name = rtype, namespace, name
        self.subresource, self.http, self.user = subresource, http, user
        self.dry_run = http.query.get("dryRun") == "All"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def manager(self) -> str:
        """The field manager: asked for, or the client's name from its User-Agent."""
        agent = self.http.headers.get("user-agent", "unknown")
        return self.http.query.get("fieldManager") or agent.split("/")[0]

    def keep(self) -> apply.Keep:
        """The fields a write through this endpoint owns (status only through /status)."""
        if not self.rtype.status:
            return lambda path: True
        if self.subresource == "status":
            return lambda path: path[0] == "f:status"
        return lambda path: path[0] != "f:status"

    def body(self) -> Any:
        try:
            return json.loads(self.http.body or b"null")
        except ValueError as exc:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}"
                                     ) from None


class _Stale(Exception):
    """The object changed while admission looked at it: try again, or 409."""


class FakeKubeApi:
    """A Kubernetes API server for tests, in one process (see the package docstring).

    ``directory`` receives the kubeconfig (``kubeconfig``) and the serving certificate.
    ``tls=False`` serves plain HTTP. ``history`` is how many changes are kept for watches
    to resume from (older revisions get 410 Gone; ``compact()`` forgets them all now).
    A watch that asked for bookmarks gets one each ``bookmark_interval`` seconds of quiet,
    and whenever ``bookmark()`` is called.
    """

    def __init__(self, directory: Path, *, tls: bool = True, history: int = 100_000,
                 bookmark_interval: float = 60.0, service_cidr: str = "10.96.0.0/16") -> None:
        self.directory = Path(directory)
        self.service_cidr = service_cidr
        self.tls = tls
        self.store = Store(history)
        self.registry = Registry()
        self.tokens = Tokens()
        self.token = self.tokens.add(ADMIN)  # the kubeconfig's
        self.port = 0
        self.kubeconfig = self.directory / "kubeconfig"
        self.ca_pem = b""
        self._services: dict[tuple[str, str], str] = {}
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._loop_thread: int | None = None
        self.watches = Watches(self.store, bookmark_interval)
        # Requests served, by (method, plural, subresource): what a test counts writes by.
        self._requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.seed(*({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                    for name in NAMESPACES))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- running ------------------------------------------------------------------------

    async def serve(self, address: str = "127.0.0.1:0", *,
                    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve until cancelled; ``task_status`` gets the port once the kubeconfig is
        written."""
        self._loop_thread = threading.get_ident()
        context = self._tls_context() if self.tls else None
        server = HttpServer({}, fallback=self.handle, max_body=MAX_BODY)
        async with anyio.create_task_group() as tg:
            self.port = await tg.start(functools.partial(server.serve, address,
                                                         ssl_context=context))
            self._write_kubeconfig()
            task_status.started(self.port)

    def _tls_context(self) -> ssl.SSLContext:
        ca, cert, key = ca_signed("localhost", ips=["127.0.0.1"])
        self.ca_pem = ca
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "apiserver.crt").write_bytes(cert)
        (self.directory / "apiserver.key").write_bytes(key)
        (self.directory / "ca.crt").write_bytes(ca)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.directory / "apiserver.crt",
                                self.directory / "apiserver.key")
        return context

    def _write_kubeconfig(self) -> None:
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin",
                                                      "namespace": "default"}}],
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))

    # -- test hooks (any thread) --------------------------------------------------------

    def _on_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._portal is None or threading.get_ident() == self._loop_thread:
            return fn(*args)
        return self._portal.call(fn, *args)

    def seed(self, *objs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Store objects as if a controller had written them: no admission, no namespace
        check, status kept (a Pod with its podIP, a Node with its addresses)."""
        return self._on_loop(self._seed, objs)

    def _seed(self, objs: tuple[Mapping[str, Any], ...]) -> list[dict[str, Any]]:
        stored = []
        for obj in objs:
            rtype = self.registry.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
            if rtype is None:
                raise ValueError(f"{obj.get('apiVersion')} {obj.get('kind')}: not served")
            new = objects.on_create(rtype, dict(obj), uid=str(uuid.uuid4()), now=_now())
            if "status" in obj:
                new["status"] = copy.deepcopy(obj["status"])
            stored.append(self.store.put(rtype.storage, new))
            self._after_put(rtype, stored[-1])
        return stored

    def compact(self, revision: int | None = None) -> None:
        """Forget history up to ``revision`` (default: all): older watches and continue
        tokens get 410 Gone."""
        self._on_loop(self.store.compact, revision)

    def cut_watches(self) -> int:
        """Drop every open watch's connection mid-stream (no end of the chunked body, as
        when the server dies); returns how many."""
        return self._on_loop(self.watches.cut)

    def bookmark(self) -> int:
        """Send a BOOKMARK now to every watch that allows them; returns how many."""
        return self._on_loop(self.watches.bookmark)

    def add_token(self, user: TokenUser, token: str = "") -> str:
        """Register a bearer token for ``user`` (see ``tokens.service_account``)."""
        return self._on_loop(self.tokens.add, user, token)

    def revoke_token(self, token: str) -> None:
        self._on_loop(self.tokens.revoke, token)

    def set_service_address(self, namespace: str, name: str, address: str) -> None:
        """Where webhooks naming Service ``namespace/name`` are called (``HOST:PORT``)."""
        self._on_loop(self._services.__setitem__, (namespace, name), address)

    def statistics(self) -> dict[str, int]:
        return self._on_loop(lambda: {"watches": len(self.watches),
                                      "revision": self.store.revision,
                                      "compacted": self.store.compacted})

    def requests(self, method: str, plural: str, subresource: str = "") -> int:
        """How many ``method`` requests (``PATCH``, ``PUT``...) reached a resource type's
        objects or collection (``plural``: ``gateways``) or ``subresource`` (``status``)."""
        return self._on_loop(self._requests.__getitem__, (method, plural, subresource))

    # -- routing ------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except errors.ApiError as exc:
            return _json(exc.status(), exc.code)

    async def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Response.text("ok")
        if path == "/version":
            return _json(VERSION)
        user = self._authenticate(request)
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, rest = "", parts[1:]
            if not rest:
                return _json(self.registry.api_versions(f"127.0.0.1:{self.port}"))
        elif parts[0] == "apis":
            if len(parts) == 1:
                return _json(self.registry.api_group_list())
            group, rest = parts[1], parts[2:]
            if not rest:
                return _json(_found(self.registry.api_group(group)))
        else:
            raise errors.no_such_path()
        version, rest = rest[0], rest[1:]
        if not rest:
            return _json(_found(self.registry.api_resource_list(group, version)))
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status",):
            namespace, rest = rest[1], rest[2:]
        rtype = self.registry.lookup(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if rtype is None or len(rest) > 3 or (namespace and not rtype.namespaced) or \
                (subresource and not _serves(rtype, subresource)):
            raise errors.no_such_path()
        call = _Call(rtype, namespace, name, subresource, request, user)
        self._requests[(request.method, rtype.plural, subresource)] += 1
        return await self._verb(call, request.method)

    async def _verb(self, call: _Call, method: str) -> Response:
        if call.rtype.plural == "tokenreviews":
            if method != "POST" or call.name:
                raise errors.method_not_allowed(method)
            return _json(self.tokens.review(call.body() or {}), 201)
        if call.subresource == "token":
            if method != "POST":
                raise errors.method_not_allowed(method)
            return _json(self._token_request(call), 201)
        namespace_missing = call.rtype.namespaced and not call.namespace
        if not call.name:
            if method == "GET":
                if true(call.http.query.get("watch")):
                    lines = self.watches.open(call.rtype, call.namespace, call.http.query)
                    return Response(200, content_type="application/json", stream=lines)
                return self._list(call)
            if namespace_missing:
                raise errors.no_such_path()
            if method == "POST":
                return await self._create(call)
            if method == "DELETE":
                return await self._delete_collection(call)
        elif namespace_missing:
            raise errors.no_such_path()
        elif method == "GET":
            return _json(self._out(call.rtype, self._existing(call)))
        elif method == "PUT":
            return await self._update(call)
        elif method == "PATCH":
            return await self._patch(call)
        elif method == "DELETE":
            return await self._delete(call)
        raise errors.method_not_allowed(method)

    def _token_request(self, call: _Call) -> dict[str, Any]:
        """A TokenRequest (``serviceaccounts/NAME/token``, what a kubelet asks for a pod's
        projected token): a token for the audiences asked (the API server's by default),
        bound to the pod named in ``boundObjectRef``. The service account is not looked up
        (a namespace's ``default`` one is not created here)."""
        body = call.body()
        spec = (body or {}).get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise errors.bad_request("a TokenRequest needs a spec")
        seconds = int(spec.get("expirationSeconds") or 3600)
        bound = spec.get("boundObjectRef") or {}
        pod = str(bound.get("name") or "") if bound.get("kind") == "Pod" else ""
        user = service_account(call.namespace, call.name, pod=pod,
                               pod_uid=str(bound.get("uid") or ""),
                               audiences=spec.get("audiences") or [API_AUDIENCE])
        token = self.tokens.add(user)
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": call.name, "namespace": call.namespace},
                "spec": {**spec, "expirationSeconds": seconds},
                "status": {"token": token,
                           "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def _authenticate(self, request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self.tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise errors.unauthorized()
        return user.user_info()

    def _out(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "apiVersion": rtype.api_version, "kind": rtype.kind}

    def _existing(self, call: _Call) -> dict[str, Any]:
        obj = self.store.get(call.rtype.storage, call.key)
        if obj is None:
            raise errors.not_found(call.rtype.plural, call.name, call.rtype.group)
        return obj

    # -- reads --------------------------------------------------------------------------

    def _list(self, call: _Call) -> Response:
        query, rtype = call.http.query, call.rtype
        selection = Selection(rtype, query)
        exact: int | None = None
        asked = query.get("resourceVersion", "")
        if asked not in ("", "0") and not query.get("continue"):
            at = revision(asked)
            if at > self.store.revision:
                raise errors.too_large_resource_version(at, self.store.revision)
            if query.get("resourceVersionMatch") == "Exact":
                exact = at  # else NotOlderThan: now will do
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise errors.bad_request(f"limit: {query['limit']!r} is not a number") from None
        items, listed_at, token, remaining = self.store.list(
            rtype.storage, call.namespace, selection.selects, limit,
            query.get("continue", ""), exact)
        metadata: dict[str, Any] = {"resourceVersion": str(listed_at)}
        if token:
            metadata.update({"continue": token, "remainingItemCount": remaining})
        # Items of built-in lists carry no kind (as client-go knows); a custom resource's do.
        if rtype.custom:
            shown = [self._out(rtype, obj) for obj in items]
        else:
            shown = [{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
                     for obj in items]
        return _json({"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                      "metadata": metadata, "items": shown})

    # -- writes -------------------------------------------------------------------------

    def _identity(self, call: _Call, body: Any) -> dict[str, Any]:
        """The body as an object of the URL's kind, namespace and name (400 otherwise)."""
        rtype = call.rtype
        if not isinstance(body, dict) or not isinstance(body.setdefault("metadata", {}), dict):
            raise errors.bad_request("the body is not a Kubernetes object")
        body.setdefault("apiVersion", rtype.api_version)
        body.setdefault("kind", rtype.kind)
        if (body["apiVersion"], body["kind"]) != (rtype.api_version, rtype.kind):
            raise errors.bad_request(
                f"the API version in the data ({body['apiVersion']}, kind {body['kind']}) "
                f"does not match the expected API version ({rtype.api_version}, kind "
                f"{rtype.kind})")
        metadata = body["metadata"]
        if rtype.namespaced:
            if metadata.get("namespace") not in (None, "", call.namespace):
                raise errors.bad_request("the namespace of the provided object does not "
                                         "match the namespace sent on the request")
            metadata["namespace"] = call.namespace
        else:
            metadata.pop("namespace", None)
        if call.name and metadata.get("name", call.name) != call.name:
            raise errors.bad_request(f"the name of the object ({metadata['name']}) does not "
                                     f"match the name on the URL ({call.name})")
        if call.name:
            metadata["name"] = call.name
        return body

    async def _create(self, call: _Call) -> Response:
        body = self._identity(call, call.body())
        metadata = body["metadata"]
        if not metadata.get("name") and metadata.get("generateName"):
            alphabet = string.ascii_lowercase + string.digits
            metadata["name"] = metadata["generateName"] + "".join(
                secrets.choice(alphabet) for _ in range(5))
        if not metadata.get("name"):
            raise errors.invalid(call.rtype.kind, "", [
                ("metadata.name", "Required value: name or generateName is required")],
                call.rtype.group)
        if metadata.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        call.name = metadata["name"]
        if call.rtype.storage == ("", "services"):
            taken = {str(ip) for svc in self.store.objects(("", "services")).values()
                     for ip in (svc.get("spec") or {}).get("clusterIPs") or ()}
            objects.allocate_cluster_ip(body, self.service_cidr, taken)
        now = _now()
        new = objects.on_create(call.rtype, body, uid=str(uuid.uuid4()), now=now)
        apply.record_update(None, new, call.manager(), api_version=call.rtype.api_version,
                            now=now, keep=call.keep())
        return await self._commit(call, None, new)

    async def _update(self, call: _Call) -> Response:
        body = self._identity(call, call.body())
        old = self._existing(call)
        asked = body["metadata"].get("resourceVersion")
        if asked and asked != old["metadata"]["resourceVersion"]:
            raise errors.conflict(call.rtype.plural, call.name, call.rtype.group)
        new = objects.on_update(call.rtype, old, body, call.subresource)
        apply.record_update(old, new, call.manager(), api_version=call.rtype.api_version,
                            now=_now(), keep=call.keep())
        try:
            return await self._commit(call, old, new)
        except _Stale:
            raise errors.conflict(call.rtype.plural, call.name, call.rtype.group) from None

    async def _patch(self, call: _Call) -> Response:
        content_type = call.http.headers.get("content-type", "").split(";")[0].strip()
        for _ in range(5):  # kube-apiserver retries a patch whose object moved under it
            old = self.store.get(call.rtype.storage, call.key)
            if content_type == APPLY:
                new = self._applied(call, old)
            elif old is None:
                raise errors.not_found(call.rtype.plural, call.name, call.rtype.group)
            else:
                new = self._patched(call, old, content_type)
            try:
                return await self._commit(call, old, new)
            except _Stale:
                continue
        raise errors.conflict(call.rtype.plural, call.name, call.rtype.group)

    def _patched(self, call: _Call, old: dict[str, Any], content_type: str
                 ) -> dict[str, Any]:
        patch = call.body()
        try:
            if content_type == "application/json-patch+json":
                patched = json_patch(old, patch)
            elif content_type == "application/merge-patch+json":
                patched = merge_patch(old, patch)
            elif content_type == "application/strategic-merge-patch+json" and \
                    not call.rtype.custom:
                patched = strategic_merge(old, patch)
            else:
                raise errors.unsupported_media_type(content_type)
        except PatchError as exc:
            raise errors.ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(patched, dict) or _key_or_none(patched) != _key_or_none(old):
            raise errors.bad_request("a patch cannot change the object's name or namespace")
        if patched["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise errors.conflict(call.rtype.plural, call.name, call.rtype.group)
        new = objects.on_update(call.rtype, old, patched, call.subresource)
        apply.record_update(old, new, call.manager(), api_version=call.rtype.api_version,
                            now=_now(), keep=call.keep())
        return new

    def _applied(self, call: _Call, old: dict[str, Any] | None) -> dict[str, Any]:
        manager = call.http.query.get("fieldManager", "")
        if not manager:
            raise errors.invalid("PatchOptions", "", [
                ("fieldManager", "Required value: is required for apply patch")],
                "meta.k8s.io")
        try:
            config = yaml.safe_load(call.http.body or b"{}")
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error decoding YAML: {exc}") from None
        config = self._identity(call, config)
        if config["metadata"].get("managedFields") is not None:
            raise errors.bad_request("metadata.managedFields must be nil")
        now = _now()
        merged = apply.apply(old, config, manager, true(call.http.query.get("force")),
                             api_version=call.rtype.api_version, now=now, keep=call.keep(),
                             subresource=call.subresource)
        if old is None:
            if call.subresource:
                raise errors.not_found(call.rtype.plural, call.name, call.rtype.group)
            return objects.on_create(call.rtype, merged, uid=str(uuid.uuid4()), now=now)
        return objects.on_update(call.rtype, old, merged, call.subresource)

    async def _commit(self, call: _Call, old: dict[str, Any] | None, new: dict[str, Any]
                      ) -> Response:
        """Admit, validate and store a create (``old`` None) or an update."""
        rtype = call.rtype
        operation = "CREATE" if old is None else "UPDATE"
        if rtype.namespaced and self.store.get(("", "namespaces"), ("", call.namespace)) is None:
            raise errors.not_found("namespaces", call.namespace)
        if old is None and self.store.get(rtype.storage, call.key) is not None:
            raise errors.already_exists(rtype.plural, call.name, rtype.group)
        new = await self._admit(call, operation, new, old, mutating=True) or new
        found = objects.problems(rtype, new)
        if found:
            raise errors.invalid(rtype.kind, call.name, found, rtype.group)
        await self._admit(call, operation, new, old, mutating=False)
        current = self.store.get(rtype.storage, call.key)
        if old is None and current is not None:
            raise errors.already_exists(rtype.plural, call.name, rtype.group)
        if old is not None and (current is None or current["metadata"]["resourceVersion"]
                                != old["metadata"]["resourceVersion"]):
            raise _Stale()
        if call.dry_run:
            return _json(self._out(rtype, new), 201 if old is None else 200)
        stored = self.store.put(rtype.storage, new)
        self._after_put(rtype, stored)
        return _json(self._out(rtype, stored), 201 if old is None else 200)

    async def _admit(self, call: _Call, operation: str, new: dict[str, Any] | None,
                     old: dict[str, Any] | None, mutating: bool) -> dict[str, Any] | None:
        if call.rtype.group == _WEBHOOKS:
            return new  # webhooks are never asked about webhook configurations
        plural = "mutatingwebhookconfigurations" if mutating else \
            "validatingwebhookconfigurations"
        configurations = list(self.store.objects((_WEBHOOKS, plural)).values())
        if not configurations:
            return new
        namespace = self.store.get(("", "namespaces"), ("", call.namespace))
        labels = (namespace or {}).get("metadata", {}).get("labels") or {}
        request = admission.Attributes(operation, call.rtype, call.subresource,
                                       call.namespace, call.name,
                                       self._out(call.rtype, new) if new else None,
                                       self._out(call.rtype, old) if old else None,
                                       call.user, call.dry_run)
        admitted = await admission.admit(configurations, mutating, request, labels,
                                         lambda ns, name: self._services.get((ns, name)))
        if admitted is None or new is None:
            return new
        metadata = {**admitted.get("metadata", {}), "name": call.name}
        if call.rtype.namespaced:
            metadata["namespace"] = call.namespace
        return {**admitted, "metadata": metadata}

    def _after_put(self, rtype: ResourceType, stored: dict[str, Any]) -> None:
        if rtype.storage == CRDS.storage:
            self.registry.set_crd(stored)
        metadata = stored["metadata"]
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers") and \
                metadata.get("deletionGracePeriodSeconds", 0) == 0:
            self._remove(rtype, key_of(stored))  # the last finalizer went

    # -- deletes ------------------------------------------------------------------------

    async def _delete(self, call: _Call) -> Response:
        old = self._existing(call)
        options = call.body() or {}
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            if wanted and wanted != old["metadata"].get(field):
                raise errors.conflict(call.rtype.plural, call.name, call.rtype.group,
                                      f"Precondition failed: {field} in precondition: "
                                      f"{wanted}, {field} in object meta: "
                                      f"{old['metadata'].get(field)}")
        await self._admit(call, "DELETE", None, old, mutating=True)
        await self._admit(call, "DELETE", None, old, mutating=False)
        grace = options.get("gracePeriodSeconds", call.http.query.get("gracePeriodSeconds"))
        pending = self._deleting(call.rtype, old, None if grace is None else int(grace))
        if pending is not None:
            return _json(self._out(call.rtype, pending))
        if call.dry_run:
            return _json(self._deleted(call.rtype, old))
        gone = self._remove(call.rtype, call.key)
        return _json(self._deleted(call.rtype, gone))

    def _deleting(self, rtype: ResourceType, old: dict[str, Any], grace: int | None
                  ) -> dict[str, Any] | None:
        """The object marked for deletion, when it cannot go at once: it has finalizers,
        or it is a pod on a node, which the kubelet stops first (then deletes it with a
        grace period of 0)."""
        metadata = old["metadata"]
        on_node = rtype.storage == ("", "pods") and (old.get("spec") or {}).get("nodeName")
        if on_node and grace is None:
            grace = int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        grace = 0 if not on_node else grace or 0
        if not metadata.get("finalizers") and grace == 0:
            return None
        if metadata.get("deletionTimestamp") and \
                metadata.get("deletionGracePeriodSeconds", 0) <= grace:
            return old
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
        marked = {**old, "metadata": {**metadata, "deletionGracePeriodSeconds": grace,
                                      "deletionTimestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ")}}
        stored = self.store.put(rtype.storage, marked)
        self._after_put(rtype, stored)
        return self.store.get(rtype.storage, key_of(stored))

    def _remove(self, rtype: ResourceType, key: tuple[str, str]) -> dict[str, Any]:
        """Delete an object and what lives in it: a namespace's objects, a CRD's custom
        resources (kube-apiserver's controllers do it soon after)."""
        inside: set[tuple[str, str]] = set()
        if rtype.storage == ("", "namespaces"):
            inside = {other.storage for other in self.registry.types() if other.namespaced}
        if rtype.storage == CRDS.storage:
            inside = {served.storage for served in self.registry.remove_crd(key[1])}
        for storage in sorted(inside):
            for inner in list(self.store.objects(storage)):
                if rtype.storage == CRDS.storage or inner[0] == key[1]:
                    self.store.delete(storage, inner)
        return self.store.delete(rtype.storage, key)

    def _deleted(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if rtype.returns_deleted:
            return self._out(rtype, obj)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": obj["metadata"]["name"], "group": rtype.group,
                            "kind": rtype.plural, "uid": obj["metadata"].get("uid", "")}}

    async def _delete_collection(self, call: _Call) -> Response:
        selection = Selection(call.rtype, call.http.query)
        for key, obj in list(self.store.objects(call.rtype.storage).items()):
            if (not call.namespace or key[0] == call.namespace) and selection.selects(obj):
                one = _Call(call.rtype, key[0], key[1], "", call.http, call.user)
                with contextlib.suppress(errors.ApiError):
                    await self._delete(one)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success"})


def _key_or_none(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or "name" not in metadata:
        return None
    return key_of(obj)


def _found(document: dict[str, Any] | None) -> dict[str, Any]:
    if document is None:
        raise errors.no_such_path()
    return document


@contextlib.contextmanager
def running(directory: Path, **options: Any) -> Iterator[FakeKubeApi]:
    """A ``FakeKubeApi`` serving on 127.0.0.1 from a thread of its own, until the block
    ends; ``options`` go to ``FakeKubeApi``."""
    api = FakeKubeApi(directory, **options)
    with anyio.from_thread.start_blocking_portal() as portal:
        portal.start_task(api.serve)
        api._portal = portal
        try:
            yield api
        finally:
            api._portal = None
            portal.call(portal.stop, True)
