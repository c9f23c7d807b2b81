"""ZDS over a real SEQPACKET socket, with a real network namespace handed over as a descriptor.

Runs as root (it makes network namespaces). The ztunnel side here is a small handler over
``run_client`` that does what ztunnel does with a pod's netns: enter it on a thread of its own
(``in_netns``), listen there, come back.
"""

from __future__ import annotations

import array
import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotfish.core.ambient import zds, zds_pb2
from pilotfish.core.ambient.zds import WorkloadInfo, ZdsError, ZdsServer, run_client
from pilotfish.core.ambient.zds_session import ZtunnelSession
from pilotfish.core.backoff import Backoff
from pilotfish.core.native.sockets import in_netns
from pilotfish.testing.zds import RecordingZtunnel, netns_id

INFO = WorkloadInfo(name="web-1", namespace="shop", service_account="web")
FAST = Backoff(initial=0.02, maximum=0.1, multiplier=2.0)


def run(body: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout)
    asyncio.run(bounded())


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pf-zds-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ztunnel.sock"


class Ztunnel(RecordingZtunnel):
    """Records what the agent sends, and listens inside each added pod as ztunnel does."""

    def __init__(self, port: int = 0, refuse: str = "") -> None:
        super().__init__(refuse)
        self.port = port
        self.listeners: dict[str, socket.socket] = {}
        self.delay = 0.0

    async def enter(self, uid: str, netns_fd: int) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.port:
            self.listeners[uid] = await in_netns(netns_fd, self._listen)

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(4)
        return sock

    def close(self) -> None:
        for sock in self.listeners.values():
            sock.close()


async def next_event(ztunnel: Ztunnel) -> tuple[Any, ...]:
    return await ztunnel.next(5)


def open_netns(name: str) -> int:
    return os.open(f"/run/netns/{name}", os.O_RDONLY)


def test_the_netns_reaches_ztunnel_and_a_socket_opened_in_it_lives_in_the_pod(
        path: Path, netns: str):
    port = random.randrange(20000, 30000)
    ztunnel = Ztunnel(port=port)

    async def body() -> None:
        async with asyncio.TaskGroup() as tasks:
            client = tasks.create_task(run_client(path, ztunnel, retry=FAST))
            await asyncio.sleep(0.2)  # ztunnel first: it waits for the agent's socket
            server = ZdsServer(path)
            serving = tasks.create_task(server.serve())
            await asyncio.wait_for(server.wait_connected(), 5)
            assert await next_event(ztunnel) == ("snapshot_sent", frozenset())
            fd = open_netns(netns)
            try:
                await server.add("uid-1", INFO, fd)
            finally:
                os.close(fd)  # the server holds its own duplicate
            assert await next_event(ztunnel) == ("add", "uid-1", INFO,
                                                  netns_id(f"/run/netns/{netns}"))
            listener = ztunnel.listeners["uid-1"]
            # From inside the pod's namespace, 127.0.0.1:port is ztunnel's listener ...
            inside = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", netns, sys.executable, "-c",
                f"import socket; s = socket.create_connection(('127.0.0.1', {port}), 5); "
                "s.sendall(b'from the pod'); s.close()",
                stderr=asyncio.subprocess.PIPE)
            listener.settimeout(5)
            conn, _ = await asyncio.to_thread(listener.accept)
            assert await asyncio.to_thread(conn.recv, 64) == b"from the pod"
            conn.close()
            assert await inside.wait() == 0
            # ... and in the node's own namespace nothing listens there.
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), 1)
            await server.delete("uid-1")
            assert await next_event(ztunnel) == ("del", "uid-1")
            client.cancel()
            serving.cancel()
        ztunnel.close()
        assert not path.exists()

    run(body)


def test_a_reconnecting_ztunnel_gets_a_snapshot_of_every_pod(path: Path, netns: str):
    async def body() -> None:
        server = ZdsServer(path)
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.serve())
            fd = open_netns(netns)
            await server.add("uid-1", INFO, fd)  # no ztunnel yet: only held
            os.close(fd)
            await server.keep("uid-2", WorkloadInfo("old", "shop", "default"))
            assert not server.connected and server.known() == {"uid-1", "uid-2"}

            for _ in range(2):  # a first ztunnel, then a restarted one
                ztunnel = Ztunnel()
                client = tasks.create_task(run_client(path, ztunnel, retry=FAST))
                assert await next_event(ztunnel) == ("add", "uid-1", INFO,
                                                      netns_id(f"/run/netns/{netns}"))
                assert await next_event(ztunnel) == ("keep", "uid-2")
                assert await next_event(ztunnel) == ("snapshot_sent",
                                                     frozenset({"uid-1", "uid-2"}))
                await asyncio.wait_for(server.wait_connected(), 5)
                client.cancel()
                await asyncio.gather(client, return_exceptions=True)
                for _ in range(50):
                    if not server.connected:
                        break
                    await asyncio.sleep(0.02)
                assert not server.connected  # the agent noticed ztunnel go at once
            serving.cancel()

    run(body)


