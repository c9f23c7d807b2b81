"""ztunnel's DNS answerer: the codec, the names a Kubernetes client sends through its search
path, answers from discovery's state, forwarding of everything else, FORMERR for what does
not parse."""

from __future__ import annotations

import struct

import pytest

from pilotfish.core.ambient import dns
from pilotfish.core.ambient.state import WorkloadState
from tests.unit.core.ambient.wds_state import MESH, state_from

EXTRA = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  addresses: [240.240.0.5, "2001:db8::5"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.9}]
---
apiVersion: v1
kind: Service
metadata: {name: cart-db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(scope="module")
def state() -> WorkloadState:
    return state_from(MESH + EXTRA)


def ask(state: WorkloadState, name: str, qtype: int = dns.A, namespace: str = "shop",
        limit: int | None = None) -> tuple[int, list[str]] | None:
    """(rcode, addresses) when ztunnel answers, None when it forwards."""
    decision = dns.decide(state, dns.query(name, qtype, query_id=0x1234), namespace,
                          limit=limit)
    assert decision is not None
    if isinstance(decision, dns.Forward):
        assert decision.query.wire == dns.query(name, qtype, query_id=0x1234)
        return None
    query_id, rcode, found = dns.answer_of(decision.wire)
    assert query_id == 0x1234
    return rcode, found


@pytest.mark.parametrize("name", [
    "cart",  # sent as is (ndots:1 clients)
    "cart.shop.svc.cluster.local",  # the first try of "cart" through the search path
    "cart.shop", "cart.shop.svc", "cart.shop.svc.cluster.local.",
    "cart.shop.shop.svc.cluster.local",  # "cart.shop" + the first search domain
    "cart.shop.svc.svc.cluster.local",  # "cart.shop.svc" + the second
    "cart.svc.cluster.local", "cart.cluster.local",  # "cart" + the other search domains
    "CART.Shop.SVC.cluster.local",  # names are case-insensitive
])
def test_a_service_is_answered_by_every_name_a_client_in_its_namespace_sends(
        state: WorkloadState, name: str) -> None:
    assert ask(state, name) == (dns.NOERROR, ["10.96.0.10"])


def test_names_are_relative_to_the_asking_pods_namespace(state: WorkloadState) -> None:
    assert ask(state, "ledger", namespace="bank") == (dns.NOERROR, ["10.96.0.40"])
    assert ask(state, "ledger.bank.shop.svc.cluster.local") == (dns.NOERROR, ["10.96.0.40"])
    # "ledger" from shop means ledger.shop: not in the mesh, so upstream decides.
    assert ask(state, "ledger") is None
    assert ask(state, "ledger.shop.svc.cluster.local") is None
    assert ask(state, "cart", namespace="bank") is None


def test_a_service_entry_host_with_addresses_gets_them_by_family(
        state: WorkloadState) -> None:
    assert ask(state, "api.example.com") == (dns.NOERROR, ["240.240.0.5"])
    assert ask(state, "api.example.com", dns.AAAA) == (dns.NOERROR, ["2001:db8::5"])


def test_a_known_name_without_the_asked_family_is_noerror_and_empty(
        state: WorkloadState) -> None:
    assert ask(state, "cart", dns.AAAA) == (dns.NOERROR, [])


def test_a_headless_service_answers_its_ready_workloads(state: WorkloadState) -> None:
    assert ask(state, "cart-db") == (dns.NOERROR, ["10.0.1.5", "10.0.1.6"])


@pytest.mark.parametrize("name, qtype", [
    ("example.org", dns.A), ("nothing.shop.svc.cluster.local", dns.A),
    ("cart.shop.svc.cluster.local", 33),  # SRV: not answered here
    ("cart.shop.svc.cluster.local", 16),  # TXT
])
def test_anything_else_is_forwarded_never_nxdomain(state: WorkloadState, name: str,
                                                    qtype: int) -> None:
    assert ask(state, name, qtype) is None


def test_an_answer_too_long_for_udp_is_truncated() -> None:
    query = dns.parse_query(dns.query("cart", query_id=7))
    many = [f"10.1.{i // 250}.{i % 250}" for i in range(40)]
    wire = dns.response(query, dns.NOERROR, many, limit=dns.UDP_LIMIT)
    flags, answers = struct.unpack_from("!H2xH", wire, 2)
    assert flags & 0x0200 and answers == 0 and len(wire) <= dns.UDP_LIMIT
    assert dns.answer_of(dns.response(query, dns.NOERROR, many))[2] == many


def test_the_answer_echoes_the_question_and_asks_for_recursion_as_the_query_did() -> None:
    wire = dns.query("cart", query_id=99)
    answer = dns.response(dns.parse_query(wire), dns.NOERROR, ["10.0.0.1"])
    flags = struct.unpack_from("!H", answer, 2)[0]
    assert flags & 0x8000 and flags & 0x0100 and flags & 0x0080  # QR, RD kept, RA
    assert answer[12:len(wire)] == wire[12:]


@pytest.mark.parametrize("data, why", [
    (b"\x12\x34", "shorter than a DNS header"),
    (struct.pack("!HHHHHH", 0x1234, 0x8000, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01",
     "a response"),
    (struct.pack("!HHHHHH", 0x1234, 0, 2, 0, 0, 0), "2 questions"),
    (struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"\x05cart", "runs past"),
    (struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
     "points forward"),
    (struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"\x04cart\x00\x00", "cut short"),
    (struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"\x80cart\x00\x00\x01\x00\x01",
     "label type"),
])
def test_malformed_queries_get_formerr_with_their_id(state: WorkloadState, data: bytes,
                                                     why: str) -> None:
    with pytest.raises(dns.MalformedQuery, match=why):
        dns.parse_query(data)
    decision = dns.decide(state, data, "shop")
    assert isinstance(decision, dns.Reply)
    assert dns.answer_of(decision.wire)[:2] == (0x1234, dns.FORMERR)


def test_a_message_without_an_id_is_dropped(state: WorkloadState) -> None:
    assert dns.decide(state, b"\x01", "shop") is None


def test_other_opcodes_get_notimp(state: WorkloadState) -> None:
    wire = bytearray(dns.query("cart", query_id=5))
    wire[2] |= 0x28  # opcode 5: UPDATE
    decision = dns.decide(state, bytes(wire), "shop")
    assert isinstance(decision, dns.Reply) and decision.wire[3] & 0xF == dns.NOTIMP


def test_nameservers_are_read_from_resolv_conf() -> None:
    text = ("# comment\nsearch shop.svc.cluster.local\nnameserver 10.96.0.10\n"
            "nameserver fe80::1%eth0 ; zone\nnameserver bogus\noptions ndots:5\n")
    assert dns.nameservers(text) == ("10.96.0.10", "fe80::1")


def test_names_too_long_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="longer than 63"):
        dns.query("x" * 64 + ".example")
