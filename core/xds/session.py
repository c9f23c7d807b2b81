"""The sans-IO xDS session: one per stream, state-of-the-world or delta.

It knows what each type's subscription is, what the proxy holds, which nonce was sent and
acknowledged, and the last NACK. It turns requests into decisions ("respond now" or not)
and, given the current resources for a type, plans the next response (or decides that
nothing needs sending). It never touches a socket or a clock: time is passed in, and the
transport (`pilotfish.core.xds.server`) does the sending.

Rules followed (Envoy's xds_protocol.rst, Istio's pilot/pkg/xds):

* Only listeners and clusters are wildcard types. A client that never named resources of
  such a type is subscribed to ``*``; after naming some, an empty list means nothing.
* SotW: every request carries the whole subscription. A request whose nonce is not the
  last one sent for its type is stale and ignored. An ACK with new names is answered with
  those names; an ACK with the same names is not answered (that would loop).
* Delta: subscription changes are honoured even with a stale nonce (the spec, not istiod).
  ``initial_resource_versions`` on a reconnect tells what the client already holds, so
  unchanged resources are not resent. Removed resources go in ``removed_resources``.
* NACK (``error_detail`` set): the message is recorded, the last ACKed version stays the
  proxy's truth, and nothing is resent until the resources change.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Mapping

import attrs

from pilotfish.core.xds import types
from pilotfish.core.xds.resources import Resource, ResourceSet, encode_delta, encode_sotw

WILDCARD = "*"


class Mode(enum.Enum):
    SOTW = "sotw"
    DELTA = "delta"


class Outcome(enum.Enum):
    INITIAL = "initial"  # first request for a type on this stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # nonce is not the last one sent: ignored (SotW) / not an ACK (delta)
    SUBSCRIPTION = "subscription"  # delta: names changed without an ACK
    UNSUBSCRIBE = "unsubscribe"  # SotW: empty names for a non-wildcard type


class SyncStatus(enum.Enum):
    """As istioctl proxy-status prints it (and CSDS's ConfigStatus)."""

    SYNCED = "SYNCED"
    NOT_SENT = "NOT SENT"
    STALE = "STALE"
    ERROR = "ERROR"


@attrs.frozen
class Decision:
    type_url: str
    outcome: Outcome
    respond: bool
    error: str = ""


@attrs.frozen
class Response:
    """What to send: the transport encodes it and calls `Session.sent` once written."""

    type_url: str
    version: str
    nonce: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...] = ()

    def encode(self, mode: Mode) -> bytes:
        """The DiscoveryResponse (SotW) or DeltaDiscoveryResponse, serialized."""
        if mode is Mode.SOTW:
            return encode_sotw(self.type_url, self.version, self.nonce, self.resources)
        return encode_delta(self.type_url, self.version, self.nonce, self.resources,
                            self.removed)


@attrs.define
class Watch:
    """Per-type state of one stream (istiod's WatchedResource)."""

    type_url: str
    wildcard: bool = False
    names: set[str] = attrs.field(factory=set)
    explicit: bool = False  # the client has named resources at least once
    # What the client holds as far as we know: name → resource version.
    known: dict[str, str] = attrs.field(factory=dict)
    # Fingerprint of the names as a SotW client last sent them (see Session.receive_sotw).
    names_key: int | None = None
    # Names that must be (re)sent on the next response even if the client has them.
    pending: set[str] = attrs.field(factory=set)
    # The next plan must respond even if nothing changed (first response, warming).
    must_respond: bool = True
    always_respond: bool = False
    # ResourceSet version the client is up to date with (fast path: nothing changed).
    seen_version: str = ""
    nonce_sent: str = ""
    nonce_acked: str = ""
    version_sent: str = ""
    version_acked: str = ""
    sent_at: float | None = None
    acked_at: float | None = None
    last_error: str = ""
    error_at: float | None = None
    # Subscribed names reported as absent (delta), so absence is reported once.
    reported_missing: set[str] = attrs.field(factory=set)
    responses: int = 0
    acks: int = 0
    nacks: int = 0

    @property
    def status(self) -> SyncStatus:
        if self.last_error:
            return SyncStatus.ERROR
        if not self.nonce_sent:
            return SyncStatus.NOT_SENT
        if self.nonce_acked == self.nonce_sent:
            return SyncStatus.SYNCED
        return SyncStatus.STALE

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names


