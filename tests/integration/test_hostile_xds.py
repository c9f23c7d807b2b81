"""xDS clients that flood, NACK at length, hold idle streams or churn scopes cannot hurt
discovery: each is bounded (``discovery.xdsLimits``) and discovery keeps answering others."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pilotfish.core.xds import types
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import http, wait_until
from pilotfish.testing.xds_client import AdsStream, fetch

CONFIG = WEB_SERVICE
LIMITS = "discovery: {xdsLimits: {firstRequestTimeout: 1s, streamsPerPeer: 60}}\n"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("hostile-xds")) as mesh:
        mesh.write("web.yaml", CONFIG)
        mesh.start_discovery(LIMITS)
        yield mesh


def address(mesh: LocalMesh) -> str:
    return f"127.0.0.1:{mesh.xds_port}"


def cache(mesh: LocalMesh) -> dict[str, int]:
    return dict(http(f"{mesh.debug}/debug/push_status").json()["cache"])


def still_answers(mesh: LocalMesh) -> None:
    started = time.monotonic()
    assert http(f"{mesh.debug}/ready", timeout=1).status == 200
    reply = fetch(address(mesh), types.CLUSTER, timeout=1)
    assert reply.resources and time.monotonic() - started < 2


def node(index: int) -> str:
    return f"sidecar~10.9.{index // 250}.{index % 250 + 1}~p{index}.shop~shop.svc.cluster.local"


def test_unknown_type_urls_cache_nothing_and_a_stream_holds_at_most_32_types(mesh):
    before = cache(mesh)
    with AdsStream(address(mesh)) as stream:
        for index in range(32):  # named resources of types nothing serves
            stream.request(f"type.googleapis.com/nothing.Here{index}", ["a", "b"])
        assert stream.ended(0.5) is None  # 32 are allowed
        stream.request("type.googleapis.com/nothing.Here32", ["a"])
        ended = stream.ended(5)
    assert isinstance(ended, grpc.RpcError)
    assert ended.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "32 resource types at most" in ended.details()
    assert cache(mesh)["sets"] == before["sets"]  # nothing kept for type URLs nobody serves
    still_answers(mesh)


def test_scopes_that_come_and_go_leave_nothing_behind(mesh):
    before = cache(mesh)
    for index in range(150):  # distinct labels: a new scope each
        reply = fetch(address(mesh), types.CLUSTER, node_id=node(index),
                      metadata={"LABELS": {"run": str(index)}}, timeout=2)
        assert reply.resources
    wait_until(lambda: cache(mesh)["latest"] <= before["latest"] + 1, 10,
               what="the departed scopes to be forgotten")
    assert cache(mesh)["sets"] <= before["sets"] + 1
    still_answers(mesh)


def test_nacks_with_long_messages_are_kept_short_and_logged_rarely(mesh):
    log_path = mesh.workdir / "discovery.log"
    size_before = log_path.stat().st_size
    text = "x" * 100_000
    with AdsStream(address(mesh), node_id=node(999)) as stream:
        stream.request(types.CLUSTER)
        reply = stream.response(2)
        for _ in range(300):
            stream.nack(reply, text)
        stream.ack(reply)  # flushes the stream's queue: every NACK was handled before it
        time.sleep(0.5)
        (item,) = [i for i in http(f"{mesh.debug}/debug/syncz").json()
                   if i["proxy"] == "p999.shop"]
        kept = item["resources"][types.CLUSTER]
        assert kept["nacks"] == 300
    grown = log_path.stat().st_size - size_before
    assert grown < 20_000, f"the log grew {grown} bytes for 300 NACKs of 100 kB"
    still_answers(mesh)


def test_streams_that_never_ask_are_closed_after_the_first_request_deadline(mesh):
    streams = [AdsStream(address(mesh)) for _ in range(40)]
    try:
        started = time.monotonic()
        endings = [stream.ended(5) for stream in streams]
        assert all(isinstance(e, grpc.RpcError) and e.code() is
                   grpc.StatusCode.DEADLINE_EXCEEDED for e in endings), endings[:3]
        assert time.monotonic() - started < 4  # 1 s each, all at once
    finally:
        for stream in streams:
            stream.close()
    still_answers(mesh)


def test_one_address_holds_a_bounded_number_of_streams(mesh):
    channel = grpc.insecure_channel(address(mesh))
    streams = []
    try:
        for index in range(60):
            stream = AdsStream(address(mesh), node_id=node(2000 + index), channel=channel)
            stream.request(types.CLUSTER)
            stream.response(5)
            streams.append(stream)
        log_path = mesh.workdir / "discovery.log"
        lines_before = log_path.read_text().count("one more refused")
        for _ in range(20):
            extra = AdsStream(address(mesh), channel=channel)
            ended = extra.ended(5)
            assert isinstance(ended, grpc.RpcError)
            assert ended.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "holds 60 streams" in ended.details()
        # Refused, and said once per interval however often it is tried.
        assert log_path.read_text().count("one more refused") - lines_before == 1
    finally:
        for stream in streams:
            stream.close()
        channel.close()
    still_answers(mesh)


def test_limits_in_the_mesh_config_are_checked(tmp_path: Path):
    from pilotfish.core import meshconfig

    with pytest.raises(meshconfig.MeshConfigError, match=r"xdsLimits\.streamsPerPeer"):
        meshconfig.from_dict({"discovery": {"xdsLimits": {"streamsPerPeer": 0}}})
    with pytest.raises(meshconfig.MeshConfigError, match="unknown field 'streams'"):
        meshconfig.from_dict({"discovery": {"xdsLimits": {"streams": 3}}})


def test_streams_through_the_tls_front_count_per_client_address(tmp_path: Path):
    """On 15012 every connection reaches the xDS server from a hop of its own; the limit
    still counts the client's address, not the hop."""
    from pilotfish.testing.certs import DISCOVERY_NAME

    with LocalMesh(tmp_path) as mesh:
        mesh.write("web.yaml", CONFIG)
        mesh.start_discovery("discovery: {xdsLimits: {streamsPerPeer: 3}}\n")
        credentials = grpc.ssl_channel_credentials(mesh.root_cert.read_bytes())
        channels = [grpc.secure_channel(mesh.secure_address, credentials, options=[
            ("grpc.ssl_target_name_override", DISCOVERY_NAME),
            ("grpc.pilotfish_test_connection", index)]) for index in range(4)]
        streams = []
        try:
            for channel in channels[:3]:  # three connections, a stream each, holding
                streams.append(AdsStream(mesh.secure_address, channel=channel))
            time.sleep(0.5)
            assert all(s.ended(0.1) is None for s in streams)
            extra = AdsStream(mesh.secure_address, channel=channels[3])
            ended = extra.ended(5)
            assert isinstance(ended, grpc.RpcError), ended
            assert ended.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, ended
            assert "127.0.0.1 holds 3 streams" in ended.details()
        finally:
            for stream in streams:
                stream.close()
            for channel in channels:
                channel.close()


