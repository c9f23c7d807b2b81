"""Port protocols, chosen the way Istio chooses them.

``appProtocol`` wins; otherwise the port name's prefix before the first ``-``
(``http-web`` → HTTP); otherwise the protocol is unknown and the proxy sniffs it, except
for the well-known server-first ports, which are plain TCP.
"""

from __future__ import annotations

import enum


class Protocol(enum.Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    HTTP_PROXY = "HTTP_PROXY"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    UDP = "UDP"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UNSUPPORTED = "UnsupportedProtocol"  # not declared: detected at connection time

    @property
    def is_http(self) -> bool:
        return self in _HTTP_FAMILY

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_grpc(self) -> bool:
        return self in (Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_tcp(self) -> bool:
        """Carried as opaque bytes (TCP proxying, possibly TLS)."""
        return self in _TCP_FAMILY

    @property
    def is_unsupported(self) -> bool:
        return self is Protocol.UNSUPPORTED


_HTTP_FAMILY = frozenset(
    {Protocol.HTTP, Protocol.HTTP2, Protocol.HTTP_PROXY, Protocol.GRPC, Protocol.GRPC_WEB}
)
_TCP_FAMILY = frozenset(
    {Protocol.HTTPS, Protocol.TLS, Protocol.TCP, Protocol.MONGO, Protocol.REDIS, Protocol.MYSQL}
)

_BY_NAME = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "http_proxy": Protocol.HTTP_PROXY,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC_WEB,
    "https": Protocol.HTTPS,
    "tls": Protocol.TLS,
    "tcp": Protocol.TCP,
    "udp": Protocol.UDP,
    "mongo": Protocol.MONGO,
    "redis": Protocol.REDIS,
    "mysql": Protocol.MYSQL,
}

_APP_PROTOCOLS = {
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
}

# Server-first protocols: the client waits for the server to speak, so sniffing would stall.
SERVER_FIRST_PORTS = frozenset({25, 53, 3306, 27017})


def parse(name: str) -> Protocol:
    """A protocol name as written in Gateway/ServiceEntry ``protocol:`` fields."""
    return _BY_NAME.get(name.lower(), Protocol.UNSUPPORTED)


def from_port(
    port_name: str | None,
    port: int,
    app_protocol: str | None = None,
    transport: str | None = None,
) -> Protocol:
    """Protocol of a Kubernetes Service port."""
    if (transport or "TCP").upper() == "UDP":
        return Protocol.UDP
    if app_protocol:
        known = _APP_PROTOCOLS.get(app_protocol) or _BY_NAME.get(app_protocol.lower())
        if known is not None:
            return known
    if port_name:
        lowered = port_name.lower()
        if lowered.startswith("grpc-web"):
            return Protocol.GRPC_WEB
        prefix = lowered.split("-", 1)[0]
        if prefix in _BY_NAME:
            return _BY_NAME[prefix]
    if port in SERVER_FIRST_PORTS:
        return Protocol.TCP
    return Protocol.UNSUPPORTED
