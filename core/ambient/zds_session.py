"""ZDS's rules, both sides, as sans-IO state machines (``zds.py`` moves the packets).

ZDS (``istio.workload.zds``) is how Istio's CNI node agent hands ztunnel the pods of its node.
The agent listens on a unix ``SOCK_SEQPACKET`` socket and ztunnel connects; every packet holds
exactly one protobuf message, and the only file descriptor ever attached (``SCM_RIGHTS``) is
the pod's network namespace, on ``AddWorkload``. The conversation:

1. ztunnel says ``ZdsHello{version: V1}``;
2. the agent sends a snapshot: an ``add`` (with the netns) for every pod it holds, or a
   ``keep`` for one it knows but holds no netns for, then ``snapshot_sent``; ztunnel forgets
   every pod the snapshot did not name;
3. from then on, ``add`` and ``del`` as pods come and go.

Every request is answered by one ``Ack`` (``error`` empty on success) before the next is sent:
strict lockstep, so an ack always belongs to the one outstanding request, and ztunnel never
speaks unasked. Anything else is a ``ZdsError`` naming what arrived and what was expected —
the connection is then beyond repair and both sides drop it (ztunnel reconnects, the agent
sends a fresh snapshot).

``AgentSession`` is the agent's side, ``ZtunnelSession`` ztunnel's; ``check_packet`` holds
the per-packet rules (truncation, where a descriptor may travel) both apply to what they read.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Sequence
from typing import TypeVar

import attrs

from pilotfish.core.ambient import zds_wire
from pilotfish.core.protowire import Message, WireError

MAX_PACKET = 1024  # ztunnel's read buffer: a message that does not fit is an error
ACK_TIMEOUT = 5.0  # seconds for a request to be written and acknowledged (Istio's deadline)


class ZdsError(Exception):
    """The ZDS peer broke the protocol, refused a request, or did not answer in time; the
    message says which and what was expected."""


@attrs.frozen
class WorkloadInfo:
    """Who a pod is (``zds.WorkloadInfo``): what ztunnel needs to ask for its certificate."""

    name: str
    namespace: str
    service_account: str

    def message(self) -> zds_wire.WorkloadInfo:
        return zds_wire.WorkloadInfo(name=self.name, namespace=self.namespace,
                                    service_account=self.service_account)

    @classmethod
    def from_message(cls, info: zds_wire.WorkloadInfo) -> WorkloadInfo:
        return cls(name=info.name, namespace=info.namespace,
                   service_account=info.service_account)


def check_packet(data: bytes, fds: Sequence[int], flags: int, *, fd_allowed: bool) -> None:
    """The rules every received packet meets before it is parsed: nothing was cut off (a
    message or its descriptors), and a descriptor came only where one may. The caller
    closes ``fds`` when this raises."""
    if flags & socket.MSG_TRUNC:
        raise ZdsError(f"a packet longer than {MAX_PACKET} bytes was cut off (MSG_TRUNC)")
    if flags & socket.MSG_CTRUNC:
        raise ZdsError("a packet's file descriptors were cut off (MSG_CTRUNC)")
    if fds and not fd_allowed:
        raise ZdsError(f"{len(fds)} file descriptor(s) came with a message that may carry "
                       "none (only AddWorkload carries one: the pod's netns)")
    if not data:
        raise ZdsError("an empty packet (every packet holds one message)")


M = TypeVar("M", bound=Message)


def _parse(message: type[M], data: bytes) -> M:
    parsed = message()
    try:
        parsed.ParseFromString(data)
    except WireError as exc:
        raise ZdsError(f"not a {message.FULL_NAME}: {exc} "
                       f"({len(data)} bytes: {data[:32].hex()})") from None
    return parsed


# --- the agent's side ---------------------------------------------------------------------


class AgentState(enum.Enum):
    HELLO = "waiting for ztunnel's hello"
    SNAPSHOT = "sending the snapshot"
    READY = "snapshot acknowledged: adds and deletes"


@attrs.define
class AgentSession:
    """One ztunnel connection as the node agent sees it. ``request_*`` give the bytes of the
    next request (and record it as outstanding); ``receive`` takes each packet ztunnel sends
    and returns the error text of an Ack ("" for success)."""

    state: AgentState = AgentState.HELLO
    outstanding: str = ""  # the request awaiting its Ack ("" when none)

    def receive(self, data: bytes, fds: Sequence[int] = (), flags: int = 0) -> str | None:
        """A packet from ztunnel: the hello (returns None) or the Ack of the outstanding
        request (returns its error text)."""
        check_packet(data, fds, flags, fd_allowed=False)
        if self.state is AgentState.HELLO:
            hello = _parse(zds_wire.ZdsHello, data)
            if hello.version != zds_wire.V1:
                raise ZdsError(f"ztunnel's hello: version {hello.version} is not V1 (1), the "
                               "only version this agent speaks")
            self.state = AgentState.SNAPSHOT
            return None
        response = _parse(zds_wire.WorkloadResponse, data)
        if not self.outstanding:
            raise ZdsError("ztunnel sent a message with no request outstanding "
                           "(it answers each request with one Ack and says nothing else)")
        if response.WhichOneof("payload") != "ack":
            raise ZdsError(f"the answer to {self.outstanding} is not an Ack")
        if self.outstanding == "snapshot_sent" and not response.ack.error:
            self.state = AgentState.READY
        self.outstanding = ""
        error: str = response.ack.error
        return error

    def request_add(self, uid: str, info: WorkloadInfo) -> bytes:
        """``add`` (the caller attaches the netns descriptor)."""
        return self._request("add", zds_wire.WorkloadRequest(
            add=zds_wire.AddWorkload(uid=uid, workload_info=info.message())))

    def request_keep(self, uid: str) -> bytes:
        if self.state is not AgentState.SNAPSHOT:
            raise ZdsError(f"keep {uid}: only part of a snapshot ({self.state.value})")
        return self._request("keep", zds_wire.WorkloadRequest(
            keep=zds_wire.KeepWorkload(uid=uid)))

    def request_snapshot_sent(self) -> bytes:
        if self.state is not AgentState.SNAPSHOT:
            raise ZdsError(f"snapshot_sent: no snapshot is being sent ({self.state.value})")
        return self._request("snapshot_sent", zds_wire.WorkloadRequest(
            snapshot_sent=zds_wire.SnapshotSent()))

    def request_delete(self, uid: str) -> bytes:
        if self.state is not AgentState.READY:
            raise ZdsError(f"del {uid}: only after the snapshot ({self.state.value})")
        # ``del`` is a Python keyword: the field is set by name.
        return self._request("del", zds_wire.WorkloadRequest(**{"del": zds_wire.DelWorkload(
            uid=uid)}))

    def _request(self, kind: str, request: zds_wire.WorkloadRequest) -> bytes:
        if self.state is AgentState.HELLO:
            raise ZdsError(f"{kind}: ztunnel has not said hello yet")
        if self.outstanding:
            raise ZdsError(f"{kind}: {self.outstanding} is still waiting for its Ack "
                           "(one request at a time)")
        self.outstanding = kind
        return bytes(request.SerializeToString())


# --- ztunnel's side ---------------------------------------------------------------------


@attrs.frozen
class Add:
    uid: str
    info: WorkloadInfo
    netns_fd: int  # the receiver owns it


@attrs.frozen
class Keep:
    uid: str


@attrs.frozen
class Delete:
    uid: str


@attrs.frozen
class SnapshotSent:
    known: frozenset[str]  # every uid added or kept since the connection began


Request = Add | Keep | Delete | SnapshotSent


@attrs.define
class ZtunnelSession:
    """One connection to the node agent as ztunnel sees it: ``hello()`` first, then each
    packet to ``receive`` gives one request, to be answered with ``ack(error)``."""

    snapshot_done: bool = False
    awaiting_ack: bool = False
    known: set[str] = attrs.field(factory=set)

    def hello(self) -> bytes:
        return bytes(zds_wire.ZdsHello(version=zds_wire.V1).SerializeToString())

    def receive(self, data: bytes, fds: Sequence[int], flags: int = 0) -> Request:
        """A packet from the agent, its descriptors and recvmsg's flags → the request. On a
        ``ZdsError`` the caller closes ``fds``; on an ``Add`` the netns is the caller's."""
        check_packet(data, fds, flags, fd_allowed=True)
        if self.awaiting_ack:
            raise ZdsError("the agent sent a request before the previous one was acknowledged")
        request = _parse(zds_wire.WorkloadRequest, data)
        kind = request.WhichOneof("payload")
        if kind != "add" and fds:
            raise ZdsError(f"{kind}: came with {len(fds)} file descriptor(s); only "
                           "AddWorkload carries one (the pod's netns)")
        event: Request
        if kind == "add":
            if len(fds) != 1:
                raise ZdsError(f"add {request.add.uid}: expected the pod's netns as one file "
                               f"descriptor, got {len(fds)}")
            if not request.add.uid:
                raise ZdsError("add: the pod's uid is empty")
            event = Add(request.add.uid, WorkloadInfo.from_message(request.add.workload_info),
                        fds[0])
            self.known.add(event.uid)
        elif kind == "keep":
            if self.snapshot_done:
                raise ZdsError(f"keep {request.keep.uid}: only part of a snapshot, and the "
                               "snapshot was already sent")
            event = Keep(request.keep.uid)
            self.known.add(event.uid)
        elif kind == "del":
            event = Delete(getattr(request, "del").uid)
            self.known.discard(event.uid)
        elif kind == "snapshot_sent":
            if self.snapshot_done:
                raise ZdsError("snapshot_sent: a second time on one connection")
            self.snapshot_done = True
            event = SnapshotSent(frozenset(self.known))
        else:
            raise ZdsError("a WorkloadRequest with no payload (expected add, keep, del or "
                           "snapshot_sent)")
        self.awaiting_ack = True
        return event

    def ack(self, error: str = "") -> bytes:
        """The Ack of the request just received (``error`` empty: it worked)."""
        if not self.awaiting_ack:
            raise ZdsError("an Ack with no request to answer")
        self.awaiting_ack = False
        return bytes(zds_wire.WorkloadResponse(ack=zds_wire.Ack(error=error)).SerializeToString())