def test_proxies_that_stop_reading_give_their_write_slots_back_after_the_send_timeout(
        tmp_path: Path):
    """Clients that ask and never read hold a write slot each until the send timeout;
    with as many of them as there are slots, nobody else would be answered. After it,
    their streams are given up and everyone else is served."""
    from envoy.service.discovery.v3 import discovery_pb2

    from pilotfish.testing.xds_client import METHOD
    from pilotfish.testing.xds_client import node as node_message

    services = "".join(f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: svc-{k}, namespace: shop}}
spec: {{selector: {{app: svc-{k}}}, ports: [{{name: http, port: 80}}]}}
""" for k in range(600))  # clusters of well over what a stalled reader takes
    with LocalMesh(tmp_path) as mesh:
        mesh.write("many.yaml", services)
        mesh.start_discovery("discovery: {xdsLimits: {sendTimeout: 1s}, pushConcurrency: 2}\n")
        done = threading.Event()

        def held(index: int) -> Iterator[discovery_pb2.DiscoveryRequest]:
            yield discovery_pb2.DiscoveryRequest(type_url=types.CLUSTER,
                                                 node=node_message(node(3000 + index)))
            done.wait()  # one request, then nothing until the test ends

        # No BDP probing: the window stays at 64 KiB, so a response is stuck until read.
        channels = [grpc.insecure_channel(address(mesh), options=[
            ("grpc.http2.bdp_probe", 0), ("grpc.pilotfish_test_stream", index)])
            for index in range(2)]
        calls = [channel.stream_stream(
            METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(held(index))
            for index, channel in enumerate(channels)]
        log_path = mesh.workdir / "discovery.log"
        try:
            # Both given up (said once: the warning is rate-limited like the others).
            wait_until(lambda: len(re.findall(r"p300[01]\.shop-\d+ disconnected",
                                              log_path.read_text())) == 2,
                       10, what="both streams to be given up")
            assert "did not read a response within 1s" in log_path.read_text()
            still_answers(mesh)  # a write slot is free again
        finally:
            done.set()
            for call in calls:
                call.cancel()
            for channel in channels:
                channel.close()
