"""Leader election with a Lease (``coordination.k8s.io/v1``), as client-go's does it.

Some of discovery's work on a cluster is done by one replica at a time, as in istiod: the
Gateway API status write-back (Lease ``istio-gateway-status-leader``) and the root
ConfigMaps in every namespace (``istio-namespace-controller-election``). Each is a Lease
in discovery's namespace; the replica whose identity it holds leads:

- **acquire**: a Lease that does not exist is created with our identity; one whose holder
  is empty, or has not renewed it for ``leaseDurationSeconds`` as measured on *our* clock
  (the time we last saw its record change, not its ``renewTime``: clocks differ), is taken
  over, ``acquireTime`` set and ``leaseTransitions`` counted up;
- **renew**: every ``retry_period`` the leader writes ``renewTime``; a renewal that has not
  succeeded for ``renew_deadline`` (shorter than the lease) ends the leadership before
  another replica may take over;
- **optimistic concurrency**: every write carries the ``resourceVersion`` read; a 409
  Conflict means another replica wrote first, which won;
- **release**: a leader that stops cleanly clears ``holderIdentity`` (and sets a 1 s
  duration), so another replica takes over at its next try rather than a lease later.

Timing is Istio's: a 30 s lease, renewed within 15 s, tried every 7.5 s (``Timing``).
`Election` decides (sans-IO: the lease read, the time, in; the write to make out); the
`LeaderElection` runner makes the calls in worker threads and runs the work registered with
`add_run` while it leads, cancelling it as soon as leadership is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from pilotfish.plugins.kube.client import ApiError, Client

log = logging.getLogger("pilotfish.leader")

GATEWAY_STATUS = "istio-gateway-status-leader"
NAMESPACE_CONTROLLER = "istio-namespace-controller-election"
LEASE_DURATION = 30.0  # Istio's ttl
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
RELEASE_TIMEOUT = 5.0


def micro_time(at: float) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC) for a ``time.time()``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def identity(environ: Mapping[str, str] = os.environ) -> str:
    """Who we are in a Lease: the pod's name (``POD_NAME``, as istiod reads it) or the
    host's, with a random suffix so that a restarted replica is a new holder (client-go's
    advice)."""
    name = environ.get("POD_NAME") or socket.gethostname()
    return f"{name}_{uuid.uuid4()}"


@attrs.frozen
class Timing:
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = LEASE_DURATION / 2
    retry_period: float = LEASE_DURATION / 4

    @classmethod
    def for_lease(cls, duration: float) -> Timing:
        """Istio's ratios: renew within half the lease, try every quarter of it."""
        return cls(duration, duration / 2, duration / 4)


@attrs.frozen
class Record:
    """A Lease's ``spec``, as leader election reads it."""

    holder: str = ""
    duration: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(str(spec.get("holderIdentity") or ""),
                   int(spec.get("leaseDurationSeconds") or 0),
                   str(spec.get("acquireTime") or ""), str(spec.get("renewTime") or ""),
                   int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"holderIdentity": self.holder,
                                "leaseDurationSeconds": self.duration,
                                "leaseTransitions": self.transitions}
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


@attrs.frozen
class Write:
    """A write of the Lease: ``POST`` (create) or ``PUT`` (update, at ``resourceVersion``)."""

    method: str
    body: dict[str, Any]