def _interned(names: Iterable[str]) -> set[str]:
    """The names, each as the one string object every stream holds for it: thousands of
    streams watch the same thousand names, and keeping a copy per stream is most of what
    a stream costs in memory."""
    return {sys.intern(name) for name in names}


class Session:
    def __init__(self, mode: Mode, nonce_prefix: str = "") -> None:
        self.mode = mode
        self.watches: dict[str, Watch] = {}
        self._nonce_prefix = nonce_prefix
        self._counter = 0

    # -- reading requests --------------------------------------------------------------

    def receive_sotw(
        self,
        type_url: str,
        resource_names: Iterable[str],
        response_nonce: str,
        version_info: str,
        error: str | None,
        now: float,
        names_key: int | None = None,
    ) -> Decision:
        """``names_key``, when given, fingerprints ``resource_names`` as the client sent them
        (the transport hashes the request's encoded names): an ACK that carries the same
        key as the watch's names repeats them, and they are not read at all. SotW clients
        repeat every name they hold in every ACK, a thousand endpoints' names at scale."""
        watch = self.watches.get(type_url)
        if error is not None:
            return self._nack(watch, type_url, response_nonce, error, now)
        if watch is None or not response_nonce:
            names = _interned(resource_names)
            if not names and not types.is_wildcard(type_url):
                self.watches.pop(type_url, None)
                return Decision(type_url, Outcome.UNSUBSCRIBE, respond=False)
            watch = Watch(type_url)
            self._set_sotw_names(watch, names, names_key)
            watch.version_acked = version_info  # what the client held before reconnecting
            self._new_watch(watch)
            return Decision(type_url, Outcome.INITIAL, respond=True)
        if response_nonce != watch.nonce_sent:
            return Decision(type_url, Outcome.STALE, respond=False)
        self._ack(watch, response_nonce, version_info, now)
        old_wildcard = watch.wildcard
        added: set[str] = set()
        if names_key is None or names_key != watch.names_key or not (
                watch.names or watch.wildcard):
            names = _interned(resource_names)
            if not names and not watch.wildcard and not types.is_wildcard(type_url):
                # Istio: an empty list for a non-wildcard type unsubscribes.
                self.watches.pop(type_url, None)
                return Decision(type_url, Outcome.UNSUBSCRIBE, respond=False)
            if types.is_wildcard(type_url) or names != watch.names:
                old_names = watch.names
                self._set_sotw_names(watch, names, names_key)
                added = watch.names - old_names
                for name in old_names - watch.names:
                    watch.known.pop(name, None)
            watch.names_key = names_key
        respond = False
        if watch.always_respond:
            watch.always_respond = False
            watch.pending |= watch.names
            watch.must_respond = True
            respond = True
        if added or (watch.wildcard and not old_wildcard):
            watch.pending |= added
            watch.must_respond = True
            respond = True
        return Decision(type_url, Outcome.ACK, respond=respond)

    def _new_watch(self, watch: Watch) -> None:
        self.watches[watch.type_url] = watch
        # A new (or re-created) cluster watch means clusters will be (re)sent and must warm:
        # the next endpoints request is answered even if it looks like a plain ACK.
        dependent = types.WARMING_DEPENDENCIES.get(watch.type_url)
        if dependent in self.watches:
            self.watches[dependent].always_respond = True

    def _set_sotw_names(self, watch: Watch, names: set[str], key: int | None) -> None:
        watch.names_key = key
        if types.is_wildcard(watch.type_url):
            if WILDCARD in names or (not names and not watch.explicit):
                watch.wildcard = True
            else:
                watch.wildcard = False
        if names - {WILDCARD}:
            watch.explicit = True
        watch.names = names - {WILDCARD}

    def receive_delta(
        self,
        type_url: str,
        subscribe: Iterable[str],
        unsubscribe: Iterable[str],
        initial_versions: Mapping[str, str],
        response_nonce: str,
        error: str | None,
        now: float,
    ) -> Decision:
        subscribe = list(subscribe)
        unsubscribe = list(unsubscribe)
        watch = self.watches.get(type_url)
        if error is not None:
            return self._nack(watch, type_url, response_nonce, error, now)
        if watch is None:
            watch = Watch(type_url)
            named = _interned(subscribe) - {WILDCARD}
            if types.is_wildcard(type_url):
                watch.wildcard = WILDCARD in subscribe or not named
            watch.names = named
            watch.explicit = bool(named)
            watch.known = dict(initial_versions)
            if not types.is_wildcard(type_url):
                watch.names |= _interned(initial_versions)
            watch.names -= set(unsubscribe)
            self._new_watch(watch)
            return Decision(type_url, Outcome.INITIAL, respond=True)
        outcome = Outcome.SUBSCRIPTION
        if response_nonce:
            if response_nonce == watch.nonce_sent:
                self._ack(watch, response_nonce, "", now)
                outcome = Outcome.ACK
            else:
                outcome = Outcome.STALE  # still honour subscription changes below
        changed = False
        for name in subscribe:
            if name == WILDCARD:
                if not watch.wildcard:
                    watch.wildcard = True
                    changed = True
                continue
            watch.explicit = True
            watch.names.add(sys.intern(name))
            watch.pending.add(name)  # must be sent even if the client had it
            watch.reported_missing.discard(name)
            changed = True
        for name in unsubscribe:
            # Nothing to send for an unsubscribe: the client drops the resource itself.
            if name == WILDCARD:
                watch.wildcard = False
                continue
            watch.names.discard(name)
            watch.pending.discard(name)
            watch.reported_missing.discard(name)
            if not watch.wildcard:
                watch.known.pop(name, None)
        respond = changed
        if watch.always_respond:
            watch.always_respond = False
            respond = True
        if respond:
            watch.must_respond = True
        return Decision(type_url, outcome, respond=respond)

    def _ack(self, watch: Watch, nonce: str, version: str, now: float) -> None:
        watch.nonce_acked = nonce
        watch.version_acked = version or watch.version_sent
        watch.acked_at = now
        watch.last_error = ""
        watch.acks += 1

    def _nack(
        self, watch: Watch | None, type_url: str, nonce: str, error: str, now: float
    ) -> Decision:
        if watch is None or (nonce and nonce != watch.nonce_sent):
            return Decision(type_url, Outcome.STALE, respond=False, error=error)
        watch.last_error = error or "rejected (no message)"
        watch.error_at = now
        watch.nacks += 1
        return Decision(type_url, Outcome.NACK, respond=False, error=error)

    # -- planning responses -------------------------------------------------------------

    def plan(self, current: ResourceSet, *, force: bool = False) -> Response | None:
        """The response to send for ``current.type_url`` now, or None if nothing is due.

        ``force`` resends everything in the subscription (used for a full resync).
        """
        watch = self.watches.get(current.type_url)
        if watch is None:
            return None
        if not (force or watch.pending or watch.must_respond) and (
            watch.seen_version == current.version
        ):
            return None  # fast path: the set did not change since the client was sent it
        if self.mode is Mode.SOTW:
            response = self._plan_sotw(watch, current, force)
        else:
            response = self._plan_delta(watch, current, force)
        if response is None:
            watch.seen_version = current.version
            watch.pending.clear()
            watch.must_respond = False
        return response

    def _scope(self, watch: Watch, current: ResourceSet) -> list[Resource]:
        if watch.wildcard:
            return list(current.resources.values())
        names = watch.names
        return [r for name, r in current.resources.items() if name in names]

    def _difference(self, watch: Watch, current: ResourceSet, force: bool
                    ) -> tuple[frozenset[str], frozenset[str]] | None:
        """The set's difference from what the client holds, if the plan may look only at it:
        (changed, removed) names."""
        return None if force else current.difference(watch.seen_version)

    def _changed(self, watch: Watch, current: ResourceSet, force: bool) -> list[Resource]:
        """Resources in the client's scope it lacks, holds in another version, or must get."""
        difference = self._difference(watch, current, force)
        if difference is not None:
            names = difference[0] | watch.pending
            resources = current.resources
            return [
                resources[n] for n in sorted(names)
                if n in resources and watch.in_scope(n) and (
                    n in watch.pending or watch.known.get(n) != resources[n].version)
            ]
        scope = self._scope(watch, current)
        if force:
            return scope
        known = watch.known
        pending = watch.pending
        return [r for r in scope if r.name in pending or known.get(r.name) != r.version]

    def _plan_sotw(self, watch: Watch, current: ResourceSet, force: bool) -> Response | None:
        if types.is_wildcard(watch.type_url):
            # Full-state types: every response carries the whole set; absence deletes. The
            # fast path in plan() already found that something changed.
            return self._response(watch, current.version, self._scope(watch, current), ())
        # Non-full-state types: send only what the client lacks or must refresh.
        send = self._changed(watch, current, force)
        if not send:
            return None
        return self._response(watch, current.version, send, ())

    def _plan_delta(self, watch: Watch, current: ResourceSet, force: bool) -> Response | None:
        send = self._changed(watch, current, force)
        difference = self._difference(watch, current, force)
        if difference is not None:
            removed = [n for n in sorted(difference[1]) if n in watch.known]
        else:
            removed = [
                name for name in watch.known
                if name not in current.resources or not watch.in_scope(name)
            ]
        # Subscribed names that do not exist are reported once as removed ("not found").
        missing = [
            name for name in sorted(watch.names)
            if name not in current.resources and name not in watch.known
            and name not in watch.reported_missing
        ] if (watch.pending or watch.must_respond or difference is None) else []
        if not (send or removed or missing or watch.must_respond):
            return None
        return self._response(watch, current.version, send, (*removed, *missing))

    def _response(
        self, watch: Watch, version: str, send: list[Resource], removed: tuple[str, ...]
    ) -> Response:
        self._counter += 1
        nonce = f"{self._nonce_prefix}{self._counter}"
        return Response(watch.type_url, version, nonce, tuple(send), removed)

    def sent(self, response: Response, now: float) -> None:
        """The transport wrote ``response``: record it as the type's latest."""
        watch = self.watches.get(response.type_url)
        if watch is None:
            return
        watch.nonce_sent = response.nonce
        watch.version_sent = response.version
        watch.seen_version = response.version
        watch.sent_at = now
        watch.responses += 1
        watch.must_respond = False
        watch.pending.clear()
        if self.mode is Mode.SOTW and types.is_wildcard(response.type_url):
            # Full-state: the set version says it all; no per-name bookkeeping needed.
            watch.known = {}
        else:
            for resource in response.resources:
                watch.known[resource.name] = resource.version
            for name in response.removed:
                watch.known.pop(name, None)
                if name in watch.names:
                    watch.reported_missing.add(name)

    def invalidate(self, type_url: str, names: Iterable[str]) -> None:
        """Make the next plan resend these names (Envoy needs fresh EDS after a cluster
        is added or updated, or the cluster never finishes warming)."""
        watch = self.watches.get(type_url)
        if watch is None:
            return
        for name in names:
            if watch.in_scope(name):
                watch.pending.add(name)

    # -- reading state -------------------------------------------------------------------

    def watched_types(self) -> list[str]:
        return sorted(self.watches, key=types.order_key)

    def status(self) -> dict[str, SyncStatus]:
        return {url: w.status for url, w in self.watches.items()}
