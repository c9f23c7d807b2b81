"""The localhost-listener check: running pods' sockets in, findings on the Pod out."""

from __future__ import annotations

import pytest

from pilotfish.analysis.localhost import (
    PodSockets,
    Socket,
    check_localhost_listeners,
    load_listeners,
    parse_socket,
    parse_ss,
)
from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.yamlload import load_text

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: grpc, port: 9090}
  - {name: tcp-debug, port: 7000}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: web
    image: web:1
    ports: [{name: web, containerPort: 8080}, {containerPort: 9090}]
status: {podIP: 10.1.0.5}
"""

SS = """\
State   Recv-Q  Send-Q   Local Address:Port    Peer Address:Port  Process
LISTEN  0       4096         127.0.0.1:8080         0.0.0.0:*
LISTEN  0       4096             [::1]:9090            [::]:*
LISTEN  0       4096         127.0.0.1:7000         0.0.0.0:*
LISTEN  0       4096                 *:7000               *:*
LISTEN  0       128      127.0.0.53%lo:53           0.0.0.0:*
"""


def push(policy: str = "PASSTHROUGH") -> push_context.PushContext:
    objects, errors = load_text(CONFIG, "shop.yaml")
    assert not errors
    return push_context.build(objects, MeshSettings(inbound_traffic_policy=policy), "v1")


def test_parse_ss_reads_local_addresses() -> None:
    assert parse_ss(SS) == [
        Socket("127.0.0.1", 8080), Socket("::1", 9090), Socket("127.0.0.1", 7000),
        Socket("*", 7000), Socket("127.0.0.53", 53)]


def test_parse_socket_forms() -> None:
    assert parse_socket("[::ffff:127.0.0.1]:80") == Socket("127.0.0.1", 80)
    assert parse_socket("0.0.0.0:80").loopback is False
    assert parse_socket("[::1]:80").loopback is True
    assert str(Socket("::1", 80)) == "[::1]:80"
    with pytest.raises(ValueError, match="ADDRESS:PORT"):
        parse_socket("localhost")


def test_ports_bound_to_loopback_only_that_a_service_targets() -> None:
    found = check_localhost_listeners(push(), [PodSockets("shop", "web-1", tuple(parse_ss(SS)))])
    # 8080 (named target "web") and 9090 are loopback-only; 7000 is also on "*"; 53 has no
    # Service pointing at it.
    assert [(f.check.code, str(f.key), f.field) for f in found] == [
        ("PF0108", "Pod/shop/web-1", "spec.containers[0].ports[0].containerPort"),
        ("PF0108", "Pod/shop/web-1", "spec.containers[0].ports[1].containerPort"),
    ]
    assert "listens on 127.0.0.1:8080 only" in found[0].message
    assert "port http" in found[0].message and "10.1.0.5" in found[0].message
    assert found[0].file == "shop.yaml" and found[0].line == 18


def test_localhost_inbound_policy_makes_loopback_right() -> None:
    sockets = [PodSockets("shop", "web-1", tuple(parse_ss(SS)))]
    assert check_localhost_listeners(push("LOCALHOST"), sockets) == []


def test_unknown_pods_are_ignored() -> None:
    assert check_localhost_listeners(push(), [PodSockets("shop", "ghost", (
        Socket("127.0.0.1", 8080),))]) == []


def test_load_listeners_json_shapes() -> None:
    assert load_listeners([{"pod": "shop/web-1", "listeners": ["127.0.0.1:8080"]}]) == [
        PodSockets("shop", "web-1", (Socket("127.0.0.1", 8080),))]
    assert load_listeners({"web-1": ["[::]:80"]}) == [
        PodSockets("default", "web-1", (Socket("::", 80),))]
    assert load_listeners([{"pod": "shop/web-1", "ss": SS}])[0].listeners[0] == Socket(
        "127.0.0.1", 8080)
    with pytest.raises(ValueError, match=r"\[0\]\.listeners: 'nope': expected ADDRESS:PORT"):
        load_listeners([{"pod": "shop/web-1", "listeners": ["nope"]}])
    with pytest.raises(ValueError, match=r"\[0\]: expected an object with pod"):
        load_listeners([["shop/web-1"]])
