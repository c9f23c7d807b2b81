"""What the install's Deployment runs, run: ``pilotfish install`` on the fake API server, then
``pilotfish discovery`` with the Deployment's own arguments and the ``pilotfish.yaml`` its
ConfigMap mounts (only the listen addresses moved to free local ports, and the kubeconfig
standing in for the pod's service account) is ready on ``/ready``, as its readiness probe
asks, with every CRD the install applied watched."""

from __future__ import annotations

from pathlib import Path

from pilotfish.cli import manifests
from pilotfish.cli.main import main
from pilotfish.testing.kube import running
from pilotfish.testing.processes import Process, free_port, http, pilotfish, wait_until


def test_discovery_as_the_deployment_runs_it_becomes_ready(tmp_path: Path, capsys):
    vals = manifests.values()
    objects = manifests.generate(vals)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (configmap,) = [o for o in objects if o["metadata"]["name"] == "pilotfish"]
    (tmp_path / "pilotfish.yaml").write_text(configmap["data"]["pilotfish.yaml"])
    moved = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    args = []
    for arg in container["args"]:
        if arg.startswith("0.0.0.0:"):
            arg = f"127.0.0.1:{free_port()}"
        elif arg == f"{manifests.CONFIG_DIR}/pilotfish.yaml":
            arg = str(tmp_path / "pilotfish.yaml")
        elif arg in moved:  # an emptyDir
            arg = str(tmp_path / moved[arg])
        args.append(arg)
    debug = args[args.index("--debug-address") + 1]
    probe = container["readinessProbe"]["httpGet"]
    with running(tmp_path / "api") as api:
        assert main(["install", "--kubeconfig", str(api.kubeconfig), "--no-wait"]) == 0
        discovery = Process("discovery", pilotfish(*args, "--kubeconfig", str(api.kubeconfig)),
                            tmp_path / "discovery.log").start()
        try:
            wait_until(lambda: http(f"http://{debug}{probe['path']}").status == 200,
                       timeout=60, what="discovery ready")
            assert "custom kinds watched, 0 not installed)" in discovery.log(), discovery.log()
        finally:
            discovery.stop()
    capsys.readouterr()
