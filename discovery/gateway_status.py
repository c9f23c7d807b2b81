"""Gateway API status, written back to the cluster by the replica that leads.

Discovery computes the status of every Gateway API object it converts
(`pilotfish.core.gateway_api.status`); on a cluster the replica holding the
``istio-gateway-status-leader`` Lease (`discovery.leader`) writes it to each object's
``/status`` subresource, as istiod's gateway controller does:

- only where it differs from what the object holds, compared without
  ``lastTransitionTime``, so a rebuild that changes nothing writes nothing;
- a condition whose status is unchanged keeps its ``lastTransitionTime``; a new one, or one
  whose status flipped, gets the time of the write (the Gateway API requires the field);
- in the lists controllers share (a route's ``parents``, a policy's ``ancestors``) only the
  entries whose ``controllerName`` is ``istio.io/gateway-controller`` are ours: others'
  entries are left as they are, and ours are removed when we no longer have any;
- each write is a merge patch carrying the ``resourceVersion`` read, so a concurrent
  change is a 409 and is looked at again next pass, not overwritten.

A status write moves the object's ``resourceVersion`` but neither its spec nor its
generation, and the source keeps neither a custom resource's status nor its
``resourceVersion`` (`pilotfish.plugins.kube.objects`), so the write is no change to the
store: nothing is rebuilt, nothing written again.

What to write is decided over data (`status_patch`); the `StatusWriter` lists the kinds
and writes, after every rebuild whose statuses differ from those last written, every
``interval`` seconds in any case, and sooner after a failed write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import attrs

from pilotfish.core.gateway_api.status import CONTROLLER
from pilotfish.plugins.kube.client import ApiError, Client

log = logging.getLogger("pilotfish.gateway_status")

INTERVAL = 60.0
RETRY = 5.0  # after a failed write (at most ``interval``)
MERGE_PATCH = "application/merge-patch+json"
# Lists of entries per controller: only ours (by controllerName) are ours to write.
SHARED = ("parents", "ancestors")
# The Gateway API's CRDs' plurals.
PLURALS = {"GatewayClass": "gatewayclasses", "Gateway": "gateways",
           "HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes", "TLSRoute": "tlsroutes",
           "TCPRoute": "tcproutes", "BackendTLSPolicy": "backendtlspolicies"}
CLUSTER_SCOPED = frozenset({"GatewayClass"})


def now_time() -> str:
    """A Kubernetes Time (RFC 3339, seconds, UTC): conditions' ``lastTransitionTime``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def without_times(value: Any) -> Any:
    """``value`` with every ``lastTransitionTime`` left out (for comparing)."""
    if isinstance(value, Mapping):
        return {k: without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def timed(conditions: Iterable[Mapping[str, Any]], held: Iterable[Mapping[str, Any]] | None,
          now: str) -> list[dict[str, Any]]:
    """``conditions`` with their ``lastTransitionTime``: the one held for a condition of the
    same type and status, else ``now``."""
    before = {c.get("type"): c for c in held or () if isinstance(c, Mapping)}
    out = []
    for condition in conditions:
        old = before.get(condition.get("type"))
        kept = (old.get("lastTransitionTime") if old is not None
                and old.get("status") == condition.get("status") else None)
        out.append({**condition, "lastTransitionTime": kept or now})
    return out


def _entry_key(entry: Mapping[str, Any]) -> str:
    ref = entry.get("parentRef", entry.get("ancestorRef"))
    return json.dumps(ref, sort_keys=True)


def _by(items: Iterable[Any] | None, key: Callable[[Mapping[str, Any]], Any]
        ) -> dict[Any, Mapping[str, Any]]:
    return {key(item): item for item in items or () if isinstance(item, Mapping)}


def _with_times(computed: Mapping[str, Any], held: Mapping[str, Any], now: str
                ) -> dict[str, Any]:
    """A status body (or a listener's, or a shared list's entry) with its conditions
    timed against what the object holds."""
    out = dict(computed)
    if "conditions" in computed:
        out["conditions"] = timed(computed["conditions"], held.get("conditions"), now)
    if "listeners" in computed:
        listeners = _by(held.get("listeners"), lambda item: item.get("name"))
        out["listeners"] = [_with_times(item, listeners.get(item.get("name")) or {}, now)
                            for item in computed["listeners"]]
    return out


def status_patch(held: Mapping[str, Any] | None, computed: Mapping[str, Any] | None,
                 now: str) -> dict[str, Any] | None:
    """The ``status`` of a merge patch that brings ``held`` (what the object has) to
    ``computed`` (what discovery found; None: the object is not ours to describe, but our
    entries in shared lists go), or None when nothing differs but transition times.

    The status of an object without shared lists (a Gateway, a GatewayClass) is ours
    whole: the patch sets it, and clears fields the object holds that we did not compute."""
    held = held or {}
    patch: dict[str, Any] = {}
    if computed is not None:
        own = {k: v for k, v in computed.items() if k not in SHARED}
        patch.update(_with_times(own, held, now))
        if not any(key in computed for key in SHARED):  # a route's other fields: not ours
            patch.update({k: None for k in held if k not in SHARED and k not in own})
    for key in SHARED:
        entries = [e for e in held.get(key) or () if isinstance(e, Mapping)]
        mine = [e for e in entries if e.get("controllerName") == CONTROLLER]
        wanted = list((computed or {}).get(key) or ())
        if not mine and not wanted:
            continue
        before = _by(mine, _entry_key)
        patch[key] = [e for e in entries if e.get("controllerName") != CONTROLLER] + [
            _with_times(entry, before.get(_entry_key(entry)) or {}, now) for entry in wanted]
    if without_times(patch) == without_times({k: held.get(k) for k in patch}):
        return None
    return patch


def collection_path(api_version: str, kind: str) -> str:
    """Where a Gateway API kind is listed, across namespaces."""
    return f"/apis/{api_version}/{PLURALS[kind]}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    where = "" if kind in CLUSTER_SCOPED else f"/namespaces/{namespace}"
    return f"/apis/{api_version}{where}/{PLURALS[kind]}/{name}"


@attrs.define
class StatusWriter:
    """Writes the computed statuses while its replica leads (see the module)."""

    client: Client
    # The statuses computed last (`Statuses.view()`: apiVersion, kind, namespace, name,
    # status), read on the event loop.
    view: Callable[[], list[dict[str, Any]]]
    interval: float = INTERVAL
    writes: int = attrs.field(default=0, init=False)
    failures: int = attrs.field(default=0, init=False)
    # Kinds seen with a status (kind → apiVersion): listed for stale entries of ours too.
    _kinds: dict[str, str] = attrs.field(factory=dict, init=False)
    _written: list[dict[str, Any]] | None = attrs.field(default=None, init=False)
    _wake: anyio.Event | None = attrs.field(default=None, init=False)  # while running

    def changed(self) -> None:
        """The statuses may have changed (a rebuild): a pass, unless they are those
        written last."""
        if self._wake is not None:
            self._wake.set()

    def reconcile(self, view: list[dict[str, Any]]) -> bool:
        """One pass (blocking): list each kind, write what differs; False when a list or a
        write failed (the next pass comes sooner)."""
        computed = {(item["kind"], item["namespace"], item["name"]): item["status"]
                    for item in view if item["kind"] in PLURALS}
        for item in view:
            if item["kind"] in PLURALS:
                self._kinds[item["kind"]] = item["apiVersion"]
        ok = True
        now = now_time()
        for kind, api_version in sorted(self._kinds.items()):
            try:
                listed = self.client.request("GET", collection_path(api_version, kind))
            except ApiError as exc:
                log.warning("listing %s to write their status: %s", kind, exc)
                ok = False
                continue
            for obj in listed.get("items") or ():
                metadata = obj.get("metadata") or {}
                namespace = "" if kind in CLUSTER_SCOPED else str(metadata.get("namespace"))
                name = str(metadata.get("name"))
                patch = status_patch(obj.get("status"), computed.get((kind, namespace, name)),
                                     now)
                if patch is not None:
                    ok &= self._write(api_version, kind, namespace, name,
                                      str(metadata.get("resourceVersion") or ""), patch)
        return ok

    def _write(self, api_version: str, kind: str, namespace: str, name: str, version: str,
               status: dict[str, Any]) -> bool:
        what = f"{kind} {namespace + '/' if namespace else ''}{name}"
        try:
            self.client.request(
                "PATCH", object_path(api_version, kind, namespace, name) + "/status",
                body={"metadata": {"resourceVersion": version}, "status": status},
                content_type=MERGE_PATCH)
        except ApiError as exc:
            self.failures += 1
            if exc.status in (404, 409):  # deleted or changed meanwhile: look again
                log.debug("status of %s not written: %s; looking again", what, exc)
            else:
                log.warning("could not write the status of %s: %s; trying again", what, exc)
            return False
        self.writes += 1
        log.info("wrote the status of %s", what)
        return True

    async def run(self) -> None:
        """Pass now, then after every change of the statuses, every ``interval`` seconds,
        and ``RETRY`` seconds after a failure; until cancelled (the lead lost)."""
        self._wake, self._written = anyio.Event(), None
        try:
            wait = 0.0
            while True:
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                due = not self._wake.is_set()  # the interval (or the retry) is up
                self._wake = anyio.Event()
                view = self.view()
                if not due and view == self._written:
                    wait = self.interval
                    continue
                try:
                    ok = await anyio.to_thread.run_sync(self.reconcile, view,
                                                        abandon_on_cancel=True)
                except Exception:
                    log.exception("writing the Gateway API status failed; trying again")
                    ok = False
                self._written = view if ok else None
                wait = self.interval if ok else min(RETRY, self.interval)
        finally:
            self._wake = None
