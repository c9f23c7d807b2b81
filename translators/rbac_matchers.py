"""The value matchers AuthorizationPolicy attributes become in Envoy RBAC.

Every attribute takes Istio's string patterns: ``*`` (anything present), ``abc*`` (prefix),
``*abc`` (suffix), otherwise exact. Peer identities are matched on the URI SAN of the
client's certificate (``authenticated.principal_name``), which for mesh peers is the SPIFFE
ID ``spiffe://TRUST_DOMAIN/ns/NS/sa/SA``; request principals and claims on the JWT payload
that ``jwt_authn`` writes to dynamic metadata (see `jwt_authn`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from envoy.config.core.v3 import extension_pb2
from envoy.config.rbac.v3.rbac_pb2 import Permission, Principal
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from pilotfish.core.security_policies import path_template_error
from pilotfish.translators.common import pack
from pilotfish.translators.filter_chains import cidr
from pilotfish.translators.jwt_authn import JWT_FILTER, PAYLOAD_KEY

SPIFFE = "spiffe://"
URI_TEMPLATE = "envoy.path.match.uri_template"


class Untranslatable(ValueError):
    """An attribute value with no Envoy equivalent (the rule builder decides what then)."""


def _regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def string(value: str, *, prefix: str = "", ignore_case: bool = False
           ) -> string_pb2.StringMatcher:
    """Istio's string pattern as a StringMatcher; ``prefix`` is prepended to what is matched
    (``spiffe://`` for principals)."""
    if value == "*":
        return _regex(f"{re.escape(prefix)}.+" if prefix else ".+")
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        if prefix:  # the prefix must still lead: a suffix matcher alone would drop it
            return _regex(f"{re.escape(prefix)}.*{re.escape(value[1:])}")
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def _peer(matcher: string_pb2.StringMatcher) -> Principal:
    return Principal(authenticated=Principal.Authenticated(principal_name=matcher))


# -- source (principals) -------------------------------------------------------------------

def principal(value: str) -> Principal:
    """``cluster.local/ns/NS/sa/SA`` → the peer's SPIFFE ID."""
    return _peer(string(value, prefix=SPIFFE))


def namespace(value: str) -> Principal:
    """A namespace, as the ``/ns/NS/`` part of the peer's SPIFFE ID."""
    if value == "*":
        part = "[^/]+"
    elif value.endswith("*"):
        part = re.escape(value[:-1]) + "[^/]*"
    elif value.startswith("*"):
        part = "[^/]*" + re.escape(value[1:])
    else:
        part = re.escape(value)
    return _peer(_regex(f"{re.escape(SPIFFE)}[^/]+/ns/{part}/.*"))


def service_account(value: str) -> Principal:
    """``NS/SA`` (a service account of a namespace) as the end of the SPIFFE ID."""
    ns, slash, name = value.partition("/")
    if not slash or not ns or not name:
        raise Untranslatable(f"service account {value!r} is not NS/SA")
    return _peer(_regex(f"{re.escape(SPIFFE)}[^/]+/ns/{re.escape(ns)}/sa/{re.escape(name)}"))


def trust_domain(value: str) -> Principal:
    return _peer(string_pb2.StringMatcher(prefix=f"{SPIFFE}{value}/"))


def ip_block(value: str, *, remote: bool = False) -> Principal:
    """``ipBlocks`` match the connection's peer; ``remoteIpBlocks`` the client address
    the proxy trusts (X-Forwarded-For on gateways that use the remote address)."""
    block = cidr(value)
    if block is None:
        raise Untranslatable(f"{value!r} is not an IP address or CIDR block")
    return Principal(remote_ip=block) if remote else Principal(direct_remote_ip=block)


def header_principal(name: str, value: str) -> Principal:
    return Principal(header=_header(name, value))


# -- JWT payload (request principals and claims) ---------------------------------------------

def _claim(path: Sequence[str], value: value_pb2.ValueMatcher) -> metadata_pb2.MetadataMatcher:
    return metadata_pb2.MetadataMatcher(
        filter=JWT_FILTER,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)
              for key in (PAYLOAD_KEY, *path)],
        value=value,
    )


def claim(path: Sequence[str], value: str) -> Principal:
    """A claim that may be a string or a list of strings (``aud``, ``groups``): either
    form matches, as a token may carry one audience or several."""
    if value == "*":
        return Principal(metadata=_claim(path, value_pb2.ValueMatcher(present_match=True)))
    matcher = value_pb2.ValueMatcher(string_match=string(value))
    listed = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=matcher))
    return any_principal([Principal(metadata=_claim(path, matcher)),
                          Principal(metadata=_claim(path, listed))])


