"""credentialName Secrets over ADS: Istio's layouts and names, the proxy's namespace only,
authenticated callers only; Secrets that cannot serve are refused by validation."""

from __future__ import annotations

import base64

import attrs
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import GenerationCache, Generators, PushState
from pilotfish.core.yamlload import load_text
from pilotfish.testing.certs import self_signed
from pilotfish.translators.sds import CredentialSecrets
from pilotfish.validation import validate

CERT, KEY = self_signed("web.example.com")
CA, _ = self_signed("ca.example.com")


def secret(name: str, data: dict[str, bytes], namespace: str = "shop",
           kind: str = "Opaque") -> str:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return (f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: "
            f"{namespace}}}\ntype: {kind}\ndata: {encoded!r}\n")


def generated(config: str, namespace: str = "shop") -> dict[str, secret_pb2.Secret]:
    objects, errors = load_text(config, "secrets.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node(f"router~10.0.0.1~gw-1.{namespace}~{namespace}.svc.cluster.local")
    return {s.name: s for s in CredentialSecrets().generate(push, proxy, {})}


def test_both_layouts_and_the_cacert_names_istio_gives_them():
    found = generated(
        secret("tls", {"tls.crt": CERT, "tls.key": KEY, "ca.crt": CA}, kind="kubernetes.io/tls")
        + secret("generic", {"cert": CERT, "key": KEY, "cacert": CA, "crl": b"CRL"})
        + secret("override", {"cert": CERT, "key": KEY, "cacert": CERT})
        + secret("override-cacert", {"cacert": CA})  # wins over override's own cacert
        + secret("clients", {"ca.crt": CA})  # a CA alone, as caCertCredentialName names it
        + secret("token", {"token": b"not TLS at all"}))
    assert sorted(found) == [
        "kubernetes://clients", "kubernetes://clients-cacert", "kubernetes://generic",
        "kubernetes://generic-cacert", "kubernetes://override", "kubernetes://override-cacert",
        "kubernetes://override-cacert-cacert", "kubernetes://tls", "kubernetes://tls-cacert"]
    pair = found["kubernetes://tls"].tls_certificate
    assert (pair.certificate_chain.inline_bytes, pair.private_key.inline_bytes) == (CERT, KEY)
    assert found["kubernetes://generic-cacert"].validation_context.crl.inline_bytes == b"CRL"
    for name in ("tls-cacert", "override-cacert", "clients"):
        trusted = found[f"kubernetes://{name}"].validation_context.trusted_ca.inline_bytes
        assert trusted == CA, name


def test_only_the_proxys_namespace_is_served():
    config = secret("web", {"cert": CERT, "key": KEY}, namespace="other")
    assert generated(config) == {}
    assert list(generated(config, namespace="other")) == ["kubernetes://web"]


def test_secrets_go_to_authenticated_callers_only():
    objects, _ = load_text(secret("web", {"cert": CERT, "key": KEY}), "s.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    generators = Generators.of(CredentialSecrets())
    cache = GenerationCache(generators)
    state = PushState(push, {}).advance(push, None, generators)
    plain = parse_node("router~10.0.0.1~gw-1.shop~shop.svc.cluster.local")
    secure = attrs.evolve(plain, verified_identity="spiffe://cluster.local/ns/shop/sa/gw")
    assert plain.scope == secure.scope  # the same scope, and still nothing for plaintext
    assert list(cache.resources(state, types.SECRET, secure).resources) == ["kubernetes://web"]
    assert cache.resources(state, types.SECRET, plain).resources == {}


@pytest.mark.parametrize(("data", "kind", "message"), [
    ({"tls.crt": CERT}, "kubernetes.io/tls",
     "data.tls.key: cannot serve as a TLS credential: needed beside tls.crt"),
    ({"tls.crt": b"junk", "tls.key": KEY}, "kubernetes.io/tls",
     "data.tls.crt: cannot serve as a TLS credential: holds no PEM certificate"),
    ({"cert": CERT, "key": b"junk"}, "Opaque",
     "data.key: cannot serve as a TLS credential: not a PEM private key without a password"),
    ({}, "kubernetes.io/tls",
     "data.tls.crt: cannot serve as a TLS credential: a kubernetes.io/tls Secret needs "
     "tls.crt and tls.key"),
])
def test_a_secret_that_cannot_serve_is_reported_naming_the_field(data, kind, message):
    """The API server stores such a Secret; pilotfish warns and never serves it."""
    objects, errors = load_text(secret("web", data, kind=kind), "s.yaml")
    assert not errors
    problems = [str(e) for e in validate(objects[0]) if e.severity == "warning"]
    assert len(problems) == 1 and message in problems[0], problems
    assert "junk" not in problems[0] and "PRIVATE KEY" not in problems[0]  # never echoed
    assert generated(secret("web", data, kind=kind)) == {}


def test_data_that_is_not_base64_is_refused():
    objects, _ = load_text("apiVersion: v1\nkind: Secret\nmetadata: {name: web, namespace: "
                           "shop}\ndata: {tls.crt: '%%%'}\n", "s.yaml")
    problems = [str(e) for e in validate(objects[0]) if e.severity == "error"]
    assert problems and "data.tls.crt" in problems[0], problems
