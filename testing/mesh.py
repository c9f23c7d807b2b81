"""A local mesh for tests: discovery, demo apps and proxies as real processes.

    mesh = LocalMesh(tmp_path)
    mesh.write("mesh.yaml", text)
    mesh.start_discovery()
    mesh.start_apps(["reviews:v1@127.0.20.3:18080"])
    gw = mesh.start_proxy("gw", "istio-system", labels={"istio": "ingressgateway"})
    ...
    mesh.stop()
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pilotfish.testing.processes import Process, free_port, http, pilotfish, wait_until


@attrs.define
class Proxy:
    name: str
    namespace: str
    admin_port: int
    process: Process
    status_port: int = 0  # the agent's 15020 and 15021, on free ports here
    health_port: int = 0

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def status(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def config_dump(self) -> Any:
        return http(f"{self.admin}/config_dump?include_eds").json()

    def stat(self, name: str) -> int:
        text = http(f"{self.admin}/stats?filter=^{name}$").body.decode()
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


@attrs.define
class LocalMesh:
    workdir: Path
    xds_port: int = attrs.field(factory=free_port)
    debug_port: int = attrs.field(factory=free_port)
    processes: list[Process] = attrs.field(factory=list)
    # 15012 (TLS: authenticated ADS and the CA) on a free port; its root lives in state_dir.
    secure_port: int = attrs.field(factory=free_port)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "discovery-state"

    @property
    def root_cert(self) -> Path:
        """The mesh root discovery writes for the node (``<state-dir>/root-cert.pem``)."""
        return self.state_dir / "root-cert.pem"

    @property
    def secure_address(self) -> str:
        return f"127.0.0.1:{self.secure_port}"

    @property
    def config_dir(self) -> Path:
        path = self.workdir / "config"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def debug(self) -> str:
        return f"http://127.0.0.1:{self.debug_port}"

    def write(self, name: str, text: str) -> Path:
        """Write a config file the way editors and kubectl-like tools do: atomically."""
        path = self.config_dir / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def remove(self, name: str) -> None:
        (self.config_dir / name).unlink()

    def _process(self, name: str, argv: Sequence[str]) -> Process:
        self.workdir.mkdir(parents=True, exist_ok=True)
        process = Process(name, argv, self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def start_discovery(self, mesh_config: str | None = None,
                        extra_env: Mapping[str, str] | None = None,
                        token_key: Path | None = None, extra: Sequence[str] = (),
                        kubeconfig: Path | None = None) -> Process:
        """``token_key``: the node's public key, so discovery accepts pod tokens;
        ``kubeconfig``: read config from that cluster instead of ``config_dir``."""
        source = ["--kubeconfig", str(kubeconfig)] if kubeconfig is not None else [
            "--config-dir", str(self.config_dir)]
        args = ["--log-level", "info", "discovery", *source,
                "--xds-address", f"127.0.0.1:{self.xds_port}",
                "--debug-address", f"127.0.0.1:{self.debug_port}",
                "--secure-xds-address", self.secure_address, "--state-dir", str(self.state_dir),
                *extra]
        if token_key is not None:
            args += ["--token-key", str(token_key)]
        if mesh_config is not None:
            path = self.workdir / "pilotfish.yaml"
            self.workdir.mkdir(parents=True, exist_ok=True)
            path.write_text(mesh_config)
            args += ["--mesh-config", str(path)]
        process = self._process("discovery", pilotfish(*args)).start(env=extra_env)

        def ready() -> bool:
            process.check_running()
            return http(f"{self.debug}/ready", timeout=1).status == 200

        wait_until(ready, 20, what="discovery to be ready")
        return process

    def start_apps(self, serve: Sequence[str], name: str = "apps") -> Process:
        argv = [sys.executable, "-m", "pilotfish.demo.app"]
        for spec in serve:
            argv += ["--serve", spec]
        process = self._process(name, argv).start()
        addresses = [spec.partition("@")[2] for spec in serve]

        def listening() -> bool:
            process.check_running()
            for address in addresses:
                http(f"http://{address}/_requests", timeout=1)
            return True

        wait_until(listening, 15, what=f"apps {', '.join(addresses)}")
        return process

    def start_proxy(
        self, name: str, namespace: str, *, proxy_type: str = "router", ip: str = "127.0.0.1",
        labels: Mapping[str, str] | None = None, xds_mode: str = "delta",
        extra: Sequence[str] = (), discovery: str | None = None,
    ) -> Proxy:
        """``discovery``: the address the agent dials (this mesh's own xDS port unless given,
        e.g. a load balancer in front of several discovery replicas)."""
        admin_port, status_port, health_port = free_port(), free_port(), free_port()
        label_text = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
        args = ["agent", "--type", proxy_type, "--name", name, "--namespace", namespace,
                "--ip", ip, "--discovery", discovery or f"127.0.0.1:{self.xds_port}",
                "--admin-port", str(admin_port), "--xds-mode", xds_mode,
                "--config-dir", str(self.workdir / f"proxy-{name}"),
                "--termination-drain-duration", "0s",
                # Istio's fixed ports would collide between proxies sharing this host.
                "--status-port", str(status_port), "--health-port", str(health_port),
                "--prometheus-port", "0", *extra]
        if label_text:
            args += ["--labels", label_text]
        process = self._process(f"proxy-{name}", pilotfish(*args)).start()
        proxy = Proxy(name, namespace, admin_port, process, status_port, health_port)

        def live() -> bool:
            process.check_running()
            return http(f"{proxy.admin}/ready", timeout=1).body.strip() == b"LIVE"

        wait_until(live, 30, what=f"proxy {name} to be LIVE")
        return proxy

    def syncz(self) -> list[dict[str, Any]]:
        return list(http(f"{self.debug}/debug/syncz").json())

    def wait_synced(self, proxy_id: str, timeout: float = 10.0) -> dict[str, Any]:
        def synced() -> dict[str, Any] | None:
            for item in self.syncz():
                if item["proxy"] == proxy_id and item["resources"] and all(
                    r["status"] == "SYNCED" for r in item["resources"].values()
                ):
                    return item
            return None

        return wait_until(synced, timeout, what=f"{proxy_id} to be SYNCED")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def __enter__(self) -> LocalMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
