"""The CA on a cluster: its root in a Secret, published to every namespace and to the webhooks.

As istiod does it:

- **The root** (``SecretRootStore``): the plugged-in ``cacerts`` Secret of discovery's
  namespace when there is one (Istio's file names, or a ``kubernetes.io/tls`` Secret's
  ``tls.crt``/``tls.key``/``ca.crt``); else ``istio-ca-secret``, which the first replica
  creates with a new self-signed root. Replicas that race to create it all re-read it after
  a 409 Conflict, so every replica signs with the one root stored first.
- **The root to workloads** (``RootPublisher``): the ``istio-ca-root-cert`` ConfigMap
  (key ``root-cert.pem``, label ``istio.io/config: "true"``) in every namespace but the
  ones Istio leaves alone, put back when someone deletes or edits it, and made in a
  namespace created later.
- **The root to the API server**: the ``caBundle`` of every webhook in the configurations
  pilotfish installs (``istio-sidecar-injector[-REV]``, ``istio-validator[-REV]-NAMESPACE``),
  so the API server trusts the webhooks' serving certificate. A configuration not
  installed is skipped.

What to change is decided over data (``configmap_changes``, ``ca_bundle_patch``); the
publisher only lists, compares and writes: at start, whenever its watches (namespaces, the
root ConfigMaps, the two webhook configurations) see a change, and every ``interval``
seconds in any case. Writes are made only where something differs, and its own writes'
events cost one pass that writes nothing.

Discovery runs two publishers (``parts``): the ConfigMaps' only on the replica holding the
``istio-namespace-controller-election`` Lease (`pilotfish.discovery.leader`), as istiod's
namespace controller; the ``caBundle``'s on every replica, as istiod's webhook patcher (a
JSON patch that tests the ``resourceVersion``, so replicas never overwrite each other).
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from pilotfish.core.backoff import Backoff
from pilotfish.core.security.provider import CaSetupError
from pilotfish.plugins.kube.client import ApiError, Client

log = logging.getLogger("pilotfish.ca")

CACERTS, CA_SECRET = "cacerts", "istio-ca-secret"
SECRET_TYPE = "istio.io/ca-root"
# A kubernetes.io/tls Secret's keys → Istio's file names (Istio accepts both for cacerts).
TLS_KEYS = {"tls.crt": "ca-cert.pem", "tls.key": "ca-key.pem", "ca.crt": "root-cert.pem"}
ROOT_CONFIGMAP, ROOT_KEY = "istio-ca-root-cert", "root-cert.pem"
CONFIG_LABEL = "istio.io/config"
# inject.IgnoredNamespaces: Istio writes no root ConfigMap there.
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease",
                                "local-path-storage"})
INTERVAL = 60.0  # a full pass even when the watches saw nothing
WATCH_SECONDS = 300
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def _secret_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


def secret_files(secret: Mapping[str, Any], where: str) -> dict[str, str]:
    """A Secret's data as the CA's files (PEM text by Istio's file names)."""
    found: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            text = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, ValueError) as exc:
            raise CaSetupError(f"{where}: data.{key} is not base64-encoded text") from exc
        found[key] = text
    if "ca-cert.pem" not in found and "tls.crt" in found:
        found = {TLS_KEYS.get(key, key): text for key, text in found.items()}
    return found


UNREACHABLE_WAIT = 300.0  # how long start-up waits for an API server that does not answer


class SecretRootStore:
    """The root shared by every replica, in Secrets of discovery's namespace (blocking).

    At start the API server may not answer yet (a replica scheduled as the control plane
    comes up): a request it cannot answer (no connection, a 5xx, 429) is tried again with
    client-go's backoff for up to ``wait`` seconds, each retry logged, before giving up."""

    def __init__(self, client: Client, namespace: str = "istio-system", *,
                 wait: float = UNREACHABLE_WAIT,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.namespace = namespace
        self.wait, self.sleep = wait, sleep

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        backoff, waited = Backoff(0.8, 30.0, 2.0), 0.0
        while True:
            try:
                return self.client.request(method, path, body=body)
            except ApiError as exc:
                if not (exc.status == 0 or exc.status == 429 or exc.status >= 500) or \
                        waited >= self.wait:
                    raise
                delay = backoff.next(random.random())
                log.warning("the API server at %s did not answer %s %s (%s); trying again "
                            "in %.1fs", self.client.host, method, path, exc, delay)
                self.sleep(delay)
                waited += delay

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", _secret_path(self.namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise CaSetupError(f"cannot read Secret {self.namespace}/{name} at "
                               f"{self.client.host}: {exc}") from exc

    def load_or_create(self, make: Callable[[], Mapping[str, str]]
                       ) -> tuple[Mapping[str, str], str]:
        for name in (CACERTS, CA_SECRET):
            secret = self._get(name)
            if secret is not None:
                where = f"Secret {self.namespace}/{name}"
                origin = f"{where} (plugged in)" if name == CACERTS else where
                return secret_files(secret, where), origin
        files = make()
        body = {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
                "metadata": {"name": CA_SECRET, "namespace": self.namespace},
                "data": {key: base64.b64encode(text.encode()).decode()
                         for key, text in files.items()}}
        where = f"Secret {self.namespace}/{CA_SECRET}"
        try:
            self._request("POST", _secret_path(self.namespace), body=body)
        except ApiError as exc:
            if exc.status == 404:
                raise CaSetupError(f"cannot create {where} at {self.client.host}: namespace "
                                   f"{self.namespace!r} does not exist (the install creates "
                                   f"it; discovery keeps the CA's root there): {exc}") from exc
            if exc.status != 409:
                raise CaSetupError(f"cannot create {where} at {self.client.host}: "
                                   f"{exc}") from exc
            # Another replica stored its root first: use that one, as every replica will.
            secret = self._get(CA_SECRET)
            if secret is None:
                raise CaSetupError(f"{where}: created by someone else, then gone") from exc
            log.info("%s was created by another replica meanwhile; using it", where)
            return secret_files(secret, where), where
        log.info("stored the new self-signed root in %s", where)
        return files, f"{where} (new self-signed root)"