def test_a_newer_connection_replaces_the_older_one(path: Path):
    async def body() -> None:
        server = ZdsServer(path)
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.serve())
            await asyncio.sleep(0.05)
            old = await raw_ztunnel(path)
            await asyncio.wait_for(server.wait_connected(), 5)
            new = await raw_ztunnel(path)
            # The old connection is closed by the agent: its next read is the end.
            assert await asyncio.to_thread(old.recv, 64) == b""
            await asyncio.wait_for(server.wait_connected(), 5)  # the newer one's snapshot
            old.close()
            new.close()
            serving.cancel()

    run(body)


async def raw_ztunnel(path: Path) -> socket.socket:
    """A ztunnel by hand: hello, then ack the (empty) snapshot."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(path))
    sock.settimeout(5)
    session = ZtunnelSession()
    sock.send(session.hello())
    data = await asyncio.to_thread(sock.recv, 1024)
    assert zds_pb2.WorkloadRequest.FromString(data).WhichOneof("payload") == "snapshot_sent"
    session.receive(data, [])
    sock.send(session.ack())
    return sock


def test_ztunnels_refusal_and_silence_are_the_agents_errors(
        path: Path, netns: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(zds, "ACK_TIMEOUT", 0.3)
    ztunnel = Ztunnel(refuse="no certificate for spiffe://cluster.local/ns/shop/sa/web")

    async def body() -> None:
        server = ZdsServer(path)
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.serve())
            client = tasks.create_task(run_client(path, ztunnel, retry=FAST))
            await asyncio.wait_for(server.wait_connected(), 5)
            fd = open_netns(netns)
            with pytest.raises(ZdsError, match=re.escape(
                    "add uid-1: ztunnel answered: no certificate for "
                    "spiffe://cluster.local/ns/shop/sa/web")):
                await server.add("uid-1", INFO, fd)
            assert "uid-1" in server.known()  # held: the next snapshot tries again

            ztunnel.refuse, ztunnel.delay = "", 1.0
            with pytest.raises(ZdsError, match=re.escape("did not acknowledge within 0.3 s")):
                await server.add("uid-2", INFO, fd)
            os.close(fd)
            client.cancel()
            serving.cancel()

    run(body)


def test_a_descriptor_on_a_message_other_than_add_makes_ztunnel_hang_up(path: Path):
    async def body() -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(path))
        listener.listen(1)
        ztunnel = Ztunnel()
        client = asyncio.ensure_future(run_client(path, ztunnel, retry=FAST))
        listener.settimeout(5)
        conn, _ = await asyncio.to_thread(listener.accept)
        conn.settimeout(5)
        hello = await asyncio.to_thread(conn.recv, 64)
        assert zds_pb2.ZdsHello.FromString(hello).version == zds_pb2.V1
        keep = zds_pb2.WorkloadRequest(keep=zds_pb2.KeepWorkload(uid="uid-1"))
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        conn.sendmsg([keep.SerializeToString()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())])
        os.close(fd)
        assert await asyncio.to_thread(conn.recv, 64) == b""  # no Ack: the connection ends
        assert ztunnel.events.empty()
        again, _ = await asyncio.to_thread(listener.accept)  # and ztunnel comes back
        assert zds_pb2.ZdsHello.FromString(await asyncio.to_thread(again.recv, 64))
        for sock in (conn, again, listener):
            sock.close()
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)

    run(body)


def test_both_sides_run_on_uvloop_as_ztunnel_does(path: Path, netns: str):
    import uvloop

    ztunnel = Ztunnel(port=random.randrange(30000, 40000))

    async def body() -> None:
        server = ZdsServer(path)
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.serve())
            client = tasks.create_task(run_client(path, ztunnel, retry=FAST))
            assert await next_event(ztunnel) == ("snapshot_sent", frozenset())
            fd = open_netns(netns)
            await server.add("uid-1", INFO, fd)
            os.close(fd)
            assert await next_event(ztunnel) == ("add", "uid-1", INFO,
                                                  netns_id(f"/run/netns/{netns}"))
            await server.delete("uid-1")
            assert await next_event(ztunnel) == ("del", "uid-1")
            client.cancel()
            serving.cancel()
        ztunnel.close()

    uvloop.run(asyncio.wait_for(body(), 20))


def test_a_pod_ztunnel_refuses_in_a_snapshot_does_not_hold_up_the_others(
        path: Path, netns: str):
    class Picky(Ztunnel):
        async def enter(self, uid: str, netns_fd: int) -> None:
            if uid == "uid-bad":
                raise RuntimeError("no certificate for this one")

    ztunnel = Picky()

    async def body() -> None:
        server = ZdsServer(path)
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.serve())
            fd = open_netns(netns)
            await server.add("uid-bad", INFO, fd)  # held: no ztunnel yet
            await server.add("uid-ok", INFO, fd)
            os.close(fd)
            client = tasks.create_task(run_client(path, ztunnel, retry=FAST))
            assert await next_event(ztunnel) == ("add", "uid-ok", INFO,
                                                  netns_id(f"/run/netns/{netns}"))
            assert await next_event(ztunnel) == ("snapshot_sent",
                                                  frozenset({"uid-bad", "uid-ok"}))
            await asyncio.wait_for(server.wait_connected(), 5)
            assert server.known() == {"uid-bad", "uid-ok"}  # offered again next time
            client.cancel()
            serving.cancel()

    run(body)
