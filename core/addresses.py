"""Telling addresses from names, without the config model.

``core.model`` re-exports ``is_ip``; ztunnel's DNS proxy and inbound path import it from
here, so that ztunnel's process does not load the model, its objects and its protocols
for one function (0.4 MiB of its RSS, issue 13's target).
"""

from __future__ import annotations

import ipaddress


def is_ip(host: str) -> bool:
    """Is ``host`` an IPv4 or IPv6 address (not a name)?"""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
