"""Ask a real Envoy whether generated resources are acceptable (``envoy --mode validate``).

The resources go into the agent's real bootstrap as static listeners and clusters. A
cluster a listener names but the test did not give becomes an empty static stub, as long
as its name is one pilotfish generates; RDS, EDS and secrets stay on ADS and SDS exactly as
the bootstrap declares them, so Envoy checks those references as it would for pushes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pilotfish.core.proxy_backend import ProxyOptions
from pilotfish.plugins.envoy.backend import EnvoyBackend

# outbound|PORT|SUBSET|HOST, inbound|PORT||, or one of the fixed clusters.
CLUSTER_NAME = re.compile(
    r"^(outbound\|\d+\|[^|]*\|[^|]+|inbound\|\d+\|\||PassthroughCluster|BlackHoleCluster"
    r"|InboundPassthroughCluster)$"
)


def referenced_clusters(node: Any) -> set[str]:
    """Cluster names a resource refers to (tcp_proxy, weighted, inline routes, gRPC)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("cluster", "clusterName") and isinstance(value, str):
                found.add(value)
            elif key == "weightedClusters":
                found |= {entry["name"] for entry in value["clusters"]}
            else:
                found |= referenced_clusters(value)
    elif isinstance(node, list):
        for value in node:
            found |= referenced_clusters(value)
    return found


def envoy_accepts(tmp_path: Path, *, listeners: Sequence[Any] = (),
                  clusters: Sequence[Any] = (), proxy_type: str = "sidecar",
                  namespace: str = "default") -> None:
    """Raise BootstrapError, in Envoy's own words, unless Envoy accepts the resources
    (JSON dicts, as ``json_format.MessageToDict`` makes them)."""
    backend = EnvoyBackend()
    bootstrap = backend.bootstrap(ProxyOptions(
        name="p-1", namespace=namespace, ip="10.0.0.5", discovery_address="127.0.0.1:15010",
        config_dir=tmp_path, proxy_type=proxy_type,
    ))
    static = bootstrap["static_resources"]
    present = {cluster["name"] for cluster in static["clusters"]}
    static["clusters"] += [c for c in clusters if c["name"] not in present]
    present |= {cluster["name"] for cluster in clusters}
    missing = referenced_clusters(list(listeners)) - present
    assert all(CLUSTER_NAME.match(name) for name in missing), sorted(missing)
    static["clusters"] += [
        {"name": name, "type": "STATIC", "load_assignment": {"cluster_name": name}}
        for name in sorted(missing)
    ]
    static["listeners"] = list(listeners)
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    backend.check(path)
