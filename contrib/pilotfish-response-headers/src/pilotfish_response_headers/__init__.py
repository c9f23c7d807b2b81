"""Add response headers to every route configuration a proxy receives.

The whole plugin is one hook implementation. It edits the RouteConfiguration messages the
``rds`` generator produced, before they are serialized and cached for the proxy's scope.
"""

from __future__ import annotations

import os
from typing import Any

from envoy.config.core.v3 import base_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.xds import types

DEFAULT_HEADERS = "x-mesh=pilotfish"


def configured_headers() -> list[tuple[str, str]]:
    text = os.environ.get("PILOTFISH_RESPONSE_HEADERS", DEFAULT_HEADERS)
    pairs = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"PILOTFISH_RESPONSE_HEADERS: {item!r} is not NAME=VALUE"
            )
        pairs.append((name.strip().lower(), value.strip()))
    return pairs


@hookimpl
def pilotfish_patch_resources(type_url: str, scope: Any, push: Any, resources: list[Any]) -> None:
    if type_url != types.ROUTE:
        return
    headers = configured_headers()
    for route_config in resources:
        for name, value in headers:
            route_config.response_headers_to_add.append(base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=value),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            ))
