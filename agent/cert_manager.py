"""The agent's certificate loop: CSR to the CA, SDS push, rotation, root file changes.

The decisions are ``cert_rotation.Rotation``'s; this is the IO around it. One task asks
the CA whenever the rotation says a request is due (at start, at renewal time, after a
backoff), another polls the ``--root-cert`` file. Each certificate received goes to the
SDS server at once, which pushes it to the proxy without restarting it; with xDS over
mTLS, once the proxy has taken the new certificate the relayed xDS connection is cut so
that the proxy reconnects with it (``xds_relay``). With ``output_certs`` each certificate
(and each root change) is also written there as files (``cert_files``), for apps that
read them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.abc
import attrs
from cryptography import x509

from pilotfish.agent import cert_files
from pilotfish.agent.sds_server import SdsServer, secret_resources
from pilotfish.agent.xds_relay import XdsRelay
from pilotfish.core.security import workload_cert
from pilotfish.core.security.ca_client import CaClient, CaError
from pilotfish.core.security.cert_rotation import Phase, Rotation
from pilotfish.core.security.workload_cert import WorkloadSecret

log = logging.getLogger("pilotfish.certs")

MAX_SLEEP = 30.0  # re-check at least this often: the wall clock can jump (suspend, NTP)
ROOT_POLL = 5.0  # how often the --root-cert file is looked at
DELIVERY_TIMEOUT = 10.0  # how long the proxy gets to take a new certificate before the cut


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class CertRequest:
    spiffe_id: str  # what the agent expects to be (the CA decides)
    ttl: float  # requested lifetime, seconds
    key_type: str = "ec"


class CertManager:
    def __init__(self, request: CertRequest, client: CaClient, sds: SdsServer,
                 relay: XdsRelay | None = None, *, root_poll: float = ROOT_POLL,
                 output_certs: Path | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random) -> None:
        self.request, self.client, self.sds, self.relay = request, client, sds, relay
        self.output_certs = output_certs
        self._first = anyio.Event()
        self.root_poll = root_poll
        self.clock = clock
        self.rotation = Rotation(random=rng)
        self._wake = anyio.Event()
        self._root_seen: tuple[float, int, int] | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        self.rotation.file_roots = tuple(await self._read_roots())
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_roots)
            task_status.started()
            await self._rotate()

    async def wait_secret(self) -> WorkloadSecret:
        """The certificate held now, once there is one."""
        await self._first.wait()
        assert self.rotation.secret is not None
        return self.rotation.secret

    # -- requesting ----------------------------------------------------------------------

    async def _rotate(self) -> None:
        while True:
            now = self.clock()
            if self.rotation.due(now):
                await self._request(now)
                continue
            wake_at = self.rotation.wake_at()
            delay = MAX_SLEEP if wake_at is None else min(max(wake_at - now, 0), MAX_SLEEP)
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def _request(self, now: float) -> None:
        rotation = self.rotation
        rotation.begin(now)
        renewing = rotation.secret is not None
        try:
            key = workload_cert.generate_key(self.request.key_type)
            csr = workload_cert.make_csr(key, self.request.spiffe_id)
            chain = await self.client.create_certificate(csr, self.request.ttl,
                                                         rotation.secret, now)
            received = self.clock()
            secret = workload_cert.from_response(chain, key, self.request.spiffe_id,
                                                 rotation.file_roots, received)
            response_roots = workload_cert.load_pems(chain[-1], "root") if len(chain) > 1 \
                else []
        except (CaError, workload_cert.CertificateError) as exc:
            self._failed(str(exc))
            return
        except Exception as exc:
            # A bug must not take the proxy down with the agent: say so loudly, retry.
            log.exception("unexpected error while getting a workload certificate")
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        update = rotation.succeeded(secret, response_roots, received)
        leaf = secret.leaf
        log.info("%s certificate %s for %s (serial %s, valid until %s); renewing at %s",
                 "renewed" if renewing else "got", "from " + self.client.address,
                 leaf.spiffe_id, leaf.serial, stamp(leaf.not_after),
                 stamp(rotation.renew_at or leaf.not_after))
        if update.roots and renewing:
            log.info("the trust bundle changed (%d roots); pushing ROOTCA", len(secret.roots))
        await self._publish(reconnect=renewing)

    def _failed(self, error: str) -> None:
        now = self.clock()
        delay = self.rotation.failed(error, now)
        held = self.rotation.secret
        if held is None:
            state = "the proxy has no certificate yet"
        elif self.rotation.expired(now):
            state = f"the current certificate EXPIRED at {stamp(held.leaf.not_after)}"
        else:
            state = f"the current certificate is valid until {stamp(held.leaf.not_after)}"
        log.warning("cannot get a workload certificate (attempt %d): %s; retrying in "
                    "%.1fs; %s", self.rotation.failures, error, delay, state)

    async def _publish(self, reconnect: bool) -> None:
        secret = self.rotation.secret
        assert secret is not None
        self.sds.update(secret_resources(secret))
        await self._write_files(secret)
        self._first.set()
        if self.relay is None or not reconnect:
            return
        if self.relay.tls is None:  # the proxy's own TLS: it must hold the new one first
            with anyio.move_on_after(DELIVERY_TIMEOUT) as waited:
                await self.sds.wait_delivered()
            if waited.cancelled_caught:
                log.warning("the proxy has not taken the new certificate within %gs; "
                            "reconnecting its xDS anyway", DELIVERY_TIMEOUT)
        cut = self.relay.reconnect()
        if cut:
            log.info("closed %d xDS connection(s) so the proxy reconnects with the new "
                     "certificate", cut)

    async def _write_files(self, secret: WorkloadSecret) -> None:
        if self.output_certs is None:
            return
        try:
            await anyio.to_thread.run_sync(cert_files.write, self.output_certs, secret)
        except OSError as exc:  # the certificate is still served over SDS; say so, go on
            log.error("cannot write the workload certificate to %s: %s", self.output_certs,
                      exc.strerror or exc)

    # -- the root file ---------------------------------------------------------------------

    async def _read_roots(self) -> list[x509.Certificate]:
        path: Path = self.client.root_cert
        stat = await anyio.Path(path).stat()
        self._root_seen = (stat.st_mtime, stat.st_size, stat.st_ino)
        text = await anyio.Path(path).read_bytes()
        return workload_cert.load_pems(text, f"--root-cert {path}")

    async def _watch_roots(self) -> None:
        while True:
            await anyio.sleep(self.root_poll)
            try:
                stat = await anyio.Path(self.client.root_cert).stat()
                if (stat.st_mtime, stat.st_size, stat.st_ino) == self._root_seen:
                    continue
                roots = await self._read_roots()
            except (OSError, workload_cert.CertificateError) as exc:
                # Being rewritten, or removed for a moment: keep the roots we have.
                log.debug("root file not read: %s", exc)
                continue
            if tuple(roots) == self.rotation.file_roots:
                continue  # rewritten with the same roots
            requesting = self.rotation.phase is Phase.REQUESTING
            update = self.rotation.roots_changed(roots, self.clock())
            log.info("%s changed (%d roots): %s%s", self.client.root_cert, len(roots),
                     "renewing the certificate after the request under way" if requesting
                     else "renewing the certificate", "; pushing ROOTCA" if update.roots else "")
            if update.roots and self.rotation.secret is not None:
                self.sds.update(secret_resources(self.rotation.secret))
                await self._write_files(self.rotation.secret)
            self._wake.set()
