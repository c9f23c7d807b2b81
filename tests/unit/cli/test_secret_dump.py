"""``proxy-config secret`` rows from a SecretsConfigDump shaped as Envoy dumps it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from envoy.admin.v3 import config_dump_pb2
from google.protobuf import json_format

from pilotfish.agent.sds_server import secret_resources
from pilotfish.cli import secret_dump
from pilotfish.core.security import pki, signing, workload_cert
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.provider import SigningRequest
from pilotfish.core.xds import config_dump

ME = "spiffe://cluster.local/ns/shop/sa/reviews"
NOW = time.time()


def envoy_dump(warming: tuple[str, ...] = ()) -> tuple[dict[str, Any], Any]:
    """Envoy's /config_dump for the agent's two secrets (private key redacted, as Envoy
    does), plus the secret served."""
    root, root_key = pki.self_signed_root("cluster.local", NOW - 60)
    bundle = pki.make_bundle(root, root_key, [], [root])
    key = workload_cert.generate_key()
    csr = x509.load_pem_x509_csr(workload_cert.make_csr(key, ME).encode())
    chain = signing.sign_workload(
        bundle, SigningRequest(csr, Identity("shop", "reviews"), ME, 3600.0), NOW)
    secret = workload_cert.from_response(chain, key, ME, (), NOW)
    dump = config_dump_pb2.SecretsConfigDump()
    for resource in secret_resources(secret).resources.values():
        message = resource.message()
        if message.HasField("tls_certificate"):
            message.tls_certificate.private_key.inline_bytes = b"[redacted]"
        entry = dump.dynamic_active_secrets.add(name=resource.name, version_info="v1")
        entry.secret.Pack(message)
    for name in warming:
        dump.dynamic_warming_secrets.add(name=name)
    packed = config_dump_pb2.ConfigDump()
    packed.configs.add().Pack(dump)
    return json_format.MessageToDict(packed, preserving_proto_field_name=True), secret


def test_rows_in_istioctls_columns_with_spiffe_id_and_root():
    dump, secret = envoy_dump()
    section = config_dump.secrets(dump)
    assert section["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
    rows = secret_dump.secret_rows(section)
    assert secret_dump.SECRET_HEADERS[:7] == ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT",
                                              "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]
    default, root = rows
    leaf = secret.leaf
    expiry = datetime.fromtimestamp(leaf.not_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert default == ["default", "Cert Chain", "ACTIVE", "true", leaf.serial, expiry,
                       datetime.fromtimestamp(leaf.not_before, UTC).strftime(
                           "%Y-%m-%dT%H:%M:%SZ"), ME, "O=cluster.local"]
    assert root[:4] == ["ROOTCA", "CA", "ACTIVE", "true"]
    assert root[4] == format(secret.roots[0].serial_number, "x")
    assert root[7:] == ["-", "O=cluster.local"]


def test_expired_certificate_is_not_valid():
    dump, secret = envoy_dump()
    later = datetime.fromtimestamp(secret.leaf.not_after + 1, UTC)
    default, _ = secret_dump.secret_rows(config_dump.secrets(dump), later)
    assert default[3] == "false"


def test_warming_secrets_are_listed_without_certificate_columns():
    dump, _ = envoy_dump(warming=("kubernetes://gateway-cert",))
    rows = secret_dump.secret_rows(config_dump.secrets(dump))
    assert rows[-1][:4] == ["kubernetes://gateway-cert", "", "WARMING", "false"]


def test_file_based_and_empty_dumps():
    section = {"static_secrets": [{"name": "static", "secret": {
        "name": "static", "tls_certificate": {"certificate_chain": {"filename": "/c.pem"}}}}]}
    [row] = secret_dump.secret_rows(section)
    assert row[:4] == ["static", "Cert Chain", "ACTIVE", "false"]
    assert row[-1] == "file /c.pem"
    assert secret_dump.secret_rows(config_dump.secrets({"configs": []})) == []
