"""ztunnel's DNS answerer on whatever bytes a pod sends to 15053: it never raises anything but
``MalformedQuery`` while parsing; every message with an id gets an answer carrying that id
(FORMERR when it is not a readable query) or is forwarded as it came."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given
from hypothesis import strategies as st

from pilotfish.core.ambient import dns
from pilotfish.core.ambient.state import WorkloadState
from tests.unit.core.ambient.wds_state import MESH, state_from

STATE: WorkloadState = state_from(MESH)

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(st.sampled_from(["cart", "shop", "svc", "cluster", "local", "bank"]) | labels,
                 min_size=0, max_size=6).map(".".join)


def check(data: bytes) -> None:
    with contextlib.suppress(dns.MalformedQuery):
        dns.parse_query(data)
    decision = dns.decide(STATE, data, "shop", limit=dns.UDP_LIMIT)
    if decision is None:
        assert len(data) < 2
    elif isinstance(decision, dns.Reply):
        assert decision.wire[:2] == data[:2]
        assert decision.wire[2] & 0x80  # a response
        assert len(decision.wire) <= dns.UDP_LIMIT
        dns.answer_of(decision.wire)
    else:
        assert decision.query.wire == data


@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data)


@given(names, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=40))
def test_queries_with_damaged_tails(name: str, qtype: int, query_id: int,
                                    tail: bytes) -> None:
    wire = dns.query(name, qtype, query_id)
    check(wire + tail)
    check(wire[:len(wire) // 2])


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 3),
       st.lists(st.integers(0, 255), max_size=40))
def test_headers_and_name_bytes(query_id: int, flags: int, questions: int,
                                name_bytes: list[int]) -> None:
    check(struct.pack("!HHHHHH", query_id, flags, questions, 0, 0, 0) + bytes(name_bytes)
          + b"\x00\x01\x00\x01")