# -- what to change (sans-IO) --------------------------------------------------------------


@attrs.frozen
class ConfigMapChanges:
    create: tuple[str, ...] = ()  # namespaces without the ConfigMap
    fix: tuple[str, ...] = ()  # namespaces whose ConfigMap holds something else


def configmap_changes(namespaces: Iterable[Mapping[str, Any]],
                      configmaps: Iterable[Mapping[str, Any]], root_pem: str
                      ) -> ConfigMapChanges:
    """Where ``istio-ca-root-cert`` is missing or wrong: every active namespace but the
    ignored ones must hold it with the root and the label."""
    held = {(cm.get("metadata") or {}).get("namespace"): cm for cm in configmaps}
    create, fix = [], []
    for namespace in namespaces:
        name = str((namespace.get("metadata") or {}).get("name") or "")
        phase = (namespace.get("status") or {}).get("phase")
        if not name or name in IGNORED_NAMESPACES or phase == "Terminating":
            continue
        cm = held.get(name)
        if cm is None:
            create.append(name)
        elif ((cm.get("data") or {}).get(ROOT_KEY) != root_pem
              or ((cm.get("metadata") or {}).get("labels") or {}).get(CONFIG_LABEL) != "true"):
            fix.append(name)
    return ConfigMapChanges(tuple(sorted(create)), tuple(sorted(fix)))


def root_configmap(namespace: str, root_pem: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIGMAP, "namespace": namespace,
                         "labels": {CONFIG_LABEL: "true"}},
            "data": {ROOT_KEY: root_pem}}


def webhook_configuration_names(namespace: str, revision: str = "") -> dict[str, str]:
    """The configurations pilotfish installs (``webhook-config``) → their resource path."""
    suffix = f"-{revision}" if revision else ""
    return {f"istio-sidecar-injector{suffix}": "mutatingwebhookconfigurations",
            f"istio-validator{suffix}-{namespace}": "validatingwebhookconfigurations"}


def ca_bundle_patch(configuration: Mapping[str, Any], root_pem: str) -> list[dict[str, Any]]:
    """A JSON patch setting every webhook's ``clientConfig.caBundle`` to the root (empty
    when all do already); it fails if the configuration changed since it was read."""
    bundle = base64.b64encode(root_pem.encode()).decode()
    operations: list[dict[str, Any]] = [
        {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle}
        for index, hook in enumerate(configuration.get("webhooks") or [])
        if (hook.get("clientConfig") or {}).get("caBundle") != bundle]
    if not operations:
        return []
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
            *operations]


# -- writing it (blocking calls, run in a worker thread) ------------------------------------


