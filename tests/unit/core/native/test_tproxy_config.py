"""What the native proxy reads of a TPROXY sidecar's listeners: transparent sockets and
original_src, from the listeners the sidecar generator makes for such a proxy."""

from __future__ import annotations

import pytest
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.native import config, subset
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.testing.generators import generate

NODE = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"


def listeners(mode: str) -> dict[str, config.Listener]:
    push = push_context.build([], MeshSettings(), "v1")
    proxy = parse_node(NODE, {"INTERCEPTION_MODE": mode})
    return {item.name: config.build_listener(item)
            for item in generate(types.LISTENER, push, proxy, {})}


def test_tproxy_capture_listeners_are_transparent_and_inbound_keeps_the_source() -> None:
    got = listeners("TPROXY")
    assert got["virtualOutbound"].transparent and not got["virtualOutbound"].original_src
    inbound = got["virtualInbound"]
    assert inbound.transparent and inbound.original_dst
    assert inbound.original_src and inbound.original_src_mark == 1337
    assert not inbound.inspectors or all(i.protocol in ("tls", "http")
                                         for i in inbound.inspectors)
    plain = listeners("REDIRECT")["virtualInbound"]
    assert not plain.transparent and not plain.original_src


def test_original_src_bind_port_is_refused_by_name() -> None:
    message = original_src_pb2.OriginalSrc(mark=1337, bind_port=True)
    with pytest.raises(subset.Unsupported) as caught:
        subset.check(message, "listener_filters[1].typed_config")
    assert "listener_filters[1].typed_config.bind_port" in str(caught.value)
