"""Drive ``pilotfish up`` from tests: start it on its own bridge and subnet, run commands in
pods, stop it, and check that nothing it made is left behind."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509

from pilotfish.cli import secret_dump
from pilotfish.testing.processes import Process, free_port, http, pilotfish, wait_until


@attrs.define
class Node:
    workdir: Path
    config_dir: Path | None  # None: the objects come from --kubeconfig in extra_args
    subnet: str
    bridge: str
    debug_port: int = attrs.field(factory=free_port)
    process: Process | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def debug(self) -> str:
        return f"http://127.0.0.1:{self.debug_port}"

    def cli(self, *args: str) -> list[str]:
        return pilotfish(*args)

    def start(self, timeout: float = 120) -> Node:
        source = ("--config-dir", str(self.config_dir)) if self.config_dir else ()
        argv = pilotfish("up", *source, "--state-dir",
                         str(self.state_dir), "--subnet", self.subnet, "--bridge", self.bridge,
                         "--debug-address", f"127.0.0.1:{self.debug_port}", *self.extra_args)
        self.process = Process("up", argv, self.workdir / "up.log").start()

        def ready() -> bool:
            assert self.process is not None
            self.process.check_running()
            data = self.status()
            if data.get("phase") == "not-ready":
                raise AssertionError(f"the node came up not ready: {data['problems']}")
            return data.get("phase") == "ready"

        wait_until(ready, timeout, interval=0.5, what="the node to be up")
        return self

    def status(self) -> dict[str, Any]:
        out = subprocess.run(pilotfish("status", "-o", "json", "--state-dir",
                                       str(self.state_dir)), capture_output=True, text=True)
        if out.returncode != 0:
            return {"pods": []}
        return dict(json.loads(out.stdout))

    def ztunnel_dump(self) -> dict[str, Any]:
        """``pilotfish ztunnel-config all -o json`` of the node's ztunnel."""
        out = subprocess.run([*self.cli("ztunnel-config", "all", "-o", "json", "--state-dir",
                                        str(self.state_dir))],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def pod(self, name: str) -> dict[str, Any]:
        for pod in self.status()["pods"]:
            if pod["name"] == name:
                return dict(pod)
        raise KeyError(name)

    def exec(self, pod: str, argv: Sequence[str], timeout: float = 30,
             user: int | None = None) -> subprocess.CompletedProcess[str]:
        extra = ["--user", str(user)] if user is not None else []
        return subprocess.run(
            pilotfish("exec", "--state-dir", str(self.state_dir), *extra, pod, "--", *argv),
            capture_output=True, text=True, timeout=timeout)

    def curl_json(self, pod: str, url: str, *headers: str) -> Any:
        args = ["curl", "-s", "-m", "5"]
        for header in headers:
            args += ["-H", header]
        out = self.exec(pod, [*args, url])
        assert out.returncode == 0, f"curl {url} from {pod}: {out.returncode} {out.stderr}"
        return json.loads(out.stdout)

    def python(self, pod: str, code: str, timeout: float = 60) -> str:
        out = self.exec(pod, [sys.executable, "-c", code], timeout=timeout)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def log(self, name: str) -> str:
        path = self.state_dir / "logs" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def proxy_certificates(self, pod: str) -> dict[str, list[x509.Certificate]]:
        """Each active secret of a pod's proxy (``name.namespace``) and its certificates
        (leaf first; roots for ROOTCA), read the way users do: ``proxy-config secret``."""
        out = subprocess.run(
            pilotfish("proxy-config", "secret", pod, "--state-dir", str(self.state_dir),
                      "--discovery-address", self.debug.removeprefix("http://"), "-o", "json"),
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"proxy-config secret {pod}: {out.stderr}"
        found = {}
        for name, status, secret in secret_dump.entries(json.loads(out.stdout)):
            certs = secret_dump.certificates(secret)[1]
            if status == "ACTIVE" and not isinstance(certs, str):
                found[name] = certs
        return found

    def config_errors(self) -> list[str]:
        """The config errors (not warnings) `pilotfish up` printed when it loaded the folder."""
        text = (self.workdir / "up.log").read_text(errors="replace")
        _, _, after = text.partition("==> config from ")
        lines = after.split("\n==> ", 1)[0].splitlines()[1:]
        return [line.strip() for line in lines if ": warning: " not in line]

    def discovery_pid(self) -> int:
        return int(self.status()["discovery"]["pid"])

    def discovery_ready(self) -> bool:
        try:
            return http(f"{self.debug}/ready", timeout=1).status == 200
        except OSError:
            return False

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return self.process.stop(timeout=60)

    def kill(self) -> None:
        if self.process is not None and self.process.popen is not None:
            self.process.signal(signal.SIGKILL)
            self.process.popen.wait(10)  # reaped: its pid is gone, as after a real crash

    def down(self) -> str:
        out = subprocess.run(pilotfish("down", "--state-dir", str(self.state_dir)),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout


def leftovers(node: Node, netns_names: Sequence[str]) -> list[str]:
    """Whatever of the node still exists: netns, /etc/netns, bridge, veths, processes."""
    found = []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    existing = {line.split()[0] for line in names.splitlines() if line}
    found += [f"netns {name}" for name in netns_names if name in existing]
    for folder in (Path("/etc/netns"), Path("/run/pilotfish/proxies")):
        found += [f"{folder}/{name}" for name in netns_names if (folder / name).exists()]
    if subprocess.run(["ip", "link", "show", node.bridge], capture_output=True).returncode == 0:
        found.append(f"bridge {node.bridge}")
    links = subprocess.run(["ip", "-o", "link", "show", "master", node.bridge],
                           capture_output=True, text=True).stdout
    found += [f"veth {line.split(':')[1].strip()}" for line in links.splitlines() if line]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines()
              if str(node.state_dir) in line or f"--bridge {node.bridge}" in line]
    if node.state_dir.exists():
        found.append(f"state {node.state_dir}")
    return found


def write_file(folder: Path, name: str, text: str) -> None:
    """Replace one config file at once, as an editor's save does (the watch never sees half)."""
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    tmp.replace(folder / name)


@contextlib.contextmanager
def node_with(workdir: Path, files: Mapping[str, str], subnet: str, bridge: str,
              mesh_config: str = "") -> Iterator[Node]:
    """A node up on ``files`` (written into ``workdir/config``) with ``mesh_config`` as its
    pilotfish.yaml; stopped and downed after, and checked to leave nothing behind."""
    config = workdir / "config"
    config.mkdir()
    for name, text in files.items():
        write_file(config, name, text)
    extra: tuple[str, ...] = ()
    if mesh_config:
        (workdir / "pilotfish.yaml").write_text(mesh_config)
        extra = ("--mesh-config", str(workdir / "pilotfish.yaml"))
    node = Node(workdir, config, subnet, bridge, extra_args=extra)
    netns_names: set[str] = set()
    try:
        node.start()
        assert node.config_errors() == []
        netns_names = {p["netns"] for p in node.status()["pods"]}
        yield node
    finally:
        node.stop()
        node.down()
        assert leftovers(node, sorted(netns_names)) == []
