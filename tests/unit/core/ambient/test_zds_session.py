"""ZDS's rules without sockets: the codec, the per-packet checks, lockstep, both sides."""

from __future__ import annotations

import socket

import pytest

from pilotfish.core.ambient import zds_pb2
from pilotfish.core.ambient.zds_session import (
    Add,
    AgentSession,
    AgentState,
    Delete,
    Keep,
    SnapshotSent,
    WorkloadInfo,
    ZdsError,
    ZtunnelSession,
)

INFO = WorkloadInfo(name="web-1", namespace="shop", service_account="web")


def ack(error: str = "") -> bytes:
    return zds_pb2.WorkloadResponse(ack=zds_pb2.Ack(error=error)).SerializeToString()


def talking() -> tuple[AgentSession, ZtunnelSession]:
    agent, ztunnel = AgentSession(), ZtunnelSession()
    assert agent.receive(ztunnel.hello()) is None
    return agent, ztunnel


def test_hello_is_v1_and_the_agent_refuses_another_version():
    assert zds_pb2.ZdsHello.FromString(ZtunnelSession().hello()).version == zds_pb2.V1
    agent = AgentSession()
    with pytest.raises(ZdsError, match="version 0 is not V1"):
        agent.receive(b"\x08\x00")  # version: NOT_USED, written out (proto3 would omit it)


def test_a_full_conversation_snapshot_then_adds_and_deletes():
    agent, ztunnel = talking()
    assert agent.state is AgentState.SNAPSHOT

    request = agent.request_add("uid-1", INFO)
    assert zds_pb2.WorkloadRequest.FromString(request).add.workload_info.service_account == "web"
    assert ztunnel.receive(request, [7]) == Add("uid-1", INFO, 7)
    assert agent.receive(ztunnel.ack()) == ""
    assert ztunnel.receive(agent.request_keep("uid-2"), []) == Keep("uid-2")
    assert agent.receive(ztunnel.ack()) == ""
    assert ztunnel.receive(agent.request_snapshot_sent(), []) == SnapshotSent(
        frozenset({"uid-1", "uid-2"}))
    assert agent.state is AgentState.SNAPSHOT  # not until the Ack
    assert agent.receive(ztunnel.ack()) == ""
    assert agent.state is AgentState.READY

    assert ztunnel.receive(agent.request_delete("uid-2"), []) == Delete("uid-2")
    assert agent.receive(ztunnel.ack("no such pod")) == "no such pod"


def test_the_agent_sends_one_request_at_a_time():
    agent, _ = talking()
    agent.request_add("uid-1", INFO)
    with pytest.raises(ZdsError, match="add is still waiting for its Ack"):
        agent.request_add("uid-2", INFO)


def test_an_unsolicited_or_foreign_message_from_ztunnel_is_an_error():
    agent, _ = talking()
    with pytest.raises(ZdsError, match="no request outstanding"):
        agent.receive(ack())
    agent.request_snapshot_sent()
    with pytest.raises(ZdsError, match="is not an Ack"):
        agent.receive(b"\x12\x00")  # an unknown field: parses, but holds no Ack
    with pytest.raises(ZdsError, match=r"not a istio\.workload\.zds\.WorkloadResponse"):
        agent.receive(b"\xff\xff\xff")


def test_requests_belong_to_their_phase():
    agent = AgentSession()
    with pytest.raises(ZdsError, match="not said hello"):
        agent.request_add("uid-1", INFO)
    agent, ztunnel = talking()
    with pytest.raises(ZdsError, match="only after the snapshot"):
        agent.request_delete("uid-1")
    ztunnel.receive(agent.request_snapshot_sent(), [])
    agent.receive(ztunnel.ack())
    with pytest.raises(ZdsError, match="only part of a snapshot"):
        agent.request_keep("uid-1")
    with pytest.raises(ZdsError, match="no snapshot is being sent"):
        agent.request_snapshot_sent()


def test_truncation_is_an_error_on_both_sides():
    agent, ztunnel = talking()
    agent.request_snapshot_sent()
    with pytest.raises(ZdsError, match="MSG_TRUNC"):
        agent.receive(ack(), [], socket.MSG_TRUNC)
    with pytest.raises(ZdsError, match="MSG_CTRUNC"):
        ztunnel.receive(AgentSession(state=AgentState.SNAPSHOT).request_add("u", INFO), [3],
                        socket.MSG_CTRUNC)


def test_the_netns_descriptor_comes_with_add_and_nothing_else():
    sender = AgentSession(state=AgentState.READY)
    with pytest.raises(ZdsError, match="expected the pod's netns as one file descriptor, got 0"):
        ZtunnelSession().receive(sender.request_add("uid-1", INFO), [])
    sender.outstanding = ""
    with pytest.raises(ZdsError, match="got 2"):
        ZtunnelSession().receive(sender.request_add("uid-1", INFO), [3, 4])
    sender.outstanding = ""
    with pytest.raises(ZdsError, match="del: came with 1 file descriptor"):
        ZtunnelSession(snapshot_done=True).receive(sender.request_delete("uid-1"), [3])
    agent, _ = talking()
    agent.request_snapshot_sent()
    with pytest.raises(ZdsError, match="may carry none"):
        agent.receive(ack(), [5])


def test_ztunnel_holds_the_agent_to_lockstep_and_one_snapshot():
    agent = AgentSession(state=AgentState.SNAPSHOT)
    ztunnel = ZtunnelSession()
    ztunnel.receive(agent.request_keep("uid-1"), [])
    agent.outstanding = ""
    with pytest.raises(ZdsError, match="before the previous one was acknowledged"):
        ztunnel.receive(agent.request_keep("uid-2"), [])
    ztunnel.ack()
    with pytest.raises(ZdsError, match="no request to answer"):
        ztunnel.ack()
    agent.outstanding = ""
    ztunnel.receive(agent.request_snapshot_sent(), [])
    ztunnel.ack()
    agent.outstanding = ""
    with pytest.raises(ZdsError, match="snapshot_sent: a second time"):
        ztunnel.receive(agent.request_snapshot_sent(), [])
    ztunnel.awaiting_ack = False
    agent.outstanding = ""
    with pytest.raises(ZdsError, match="snapshot was already sent"):
        ztunnel.receive(agent.request_keep("uid-3"), [])


def test_ztunnel_refuses_an_empty_request_and_an_empty_packet():
    with pytest.raises(ZdsError, match="no payload"):
        ZtunnelSession().receive(b"\x62\x00", [])  # field 12: unknown, no payload set
    with pytest.raises(ZdsError, match="empty packet"):
        ZtunnelSession().receive(b"", [])


def test_deleting_forgets_a_pod_for_the_snapshot():
    ztunnel = ZtunnelSession()
    agent = AgentSession(state=AgentState.SNAPSHOT)
    ztunnel.receive(agent.request_add("uid-1", INFO), [3])
    agent.receive(ztunnel.ack())
    assert ztunnel.known == {"uid-1"}
    ztunnel.receive(agent.request_snapshot_sent(), [])
    agent.receive(ztunnel.ack())
    ztunnel.receive(agent.request_delete("uid-1"), [])
    assert ztunnel.known == set()