def request_principal(value: str) -> Principal:
    """``ISSUER/SUBJECT`` (split at the last ``/``) against the token's ``iss`` and ``sub``.

    A ``*`` may stand for the whole value, end it (the subject, or the issuer if the
    prefix names no subject) or start it (the issuer, or the subject if the suffix names
    no issuer)."""
    if value == "*":
        return claim(("iss",), "*")
    if value.endswith("*") and value.count("*") == 1:
        head = value[:-1]
        if "/" not in head:
            return claim(("iss",), value)
        issuer, _, subject = head.rpartition("/")
        return all_principals([claim(("iss",), issuer), claim(("sub",), subject + "*")])
    if value.startswith("*") and value.count("*") == 1:
        tail = value[1:]
        if "/" not in tail:
            return claim(("sub",), value)
        issuer, _, subject = tail.rpartition("/")
        return all_principals([claim(("iss",), "*" + issuer), claim(("sub",), subject)])
    issuer, slash, subject = value.rpartition("/")
    if not slash or "*" in value:
        raise Untranslatable(f"request principal {value!r} is not ISSUER/SUBJECT")
    return all_principals([claim(("iss",), issuer), claim(("sub",), subject)])


# -- operation (permissions) -------------------------------------------------------------

def _header(name: str, value: str, ignore_case: bool = False) -> rc_pb2.HeaderMatcher:
    if value == "*":
        return rc_pb2.HeaderMatcher(name=name, present_match=True)
    return rc_pb2.HeaderMatcher(name=name, string_match=string(value, ignore_case=ignore_case))


def host(value: str) -> Permission:
    """The request's authority, case-insensitively (a port, if sent, is part of it)."""
    return Permission(header=_header(":authority", value, ignore_case=True))


def method(value: str) -> Permission:
    return Permission(header=_header(":method", value))


def path(value: str) -> Permission:
    """The path without its query: exact, ``prefix*``, ``*suffix``, or a template with
    ``{*}`` (one segment) and ``{**}`` (any number of segments, no template after it)."""
    if "{*}" in value or "{**}" in value:
        reason = path_template_error(value)
        if reason:  # validation refuses these; never hand Envoy one it would abort on
            raise Untranslatable(f"path {value!r}: {reason}")
        template = value.replace("{**}", "**").replace("{*}", "*")
        return Permission(uri_template=extension_pb2.TypedExtensionConfig(
            name=URI_TEMPLATE,
            typed_config=pack(uri_template_match_pb2.UriTemplateMatchConfig(
                path_template=template)),
        ))
    matcher = _regex(".*") if value == "*" else string(value)
    return Permission(url_path=path_pb2.PathMatcher(path=matcher))


def port(value: str) -> Permission:
    if not str(value).isdigit():
        raise Untranslatable(f"port {value!r} is not a number")
    return Permission(destination_port=int(value))


def destination_ip(value: str) -> Permission:
    block = cidr(value)
    if block is None:
        raise Untranslatable(f"{value!r} is not an IP address or CIDR block")
    return Permission(destination_ip=block)


def server_name(value: str) -> Permission:
    return Permission(requested_server_name=string(value))


# -- combinators ----------------------------------------------------------------------------

def any_principal(ids: Sequence[Principal]) -> Principal:
    return ids[0] if len(ids) == 1 else Principal(or_ids=Principal.Set(ids=list(ids)))


def all_principals(ids: Sequence[Principal]) -> Principal:
    if not ids:
        return Principal(any=True)
    return ids[0] if len(ids) == 1 else Principal(and_ids=Principal.Set(ids=list(ids)))


def any_permission(rules: Sequence[Permission]) -> Permission:
    return rules[0] if len(rules) == 1 else Permission(
        or_rules=Permission.Set(rules=list(rules)))


def all_permissions(rules: Sequence[Permission]) -> Permission:
    if not rules:
        return Permission(any=True)
    return rules[0] if len(rules) == 1 else Permission(
        and_rules=Permission.Set(rules=list(rules)))


def values_principal(build: Callable[[str], Principal], values: Sequence[str],
                     negate: bool) -> Principal:
    """OR over the values; the ``not`` variants negate that."""
    matched = any_principal([build(str(v)) for v in values])
    return Principal(not_id=matched) if negate else matched


def values_permission(build: Callable[[str], Permission], values: Sequence[str],
                      negate: bool) -> Permission:
    matched = any_permission([build(str(v)) for v in values])
    return Permission(not_rule=matched) if negate else matched
