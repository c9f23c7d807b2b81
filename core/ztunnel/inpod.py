"""Sockets inside a pod's network namespace, made by ztunnel from its own (the pod needs no
capability): the pod's listeners (15001 outbound, 15006 inbound plaintext, 15008 inbound
HBONE, 15053 DNS over UDP and TCP) and ztunnel's connections out of the pod. Every one
carries ``SO_MARK`` 1337, the in-pod rules' sign that a packet is ztunnel's own and must
not be redirected again; a connection delivered to the app may leave from the client's
address (``IP_TRANSPARENT``), which the in-pod rules route back to ztunnel.

A socket is created in a namespace by a thread that has entered it (``in_netns``); it stays
there after the thread leaves, and is used from the event loop like any other.
"""

from __future__ import annotations

import asyncio
import socket

import attrs

from pilotfish.core.native.sockets import in_netns, listening_socket, set_transparent

MARK = 1337  # 0x539: Istio's InpodMark
OUTBOUND, INBOUND_PLAINTEXT, INBOUND = 15001, 15006, 15008
PORTS = (OUTBOUND, INBOUND_PLAINTEXT, INBOUND)
DNS = 15053
# The in-pod rules REDIRECT the app's port 53, and a redirected local packet arrives at
# 127.0.0.1: the DNS sockets listen there only, out of reach from outside the pod.
DNS_ADDRESS = "127.0.0.1"


def _listener(port: int) -> socket.socket:
    # SO_REUSEPORT: an old and a new ztunnel may hold a pod's ports at once (Istio's
    # INPOD_PORT_REUSE).
    return listening_socket("0.0.0.0", port, transparent=True, reuse_port=True, mark=MARK)


def _listeners() -> dict[int, socket.socket]:
    made: dict[int, socket.socket] = {}
    try:
        for port in PORTS:
            made[port] = _listener(port)
    except OSError as exc:
        for sock in made.values():
            sock.close()
        raise OSError(exc.errno, f"cannot listen on port {port} in the pod: "
                                 f"{exc.strerror}") from None
    return made


async def open_listeners(netns_fd: int) -> dict[int, socket.socket]:
    """The pod's three listening sockets, by port."""
    return await in_netns(netns_fd, _listeners)


def _dns_sockets() -> tuple[socket.socket, socket.socket]:
    made: list[socket.socket] = []
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_INET, kind)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((DNS_ADDRESS, DNS))
            if kind == socket.SOCK_STREAM:
                sock.listen(1024)
            sock.setblocking(False)
    except OSError as exc:
        for sock in made:
            sock.close()
        kind_name = "UDP" if len(made) == 1 else "TCP"
        raise OSError(exc.errno, f"cannot listen on port {DNS} ({kind_name}) in the pod: "
                                 f"{exc.strerror}") from None
    return made[0], made[1]


async def open_dns_sockets(netns_fd: int) -> tuple[socket.socket, socket.socket]:
    """The pod's DNS sockets on 15053: (UDP, TCP listener)."""
    return await in_netns(netns_fd, _dns_sockets)


@attrs.frozen
class Dialer:
    """Connections out of one pod's network namespace."""

    netns_fd: int

    async def connect(self, address: tuple[str, int], source: str = "") -> socket.socket:
        """A TCP connection to ``address`` from the pod (from ``source`` when given: the
        original client's address, as ztunnel delivers inbound connections)."""

        def make() -> socket.socket:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
                if source:
                    set_transparent(sock, family)
                    sock.bind((source, 0))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            return sock

        sock = await in_netns(self.netns_fd, make)
        try:
            await asyncio.get_running_loop().sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock
