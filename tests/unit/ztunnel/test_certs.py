"""ztunnel's certificates per identity: fetched on first use from a real signing CA, shared
by concurrent callers, renewed before expiry, retried after a refusal, forgotten on demand."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pilotfish.core.ztunnel.certs import IdentityCerts
from pilotfish.testing.mesh_ca import MeshCA

POD = "spiffe://cluster.local/ns/shop/sa/cart"


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """The test as a plain function running its coroutine on a fresh event loop."""
    @functools.wraps(test)
    def plain(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return plain


class Ca(MeshCA):
    """Signs as discovery's CA does, counting calls; may refuse the first ``refuse``."""

    def __init__(self, ttl: float = 3600.0, refuse: int = 0) -> None:
        super().__init__()
        self.ttl, self.refuse = ttl, refuse
        self.calls: list[str] = []

    async def sign(self, csr_pem: str, ttl: float, identity: str) -> list[str]:
        self.calls.append(identity)
        if len(self.calls) <= self.refuse:
            raise RuntimeError("PERMISSION_DENIED: not on this node")
        return self.sign_csr(csr_pem, identity, self.ttl)


@run
async def test_first_use_fetches_once_for_concurrent_callers() -> None:
    ca = Ca()
    certs = IdentityCerts(ca.sign)
    try:
        one, two = await asyncio.gather(certs.get(POD), certs.get(POD))
        assert one is two
        assert one.leaf.spiffe_id == POD
        assert ca.calls == [POD]
        assert [c["identity"] for c in certs.dump()] == [POD]
        assert certs.dump()[0]["state"] == "Available"
    finally:
        await certs.close()


@run
async def test_a_refusal_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pilotfish.core.ztunnel.certs.RETRY", (0.05, 0.1))
    ca = Ca(refuse=2)
    certs = IdentityCerts(ca.sign)
    try:
        secret = await certs.get(POD, timeout=5)
        assert secret.leaf.spiffe_id == POD and len(ca.calls) == 3
    finally:
        await certs.close()


@run
async def test_no_certificate_in_time_names_the_ca_answer(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr("pilotfish.core.ztunnel.certs.RETRY", (0.05, 0.1))
    certs = IdentityCerts(Ca(refuse=1000).sign)
    try:
        with pytest.raises(LookupError, match="not on this node"):
            await certs.get(POD, timeout=0.3)
    finally:
        await certs.close()


@run
async def test_renewed_before_expiry() -> None:
    ca = Ca(ttl=2.0)  # renewed at about half of it
    certs = IdentityCerts(ca.sign)
    try:
        first = await certs.get(POD)
        await asyncio.sleep(1.6)
        second = await certs.get(POD)
        assert second.leaf.serial != first.leaf.serial
        assert len(ca.calls) >= 2
    finally:
        await certs.close()


@run
async def test_forget_stops_renewal() -> None:
    # 2 s: X.509 keeps whole seconds, so a 1 s certificate may be valid for a few ms only
    # and refused on arrival; 2 s leaves at least 1 s, renewed within it if not forgotten
    ca = Ca(ttl=2.0)
    certs = IdentityCerts(ca.sign)
    try:
        await certs.get(POD)
        certs.forget(POD)
        await asyncio.sleep(1.6)
        assert ca.calls == [POD] and certs.dump() == []
    finally:
        await certs.close()
