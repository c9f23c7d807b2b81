"""The local node finds ztunnel through its proxy backend: the command it runs is the one it
ran before backends (same flags, same values), and a ztunnel no backend provides stops
``up`` before any pod exists."""

from __future__ import annotations

import sys

import pytest

from pilotfish.core import meshconfig
from pilotfish.node.ambient import AmbientNode, node_ztunnel_admin
from pilotfish.node.netns import NodeError
from pilotfish.node.state import NodeState
from pilotfish.plugins.ztunnel.backend import ZtunnelAdmin, ZtunnelBackend

AMBIENT = meshconfig.from_dict({"profile": "ambient", "mesh": {"domain": "corp.local"}},
                               "pilotfish.yaml")


def state(tmp_path) -> NodeState:
    return NodeState(state_dir=tmp_path, bridge="pf0", gateway_ip="10.0.0.1",
                     secure_xds_address="10.0.0.1:15012", ztunnel_admin="127.0.0.1:15100")


def test_the_node_runs_pilotfish_ztunnel_with_the_flags_it_always_passed(tmp_path):
    node = AmbientNode(state(tmp_path), AMBIENT)
    assert isinstance(node.backend, ZtunnelBackend)
    options = node.ztunnel_options()
    argv = node.backend.command(options, node.backend.write_bootstrap(options))
    start = argv.index("-m")
    flags = dict(zip(argv[start + 3::2], argv[start + 4::2], strict=True))
    folder = tmp_path / "ambient"
    # the interpreter as plugins/ztunnel/bytecode.py runs it, then the command
    assert argv[0] == sys.executable and "-OO" in argv[:start]
    assert argv[start:start + 3] == ["-m", "pilotfish.cli", "ztunnel"]
    # what the node passed before it ran ztunnel through a backend ...
    assert {key: flags[key] for key in (
        "--discovery", "--root-cert", "--token-file", "--zds-socket", "--name", "--namespace",
        "--ip", "--admin-address", "--cluster-domain", "--metrics-address",
        "--readiness-address")} == {
        "--discovery": "10.0.0.1:15012",
        "--root-cert": f"{tmp_path}/discovery/root-cert.pem",
        "--token-file": f"{folder}/ztunnel/token", "--zds-socket": f"{folder}/ztunnel.sock",
        "--name": "ztunnel-pf0", "--namespace": "istio-system", "--ip": "10.0.0.1",
        "--admin-address": "127.0.0.1:15100", "--cluster-domain": "corp.local",
        "--metrics-address": "10.0.0.1:15020", "--readiness-address": "10.0.0.1:15021"}
    # ... and the rest at `pilotfish ztunnel`'s defaults, the mesh's trust domain included
    assert {key: flags[key] for key in ("--service-account", "--trust-domain", "--node",
                                        "--cluster-id", "--dns-resolv-conf")} == {
        "--service-account": "ztunnel", "--trust-domain": "cluster.local", "--node": "",
        "--cluster-id": "Kubernetes", "--dns-resolv-conf": "/etc/resolv.conf"}
    assert (folder / "ztunnel" / "ztunnel.json").is_file()


def test_its_admin_is_asked_on_the_nodes_ports(tmp_path):
    admin = AmbientNode(state(tmp_path), AMBIENT).ztunnel_admin()
    assert isinstance(admin, ZtunnelAdmin)
    assert (admin.admin_url, admin.metrics_url, admin.readiness_url) == (
        "http://127.0.0.1:15100", "http://10.0.0.1:15020", "http://10.0.0.1:15021")


def test_ztunnel_config_finds_the_backend_the_node_recorded(tmp_path):
    recorded = state(tmp_path)
    recorded.ztunnel_backend = "ztunnel"
    assert isinstance(node_ztunnel_admin(recorded), ZtunnelAdmin)
    recorded.ztunnel_backend = "nginx"
    with pytest.raises(NodeError, match=r"state.json: ztunnel: 'nginx': no such proxy backend"):
        node_ztunnel_admin(recorded)
    recorded.ztunnel_admin = ""  # the node runs no ztunnel
    assert node_ztunnel_admin(recorded) is None


def test_a_ztunnel_backend_the_mesh_config_does_not_enable_stops_the_node(tmp_path):
    config = meshconfig.from_dict({"profile": "ambient", "plugins": {
        "proxies": {"remove": ["ztunnel"]}}}, "pilotfish.yaml")
    with pytest.raises(NodeError, match=r"pilotfish.yaml: ztunnel: 'ztunnel': installed but "
                                        r"not enabled by pilotfish.yaml"):
        AmbientNode(state(tmp_path), config)
