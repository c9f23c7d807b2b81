"""SotW requests are read head first; their names only when their fingerprint is new."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from pilotfish.core.xds import types
from pilotfish.core.xds.requests import SotwRequest
from pilotfish.core.xds.session import Mode, Outcome, Session

NAMES = [f"outbound|80||svc-{k}.shop.svc.cluster.local" for k in range(100)]


def ack(names: list[str], nonce: str = "n/1", version: str = "v1", **fields: object) -> bytes:
    request = discovery_pb2.DiscoveryRequest(
        type_url=types.ENDPOINT, resource_names=names, response_nonce=nonce,
        version_info=version, **fields)
    return request.SerializeToString()


def test_the_head_is_read_and_the_names_fingerprinted():
    request = SotwRequest(ack(NAMES))
    assert (request.type_url, request.response_nonce, request.version_info, request.error) == (
        types.ENDPOINT, "n/1", "v1", None)
    assert request.names_key is not None
    assert list(request.names) == NAMES


def test_the_fingerprint_ignores_what_changes_from_one_ack_to_the_next():
    first = SotwRequest(ack(NAMES))
    node = discovery_pb2.DiscoveryRequest().node
    node.id = "sidecar~10.0.0.1~a.shop~shop.svc.cluster.local"
    again = SotwRequest(ack(NAMES, nonce="n/2", version="v2", node=node))
    assert again.names_key == first.names_key
    assert SotwRequest(ack(NAMES[:-1])).names_key != first.names_key
    assert SotwRequest(ack([*NAMES[1:], NAMES[0]])).names_key != first.names_key


def test_requests_that_are_read_in_full():
    assert SotwRequest(ack(NAMES, nonce="")).names_key is None  # a new subscription
    assert SotwRequest(ack(NAMES[:3])).names_key is None  # a few names: cheaper to read
    nack = SotwRequest(ack(NAMES, error_detail={"code": 3}))
    assert (nack.error, nack.names_key) == ("rejected (code 3)", None)
    said = SotwRequest(ack(NAMES, error_detail={"message": "bad cluster"}))
    assert said.error == "bad cluster"


def test_bad_bytes_fail_as_the_whole_message_would():
    with pytest.raises(DecodeError):
        SotwRequest(b"\x22\x05\xff\xfe\xfd\xfc\xfb")  # type_url: not UTF-8
    with pytest.raises(DecodeError):
        SotwRequest(b"\x0a\x7f")  # truncated


def test_a_session_parses_the_names_only_when_the_fingerprint_is_new(monkeypatch):
    session = Session(Mode.SOTW, "s/")
    opening = SotwRequest(ack(NAMES, nonce=""))
    session.receive_sotw(types.ENDPOINT, opening.names, "", "", None, 0.0)
    nonce = session.watches[types.ENDPOINT].nonce_sent = "s/1"
    parsed = []
    original = SotwRequest.message.fget

    def counting(self):
        parsed.append(self)
        return original(self)

    monkeypatch.setattr(SotwRequest, "message", property(counting))
    for repeat in range(3):
        request = SotwRequest(ack(NAMES, nonce=nonce, version=f"v{repeat}"))
        decision = session.receive_sotw(types.ENDPOINT, request.names, nonce, "v", None,
                                        1.0, request.names_key)
        assert decision.outcome is Outcome.ACK
    assert len(parsed) == 1  # the first ACK, whose key the watch did not hold yet
    fewer = SotwRequest(ack(NAMES[:50], nonce=nonce))
    session.receive_sotw(types.ENDPOINT, fewer.names, nonce, "v", None, 2.0, fewer.names_key)
    assert len(parsed) == 2
    assert session.watches[types.ENDPOINT].names == set(NAMES[:50])


def test_a_request_laid_out_in_another_field_order_gets_the_same_id():
    from pilotfish.core.xds.resources import field_str
    names = b"".join(field_str(3, name) for name in NAMES)
    reordered = (field_str(5, "n/9") + names + field_str(4, types.ENDPOINT)
                 + field_str(1, "v9"))
    request = SotwRequest(reordered)
    assert request.response_nonce == "n/9" and list(request.names) == NAMES
    assert request.names_key == SotwRequest(ack(NAMES)).names_key


def test_encodings_keep_ids_unique_and_their_bytes_bounded():
    from pilotfish.core.xds.requests import Encodings
    encodings = Encodings(limit=3000)
    a = b"x" * 40 + b"a" * 1000 + b"y" * 40
    b = b"x" * 40 + b"b" * 1000 + b"y" * 40  # the same length and edges: compared in full
    ids = [encodings.id_of(a, 0, len(a)), encodings.id_of(b, 0, len(b))]
    assert ids[0] != ids[1]
    assert encodings.id_of(b"--" + a + b"--", 2, 2 + len(a)) == ids[0]  # found in place
    c = b"c" * 1080
    third = encodings.id_of(c, 0, len(c))  # past the limit: the oldest (a) is forgotten
    assert third not in ids
    assert encodings.id_of(b, 0, len(b)) == ids[1]
    assert encodings.id_of(a, 0, len(a)) not in (*ids, third)  # seen again: a new id


def test_encodings_alike_at_both_ends_are_kept_a_few_at_a_time():
    """A client sending many encodings of one length and the same ends (a hostile one)
    cannot make every request compare against all of them."""
    from pilotfish.core.xds.requests import Encodings
    encodings = Encodings()
    alike = [b"<" * 40 + bytes([k]) * 600 + b">" * 40 for k in range(50)]
    ids = [encodings.id_of(data, 0, len(data)) for data in alike]
    assert len(set(ids)) == 50
    assert sum(len(c) for c in encodings._by_edge.values()) == Encodings.PER_EDGE
    assert encodings._size == Encodings.PER_EDGE * 680
    assert encodings.id_of(alike[-1], 0, 680) == ids[-1]  # the newest are still known