@attrs.define
class RootPublisher:
    """Keeps the root ConfigMaps and the webhooks' ``caBundle`` current (see the module)."""

    client: Client
    root_pem: Callable[[], str]
    namespace: str = "istio-system"
    revision: str = ""
    interval: float = INTERVAL
    # What this publisher keeps: the root ConfigMaps (one replica at a time, behind the
    # namespace controller's Lease), the webhooks' caBundle (every replica), or both.
    parts: frozenset[str] = frozenset({"configmaps", "webhooks"})
    writes: int = attrs.field(default=0, init=False)
    # Configurations not installed (said once).
    _missing: set[str] = attrs.field(factory=set, init=False)
    _wake: anyio.Event | None = attrs.field(default=None, init=False)  # while running

    def reconcile(self) -> None:
        """One pass; a failure of one write is logged and leaves the others done."""
        root = self.root_pem()
        if "configmaps" in self.parts:
            self._configmaps(root)
        if "webhooks" in self.parts:
            self._webhooks(root)

    def _configmaps(self, root: str) -> None:
        namespaces = self.client.request("GET", "/api/v1/namespaces").get("items") or []
        configmaps = self.client.request(
            "GET", "/api/v1/configmaps",
            {"fieldSelector": f"metadata.name={ROOT_CONFIGMAP}"}).get("items") or []
        changes = configmap_changes(namespaces, configmaps, root)
        for namespace in changes.create:
            self._write(f"create ConfigMap {namespace}/{ROOT_CONFIGMAP}", "POST",
                        f"/api/v1/namespaces/{namespace}/configmaps",
                        root_configmap(namespace, root), conflict_ok=True)
        for namespace in changes.fix:
            self._write(f"restore ConfigMap {namespace}/{ROOT_CONFIGMAP}", "PATCH",
                        f"/api/v1/namespaces/{namespace}/configmaps/{ROOT_CONFIGMAP}",
                        {"metadata": {"labels": {CONFIG_LABEL: "true"}},
                         "data": {ROOT_KEY: root}}, MERGE_PATCH)

    def _webhooks(self, root: str) -> None:
        for name, plural in webhook_configuration_names(self.namespace, self.revision).items():
            path = f"{WEBHOOKS}/{plural}/{name}"
            try:
                configuration = self.client.request("GET", path)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                if name not in self._missing:
                    log.info("%s %s is not installed; its caBundle is not kept", plural, name)
                    self._missing.add(name)
                continue
            self._missing.discard(name)
            patch = ca_bundle_patch(configuration, root)
            if patch:
                self._write(f"set caBundle of {plural} {name}", "PATCH", path, patch,
                            JSON_PATCH, conflict_ok=True)

    def _write(self, what: str, method: str, path: str, body: Any,
               content_type: str = "application/json", conflict_ok: bool = False) -> None:
        try:
            self.client.request(method, path, body=body, content_type=content_type)
        except ApiError as exc:
            # 409 on create, 422 on a failed test: someone wrote meanwhile; next pass looks.
            if conflict_ok and exc.status in (409, 422):
                log.debug("%s: %s; looking again next pass", what, exc)
                return
            log.warning("could not %s: %s", what, exc)
            return
        self.writes += 1
        log.info("%s", what)

    def watched(self) -> list[tuple[str, dict[str, str]]]:
        """What a change of calls for a pass: namespaces, the root ConfigMaps, the webhook
        configurations (path, and the list's query)."""
        found: list[tuple[str, dict[str, str]]] = []
        if "configmaps" in self.parts:
            found += [("/api/v1/namespaces", {}),
                      ("/api/v1/configmaps",
                       {"fieldSelector": f"metadata.name={ROOT_CONFIGMAP}"})]
        if "webhooks" in self.parts:
            found += [(f"{WEBHOOKS}/{plural}", {"fieldSelector": f"metadata.name={name}"})
                      for name, plural in webhook_configuration_names(self.namespace,
                                                                      self.revision).items()]
        return found

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Reconcile now (before ``started``), then whenever a watch sees a change, and
        every ``interval`` seconds in any case (a watch that keeps failing loses nothing)."""
        self._wake = anyio.Event()
        async with anyio.create_task_group() as tg:
            await self._pass()
            for path, query in self.watched():
                tg.start_soon(self._follow, path, query)
            task_status.started()
            while True:
                with anyio.move_on_after(self.interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self._pass()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _pass(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.reconcile, abandon_on_cancel=True)
        except ApiError as exc:
            log.warning("publishing the root: %s; trying again in %gs", exc, self.interval)
        except Exception:
            log.exception("publishing the root failed; trying again in %gs", self.interval)

    async def _follow(self, path: str, query: Mapping[str, str]) -> None:
        """Wake the publisher on every change of ``path``: list (for the version to watch
        from, and a pass, as changes may have been missed meanwhile), then watch."""
        while True:
            try:
                listed = await anyio.to_thread.run_sync(
                    self.client.request, "GET", path, {**query, "limit": "1"})
                version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
                self._poke()
                watch = await anyio.to_thread.run_sync(self.client.watch, path, {
                    **query, "watch": "true", "resourceVersion": version,
                    "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)})
            except ApiError as exc:
                log.debug("watching %s: %s; again in %gs", path, exc, self.interval)
                await anyio.sleep(self.interval)
                continue
            interrupted = False
            try:
                while True:
                    try:
                        events = await anyio.to_thread.run_sync(watch.read,
                                                                abandon_on_cancel=True)
                    except anyio.get_cancelled_exc_class():
                        interrupted = True
                        watch.interrupt()
                        raise
                    if events is None:
                        break
                    if any(event.get("type") != "BOOKMARK" for event in events):
                        self._poke()  # an ERROR (410 Gone) too: the next list resumes
            except ApiError as exc:
                log.debug("watch of %s broke off: %s", path, exc)
            finally:
                if not interrupted:
                    watch.close()
