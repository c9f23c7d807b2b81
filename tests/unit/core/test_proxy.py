"""A proxy as the control plane sees it: read from its node id and metadata."""

from __future__ import annotations

import pytest

from pilotfish.core.proxy import parse_node

NODE = "sidecar~10.0.0.9~fuzz.shop~shop.svc.cluster.local"


@pytest.mark.parametrize("pod_ports", [
    '[{"name": "a", "containerPort": Infinity}]',  # OverflowError
    "[" * 5000 + "]" * 5000,  # RecursionError
])
def test_pod_ports_metadata_a_client_got_wrong_costs_only_its_named_ports(pod_ports: str):
    """Found by the fuzz suite (tests/fuzz): the node's POD_PORTS raised on connect, its
    stream ended with UNKNOWN and the connection stayed registered in discovery."""
    proxy = parse_node(NODE, {"POD_PORTS": pod_ports, "LABELS": {"app": "web"}})
    assert proxy.pod_ports == {}
    assert proxy.scope.labels == frozenset({("app", "web")})


def test_pod_ports_metadata_names_container_ports():
    proxy = parse_node(NODE, {"POD_PORTS": '[{"name": "http", "containerPort": 8080}, '
                                           '{"containerPort": 9090}]'})
    assert proxy.pod_ports == {"http": 8080}
