"""The ``ztunnel`` backend against a real ``pilotfish ztunnel``: the process its command
starts takes the settings it wrote and checked, and its admin reads that ztunnel's three
ports — readiness saying why it is not ready (no discovery here), the config dump, metrics —
and leaves it running on a drain; ``pilotfish ztunnel-config`` reads it through the backend a
node's state records; SIGTERM then stops it cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import pilotfish.cli
from pilotfish.core.proxy_backend import ProxyError, ProxyOptions, ZtunnelOptions
from pilotfish.node.state import NodeState
from pilotfish.plugins.ztunnel.backend import ZtunnelBackend
from pilotfish.testing.mesh_ca import MeshCA


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def options(tmp_path: Path) -> ProxyOptions:
    (tmp_path / "root-cert.pem").write_bytes(MeshCA().roots_pem)
    (tmp_path / "token").write_text("not-a-real-token")
    own = ZtunnelOptions(zds_socket=tmp_path / "ztunnel.sock",
                         root_cert=tmp_path / "root-cert.pem", token_file=tmp_path / "token",
                         metrics_address=f"127.0.0.1:{free_port()}",
                         readiness_address=f"0.0.0.0:{free_port()}")
    # discovery: a closed port, so ztunnel keeps asking and never becomes ready
    return ProxyOptions(proxy_type="ztunnel", name="ztunnel-test", namespace="istio-system",
                        ip="127.0.0.1", service_account="ztunnel",
                        discovery_address=f"127.0.0.1:{free_port()}",
                        config_dir=tmp_path / "zt", admin_port=free_port(), ztunnel=own)


async def answering(call):
    with anyio.fail_after(20):
        while True:
            try:
                return await call()
            except ProxyError:
                await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_the_backend_runs_ztunnel_and_reads_its_ports(tmp_path):
    backend = ZtunnelBackend()
    opts = options(tmp_path)
    path = backend.write_bootstrap(opts)
    backend.check(path)
    admin = backend.admin(opts)
    with pytest.raises(ProxyError, match=r"^ztunnel: http://127.0.0.1:\d+/healthz/ready: "):
        await admin.status(full=True)  # nothing runs yet
    process = await anyio.open_process(backend.command(opts, path),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        status = await answering(lambda: admin.status(full=True))
        assert status.serving == ""
        assert status.config == "no Address, Authorization from discovery yet"
        dump = await admin.config_dump()
        assert dump["pods"] == {} and dump["certificates"] == []
        assert dump["dns"]["domain"] == "cluster.local"
        assert isinstance(await admin.prometheus(), str)
        await admin.drain()  # nothing to ask: it keeps running
        assert process.returncode is None
        # a node that runs it: ztunnel-config asks the backend it recorded
        NodeState(state_dir=tmp_path / "node", bridge="pfzb", gateway_ip="127.0.0.1",
                  secure_xds_address=opts.discovery_address,
                  ztunnel_admin=f"127.0.0.1:{opts.admin_port}",
                  ztunnel_backend="ztunnel").save()
        shown = await anyio.run_process([
            sys.executable, "-m", "pilotfish.cli", "ztunnel-config", "all", "-o", "json",
            "--state-dir", str(tmp_path / "node")])
        assert json.loads(shown.stdout)["dns"] == dump["dns"]
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            code = await process.wait()
    assert code == 0


@pytest.mark.anyio
async def test_a_started_ztunnel_compiles_nothing_the_bootstrap_did_not(tmp_path):
    # A module compiled as ztunnel starts costs it more memory than -OO saves
    # (plugins/ztunnel/bytecode.py); -v names each code object's source.
    backend = ZtunnelBackend()
    opts = options(tmp_path)
    path = backend.write_bootstrap(opts)
    argv = backend.command(opts, path)
    with (tmp_path / "verbose.log").open("wb") as log:
        process = await anyio.open_process([argv[0], "-v", *argv[1:]],
                                           stdout=subprocess.DEVNULL, stderr=log)
    try:
        await answering(lambda: backend.admin(opts).config_dump())
        await backend.admin(opts).prometheus()
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            await process.wait()
    lines = (tmp_path / "verbose.log").read_text().splitlines()
    loaded = [line.split(" from ", 1)[1].strip("'") for line in lines
              if line.startswith("# code object from ")]
    assert loaded and [p for p in loaded if not p.endswith(".pyc")] == [
        str(Path(pilotfish.cli.__file__).parent / "__main__.py")]  # runpy compiles -m's
    # nor, serving, loads anyio (its task groups, endpoints and HBONE run on asyncio) or the
    # IDNA codec (its endpoints bind numeric addresses themselves): issue 13's 30 MB
    assert [p for p in loaded if any(name in p for name in (
        "/anyio/", "/encodings/idna.", "/stringprep."))] == []
