"""Real first bytes of connections, and the contract every sniffer plugin must keep.

``samples()`` gives what clients of common protocols really send first (a TLS ClientHello
made by Python's ``ssl``, HTTP/1.x request lines, the h2c preface) and what server-first or
binary protocols look like. ``check_sniffer`` runs a sniffer over them the way core uses
it; a third-party sniffer's test suite can call it as is::

    from pilotfish.testing.sniffers import check_sniffer
    def test_contract(): check_sniffer(MySniffer())
"""

from __future__ import annotations

import contextlib
import ssl

from pilotfish.core.sniffing import Sniffer, Verdict

H2C_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def client_hello(server_name: str | None = "api.example.com",
                 alpn: list[str] | None = None) -> bytes:
    """The first flight of a real TLS client, made over memory BIOs (no socket)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        client.do_handshake()
    return outgoing.read()


def samples() -> dict[str, bytes]:
    """Named first flights: client-first protocols, then bytes no built-in sniffer claims."""
    return {
        "tls-sni": client_hello("api.example.com"),
        "tls-h2": client_hello("other.example.com", ["h2", "http/1.1"]),
        "tls-bare": client_hello(None),
        "http11": b"GET /productpage HTTP/1.1\r\nHost: bookinfo\r\n\r\n",
        "http10": b"GET / HTTP/1.0\r\n\r\n",
        "h2c": H2C_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        "redis": b"*1\r\n$4\r\nPING\r\n",
        "ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
        "mysql-greeting": b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00",
        "smtp-banner": b"220 mail.example.com ESMTP\r\n",
    }


def check_sniffer(sniffer: Sniffer) -> None:
    """Assert the sniffer contract on every sample and on every prefix of each.

    - it names itself, what it reports, and its read bound;
    - it is a function of its input (same bytes, same answer);
    - it reports only protocols it declares;
    - once detected or unknown, more bytes never change the answer (the IO side stops
      reading at the first answer that is not NEED_MORE);
    - at ``max_prefix`` bytes it has made up its mind.
    """
    assert sniffer.name and sniffer.protocols and sniffer.max_prefix > 0, sniffer
    for name, data in samples().items():
        settled = None
        for end in range(len(data) + 1):
            result = sniffer.sniff(data[:end])
            assert result == sniffer.sniff(data[:end]), f"{name}: not deterministic"
            if result.verdict is Verdict.DETECTED:
                assert result.protocol in sniffer.protocols, f"{name}: {result.protocol}"
            if settled is not None:
                assert result == settled, f"{name}[:{end}]: changed its mind"
            elif result.verdict is not Verdict.NEED_MORE:
                settled = result
        padded = data + b"\x00" * max(0, sniffer.max_prefix - len(data))
        assert sniffer.sniff(padded[:sniffer.max_prefix]).verdict is not Verdict.NEED_MORE, (
            f"{name}: still undecided at max_prefix")
