"""The certificates ztunnel holds: one per identity of the pods it serves, asked for from the
CA in that identity's name (``ImpersonatedIdentity``; the CA grants it only for pods on this
ztunnel's node), fetched when first needed and renewed at half their lifetime, as the agent
renews a sidecar's."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import attrs

from pilotfish.core.security import libcrypto, node_secret
from pilotfish.core.security.cert_info import renew_time
from pilotfish.core.security.node_secret import NodeSecret

log = logging.getLogger("pilotfish.ztunnel.certs")

TTL = 24 * 3600.0  # Istio's SECRET_TTL
RETRY = (1.0, 30.0)
# (csr PEM, ttl, the identity to impersonate) → the CA's cert_chain
Sign = Callable[[str, float, str], Awaitable[list[str]]]


@attrs.define
class _Held:
    secret: NodeSecret | None = None
    ready: asyncio.Event = attrs.field(factory=asyncio.Event)
    error: str = ""
    task: asyncio.Task[None] | None = None


class IdentityCerts:
    """Certificates by SPIFFE id. ``get`` waits for the first one; a background task per
    identity keeps it fresh until ``forget``."""

    def __init__(self, sign: Sign, clock: Callable[[], float] = time.time,
                 ttl: float = TTL) -> None:
        self.sign = sign
        self.clock = clock
        self.ttl = ttl
        self.held: dict[str, _Held] = {}

    def warm(self, identity: str) -> _Held:
        """Start keeping ``identity``'s certificate (if not already)."""
        held = self.held.get(identity)
        if held is None:
            held = self.held[identity] = _Held()
            held.task = asyncio.get_running_loop().create_task(self._keep(identity, held))
        return held

    async def get(self, identity: str, timeout: float = 10.0) -> NodeSecret:
        """The current certificate for ``identity`` (fetching it the first time);
        ``LookupError`` naming the CA's answer when none came within ``timeout``."""
        held = self.warm(identity)
        if held.secret is None:
            try:
                await asyncio.wait_for(held.ready.wait(), timeout)
            except TimeoutError:
                raise LookupError(f"no certificate for {identity} yet"
                                  f"{': ' + held.error if held.error else ''}") from None
        assert held.secret is not None
        return held.secret

    def forget(self, identity: str) -> None:
        held = self.held.pop(identity, None)
        if held is not None and held.task is not None:
            held.task.cancel()

    async def close(self) -> None:
        tasks = [h.task for h in self.held.values() if h.task is not None]
        self.held.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, identity: str, held: _Held) -> None:
        delay = RETRY[0]
        while True:
            try:
                secret = await self._fetch(identity)
            except Exception as exc:  # the CA's refusal or absence: try again later
                held.error = str(exc)
                log.warning("certificate for %s: %s (retrying in %.0f s)", identity, exc,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY[1])
                continue
            delay = RETRY[0]
            held.secret, held.error = secret, ""
            held.ready.set()
            leaf = secret.leaf
            at = renew_time(secret.received_at, leaf.not_after, random.random(),
                            random.choice((-1, 1)))
            log.info("certificate for %s: serial %s, renewing in %.0f s", identity,
                     leaf.serial, at - self.clock())
            await asyncio.sleep(max(0.0, at - self.clock()))

    async def _fetch(self, identity: str) -> NodeSecret:
        # The key and CSR come from libcrypto, not ``cryptography``: see `libcrypto`.
        key = libcrypto.make_key_and_csr(identity)
        chain = await self.sign(key.csr_pem, self.ttl, identity)
        return node_secret.from_response(chain, key, identity, self.clock())

    def dump(self) -> list[dict[str, object]]:
        """What ``/config_dump`` shows of the certificates (as ztunnel's ``certificates``)."""
        out: list[dict[str, object]] = []
        for identity, held in sorted(self.held.items()):
            entry: dict[str, object] = {"identity": identity,
                                        "state": "Available" if held.secret else "Initializing"}
            if held.secret is not None:
                leaf = held.secret.leaf
                entry["certChain"] = [{"serialNumber": str(leaf.serial),
                                       "validFrom": _iso(leaf.not_before),
                                       "expirationTime": _iso(leaf.not_after)}]
            if held.error:
                entry["error"] = held.error
            out.append(entry)
        return out


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
