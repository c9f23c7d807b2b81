"""RequestAuthentication → the jwt_authn filter: providers, keys, where tokens come from."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from google.protobuf import json_format

from pilotfish.core.yamlload import load_text
from pilotfish.translators.jwt_authn import (
    JWT_FILTER,
    PAYLOAD_KEY,
    jwt_authentication,
    jwt_filter,
)

JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "e": "AQAB", "n": "sXch"}]})


def policy(rules: list[dict[str, Any]], name: str = "jwt") -> Any:
    text = json.dumps({
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": "shop"}, "spec": {"jwtRules": rules},
    })
    (obj,), errors = load_text(text, "test.yaml")
    assert not errors, errors
    return obj


def config(*rules: dict[str, Any]) -> jwt_pb2.JwtAuthentication:
    built = jwt_authentication([policy(list(rules))])
    assert built is not None
    return built


def keys(provider: jwt_pb2.JwtProvider) -> Any:
    return json.loads(provider.local_jwks.inline_string)


def test_one_provider_per_rule_with_the_fields_istio_has() -> None:
    found = config({
        "issuer": "https://issuer.example.com", "audiences": ["shop", "admin"], "jwks": JWKS,
        "fromHeaders": [{"name": "x-jwt", "prefix": "Token "}], "fromParams": ["token"],
        "fromCookies": ["session"], "forwardOriginalToken": True,
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header": "x-user", "claim": "sub"}],
    })
    provider = found.providers["shop/jwt/0"]
    assert as_dict(provider) == {
        "issuer": "https://issuer.example.com",
        "audiences": ["shop", "admin"],
        "localJwks": {"inlineString": JWKS},
        "forward": True,
        "fromHeaders": [{"name": "x-jwt", "valuePrefix": "Token "}],
        "fromParams": ["token"],
        "fromCookies": ["session"],
        "forwardPayloadHeader": "x-jwt-payload",
        "payloadInMetadata": PAYLOAD_KEY,
        "claimToHeaders": [{"headerName": "x-user", "claimName": "sub"}],
    }


def as_dict(message: Any) -> Any:
    return json_format.MessageToDict(message)


def test_defaults_leave_token_locations_to_envoy_and_drop_the_token() -> None:
    provider = config({"issuer": "a", "jwks": JWKS}).providers["shop/jwt/0"]
    assert not provider.from_headers and not provider.from_params
    assert provider.forward is False


def test_a_missing_token_passes_and_an_invalid_one_fails() -> None:
    found = config({"issuer": "a", "jwks": JWKS}, {"issuer": "b", "jwks": JWKS})
    (rule,) = found.rules
    assert rule.match.prefix == "/"
    requirements = rule.requires.requires_any.requirements
    assert [r.provider_name for r in requirements[:2]] == ["shop/jwt/0", "shop/jwt/1"]
    assert requirements[2].HasField("allow_missing")
    assert found.bypass_cors_preflight is True


def test_jwks_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(JWKS)
    provider = config({"issuer": "a", "jwksUri": f"file://{path}"}).providers["shop/jwt/0"]
    assert provider.local_jwks.inline_string == JWKS


@pytest.mark.parametrize("uri", [
    "https://issuer.example.com/.well-known/jwks.json", "file:///nonexistent/jwks.json",
])
def test_keys_that_cannot_be_had_refuse_every_token(uri: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="pilotfish.lds"):
        provider = config({"issuer": "a", "jwksUri": uri}).providers["shop/jwt/0"]
    assert [k["kid"] for k in keys(provider)["keys"]] == ["pilotfish-no-keys"]
    assert "RequestAuthentication shop/jwt jwtRules[0]" in caplog.text
    assert "will be refused" in caplog.text


def test_a_malformed_key_file_refuses_every_token(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text("not json")
    provider = config({"issuer": "a", "jwksUri": f"file://{path}"}).providers["shop/jwt/0"]
    assert keys(provider)["keys"][0]["kid"] == "pilotfish-no-keys"


def test_no_request_authentication_means_no_filter() -> None:
    assert jwt_filter([]) == []
    assert jwt_filter([policy([])]) == []
    (found,) = jwt_filter([policy([{"issuer": "a", "jwks": JWKS}])])
    assert found.name == JWT_FILTER


@pytest.mark.parametrize("kind", ["fifo", "device", "huge", "folder"])
def test_key_files_that_would_stall_or_sink_discovery_are_refused(
        kind: str, tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "jwks.json"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: an open() that waits would stall the push forever
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "huge":
        path.write_text(" " * (2 << 20) + JWKS)
    else:
        path.mkdir()
    with caplog.at_level(logging.WARNING, logger="pilotfish.lds"):
        provider = config({"issuer": "a", "jwksUri": f"file://{path}"}).providers["shop/jwt/0"]
    assert keys(provider)["keys"][0]["kid"] == "pilotfish-no-keys"
    assert {"fifo": "a FIFO", "device": "a device", "huge": "larger than",
            "folder": "a directory"}[kind] in caplog.text