@attrs.define
class Election:
    """One replica's view of one Lease (sans-IO): what it last read, when that changed on
    our clock, and whether we lead."""

    namespace: str
    name: str
    identity: str
    timing: Timing = Timing()
    observed: Record | None = None
    observed_at: float = 0.0  # our monotonic clock, when the record last changed
    version: str = ""  # the resourceVersion last read or written
    leading: bool = False
    renewed_at: float = 0.0  # our clock, when we last acquired or renewed

    def _observe(self, lease: Mapping[str, Any], now: float) -> None:
        record = Record.of(lease)
        if record != self.observed:
            self.observed, self.observed_at = record, now
        self.version = str((lease.get("metadata") or {}).get("resourceVersion") or "")

    def held_by(self) -> str:
        return self.observed.holder if self.observed is not None else ""

    def next_write(self, lease: Mapping[str, Any] | None, now: float, wall: float
                   ) -> Write | None:
        """What to write, given the Lease as read now (None: not found); None when another
        replica holds it and its lease has not run out."""
        stamp = micro_time(wall)
        duration = max(1, round(self.timing.lease_duration))
        if lease is None:
            record = Record(self.identity, duration, stamp, stamp, 0)
            return Write("POST", self._lease(record, ""))
        self._observe(lease, now)
        old = self.observed or Record()
        ours = old.holder == self.identity
        if old.holder and not ours and now < self.observed_at + max(
                old.duration, 1):
            self.leading = False  # someone else holds it (it may have taken it from us)
            return None
        if ours:
            record = Record(self.identity, duration, old.acquire_time or stamp, stamp,
                            old.transitions)
        else:
            record = Record(self.identity, duration, stamp, stamp, old.transitions + 1)
        return Write("PUT", self._lease(record, self.version))

    def _lease(self, record: Record, version: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version:
            metadata["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": metadata, "spec": record.spec()}

    def written(self, lease: Mapping[str, Any], now: float) -> None:
        """Our write succeeded: we lead."""
        self._observe(lease, now)
        self.leading, self.renewed_at = True, now

    def conflict(self) -> None:
        """409: another replica wrote the Lease since we read it, and won."""
        self.leading = False

    def failed(self, now: float) -> None:
        """A renewal failed otherwise (the API server unreachable...): we lead on until the
        renew deadline, which ends before the lease would let another replica take over."""
        if self.leading and now >= self.renewed_at + self.timing.renew_deadline:
            self.leading = False

    def release(self, wall: float) -> Write | None:
        """The write that hands the Lease back (None unless we lead)."""
        if not self.leading or self.observed is None:
            return None
        stamp = micro_time(wall)
        record = Record("", 1, stamp, stamp, self.observed.transitions)
        return Write("PUT", self._lease(record, self.version))


@attrs.define
class LeaderElection:
    """Runs an `Election` against the API server, and the work that needs the lead."""

    client: Client
    election: Election
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _runs: list[Callable[[], Coroutine[Any, Any, None]]] = attrs.field(factory=list, init=False)
    _warned: bool = attrs.field(default=False, init=False)

    @property
    def leading(self) -> bool:
        return self.election.leading

    @property
    def name(self) -> str:
        return f"Lease {self.election.namespace}/{self.election.name}"

    def statistics(self) -> dict[str, Any]:
        """The Lease as this replica last saw it, and whether it leads (``/debug/leases``)."""
        election = self.election
        observed = election.observed or Record()
        return {"namespace": election.namespace, "name": election.name,
                "identity": election.identity, "leading": election.leading,
                "holder": observed.holder, "transitions": observed.transitions,
                "renewTime": observed.renew_time}

    def add_run(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``run`` each time we come to lead; it is cancelled when we stop leading."""
        self._runs.append(run)

    def _path(self, name: str = "") -> str:
        base = LEASES.format(namespace=self.election.namespace)
        return f"{base}/{name}" if name else base

    def try_acquire_or_renew(self) -> bool:
        """One try (blocking): read the Lease, write it if we may; True when we lead."""
        election = self.election
        try:
            try:
                lease: dict[str, Any] | None = self.client.request(
                    "GET", self._path(election.name))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                lease = None
            write = election.next_write(lease, self.clock(), self.wall())
            if write is None:
                return False
            path = self._path() if write.method == "POST" else self._path(election.name)
            stored = self.client.request(write.method, path, body=write.body)
        except ApiError as exc:
            if exc.status == 409:
                election.conflict()
                log.debug("%s: another replica wrote it first", self.name)
                return False
            election.failed(self.clock())
            (log.debug if self._warned else log.warning)(
                "%s: cannot acquire or renew: %s", self.name, exc)
            self._warned = True
            return election.leading
        self._warned = False
        election.written(stored, self.clock())
        return True

    def release(self) -> None:
        """Hand the Lease back (blocking), if we lead."""
        write = self.election.release(self.wall())
        self.election.leading = False
        if write is None:
            return
        try:
            self.client.request("PUT", self._path(self.election.name), body=write.body)
        except ApiError as exc:
            log.info("%s: not released (%s); it lapses in %gs", self.name, exc,
                     self.election.timing.lease_duration)
            return
        log.info("%s released", self.name)

    async def _try(self) -> bool:
        return await anyio.to_thread.run_sync(self.try_acquire_or_renew,
                                              abandon_on_cancel=True)

    async def _renew(self) -> bool:
        """A renewal, given up (and the lead with it) at the renew deadline: a call that
        hangs must not keep us leading past it."""
        election = self.election
        left = election.renewed_at + election.timing.renew_deadline - self.clock()
        with anyio.move_on_after(max(left, 0.0)):
            return await self._try()
        election.leading = False
        return False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Try for the lead every ``retry_period``; while leading, renew as often and run
        the work; hand the Lease back when cancelled."""
        retry = self.election.timing.retry_period
        task_status.started()
        try:
            while True:
                while not await self._try():
                    await anyio.sleep(retry)
                log.info("%s acquired by %s: leading", self.name, self.election.identity)
                async with anyio.create_task_group() as tg:
                    for run in self._runs:
                        tg.start_soon(run)
                    while True:
                        await anyio.sleep(retry)
                        if not await self._renew():
                            break
                    tg.cancel_scope.cancel()
                log.warning("%s lost (now held by %r): no longer leading", self.name,
                            self.election.held_by())
        finally:
            # Bounded: an API server that does not answer must not hold up the stop (the
            # lease then lapses).
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
                await anyio.to_thread.run_sync(self.release, abandon_on_cancel=True)
