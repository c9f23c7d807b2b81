"""Discovery reports what ``pilotfish analyze`` calls an error in the config it serves —
a route to a subset no DestinationRule defines turns requests into 503s — as warnings that
reject nothing: logged once, listed in /debug/config_errors, and the route still served."""

from __future__ import annotations

import json
import logging

import anyio
import pytest

from pilotfish.core.meshconfig import MeshConfig
from pilotfish.core.objects import ConfigKey
from pilotfish.core.plugins import Plugins
from pilotfish.core.push import PushRequest
from pilotfish.core.yamlload import load_text
from pilotfish.discovery import debug
from pilotfish.discovery.app import Discovery, DiscoveryOptions
from pilotfish.testing.config import WEB_SERVICE_ONLY

CONFIG = WEB_SERVICE_ONLY + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web, subset: v1}, weight: 80}
    - {destination: {host: web, subset: v3}, weight: 20}
"""


async def push_once(discovery: Discovery) -> None:
    change = PushRequest.for_keys([ConfigKey("VirtualService", "shop", "web")], "config", 0.0)
    discovery.debouncer.add(change, 0.0)
    with anyio.move_on_after(0.3):
        await discovery.run_pushes()


def test_an_unknown_subset_is_reported_but_not_rejected(caplog: pytest.LogCaptureFixture):
    config = MeshConfig()
    discovery = Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        debug_address=None))
    objects, errors = load_text(CONFIG, "web.yaml")
    assert not errors
    discovery.store.replace("web.yaml", objects)

    async def twice() -> None:
        await push_once(discovery)
        await push_once(discovery)  # still wrong: not logged again

    with caplog.at_level(logging.WARNING, logger="pilotfish"):
        anyio.run(twice)
    lines = [r.getMessage() for r in caplog.records if "PF" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "VirtualService shop/web" in lines[0] and "v3" in lines[0]

    listed = json.loads(anyio.run(debug.server(discovery).routes["/debug/config_errors"],
                                  None).body)
    (finding,) = [e for e in listed if "found by analysis" in e["message"]]
    assert finding["severity"] == "warning" and finding["kind"] == "VirtualService"
    assert finding["file"] == "web.yaml" and finding["line"] > 0
    assert discovery.store.get(ConfigKey("VirtualService", "shop", "web")) is not None
    served = discovery.state.push.objects("VirtualService")
    assert [(v.namespace, v.name) for v in served] == [("shop", "web")]


def test_the_gateway_checks_errors_are_listed_too() -> None:
    # Every analyzer's errors go the same way: a route bound to a Gateway that does not
    # exist (PF0113), and two Gateways whose servers one proxy port cannot hold (PF0112).
    config = MeshConfig()
    discovery = Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        debug_address=None))
    gateways = "".join(f"""\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: {name}, protocol: {protocol}}}, hosts: ["*"]}}]
""" for name, protocol in (("web", "HTTP"), ("raw", "TCP")))
    objects, errors = load_text(CONFIG.replace("  hosts: [web]\n",
                                               "  hosts: [web]\n  gateways: [nope]\n")
                                + gateways, "web.yaml")
    assert not errors
    discovery.store.replace("web.yaml", objects)
    anyio.run(push_once, discovery)
    listed = json.loads(anyio.run(debug.server(discovery).routes["/debug/config_errors"],
                                  None).body)
    codes = {(e["message"].split(" ")[0], e["kind"], e["name"]) for e in listed
             if "found by analysis" in e["message"]}
    assert {("PF0113", "VirtualService", "web"), ("PF0112", "Gateway", "web"),
            ("PF0112", "Gateway", "raw")} <= codes
