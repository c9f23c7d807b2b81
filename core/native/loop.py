"""The event loop the native proxy and ztunnel run on: uvloop when it is installed (a
dependency of pilotfish, so always, unless someone runs the core alone), asyncio's own loop
otherwise. uvloop's libuv loop and C transports cost a fraction of asyncio's pure-Python
selector loop per wake-up, and a proxy at a moderate rate wakes once or more per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` to completion on a new loop (uvloop's when there is one)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
