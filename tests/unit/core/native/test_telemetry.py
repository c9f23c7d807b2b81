"""The native proxy's Istio metrics: the TLS labels of requests and connections, from the
handshake or, on an internal hop from an HBONE tunnel this proxy terminated, from the
filter state ``connect_terminate`` shared with it."""

from __future__ import annotations

from pilotfish.core.istio_metrics import LOCAL_PRINCIPAL, PEER_PRINCIPAL, Workload
from pilotfish.core.native import rbac
from pilotfish.core.native.telemetry import IstioCounts, Outcome

INBOUND = "inbound|8080||"
OUTBOUND = "outbound|80||web.shop.svc.cluster.local"
CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
WEB = "spiffe://cluster.local/ns/shop/sa/web"
ME = Workload.from_labels("web-1", "shop", {"app": "web"})
TUNNELED = rbac.Facts("127.0.0.1", filter_state={PEER_PRINCIPAL: CLIENT, LOCAL_PRINCIPAL: WEB})


def requests(counts: IstioCounts) -> dict[tuple[str, str, str, str], str]:
    family = next(f for f in counts.series.families(ME, {})
                  if f.name == "istio_requests_total")
    return {(s.label("reporter"), s.label("source_principal"), s.label("destination_principal"),
             s.label("connection_security_policy")): s.value for s in family.samples}


def test_a_tunneled_request_is_mutual_tls_between_the_tunnels_identities() -> None:
    counts = IstioCounts()
    for _ in range(2):
        counts.request(Outcome(200, cluster=INBOUND), 0, 0.001, TUNNELED)
    counts.request(Outcome(200, cluster=INBOUND), 0, 0.001, rbac.Facts("127.0.0.1"))
    assert requests(counts) == {
        ("destination", CLIENT, WEB, "mutual_tls"): "2",
        ("destination", "unknown", "unknown", "none"): "1",  # plaintext: no tunnel, no TLS
    }


def test_the_handshake_wins_over_filter_state() -> None:
    """A peer certificate on the hop itself is what the labels say, whatever state rode in."""
    counts = IstioCounts()
    peer = rbac.Facts("127.0.0.1", principals=(WEB,), identity=CLIENT,
                      filter_state={PEER_PRINCIPAL: "spiffe://cluster.local/ns/x/sa/other"})
    counts.request(Outcome(200, cluster=INBOUND), 0, 0.001, peer)
    assert requests(counts) == {("destination", WEB, CLIENT, "mutual_tls"): "1"}


def test_our_own_certificate_on_the_hop_stays_the_destination_principal() -> None:
    counts = IstioCounts()
    peer = rbac.Facts("127.0.0.1", identity="spiffe://cluster.local/ns/shop/sa/hop",
                      filter_state={PEER_PRINCIPAL: CLIENT, LOCAL_PRINCIPAL: WEB})
    counts.request(Outcome(200, cluster=INBOUND), 0, 0.001, peer)
    assert requests(counts) == {
        ("destination", CLIENT, "spiffe://cluster.local/ns/shop/sa/hop", "mutual_tls"): "1"}


def test_tunneled_tcp_connections_carry_the_tunnels_identities() -> None:
    counts = IstioCounts()
    counts.tcp(INBOUND, opened=True, peer=TUNNELED)
    counts.tcp(INBOUND, received=5, sent=7, peer=TUNNELED)
    counts.tcp(OUTBOUND, opened=True, peer=TUNNELED)  # the client side: unknown, as Istio says
    labels = {(f.name, s.label("source_principal"), s.label("connection_security_policy"))
              for f in counts.series.families(ME, {}) for s in f.samples}
    assert ("istio_tcp_connections_opened_total", CLIENT, "mutual_tls") in labels
    assert ("istio_tcp_received_bytes_total", CLIENT, "mutual_tls") in labels
    assert ("istio_tcp_connections_opened_total", "unknown", "unknown") in labels
