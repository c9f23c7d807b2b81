"""The workload certificate as PEM files (``--output-certs``, Istio's ``OUTPUT_CERTS``).

For a proxyless gRPC app: its library reads the certificate from files (the bootstrap's
``file_watcher`` certificate provider), not over SDS. The agent writes, on every new
certificate and root change, under Istio's names:

- ``key.pem``: the private key (mode 0600: the app runs as the pod's user, in the pod);
- ``cert-chain.pem``: the leaf and intermediates, leaf first;
- ``root-cert.pem``: the roots the agent trusts (the CA's answer and ``--root-cert``).

Each file is replaced by a rename, so a reader sees the old or the new file, never half of
one. The key is written before the chain: a reader that catches the moment in between
holds a new key and an old chain, which TLS refuses (it then reads again), never an old key
with a chain that names another one for long. gRPC's file watcher re-reads on its refresh
interval and keeps what it had when the pair does not match.
"""

from __future__ import annotations

import os
from pathlib import Path

from pilotfish.core.proxy_backend import CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE
from pilotfish.core.security.workload_cert import WorkloadSecret


def contents(secret: WorkloadSecret) -> list[tuple[str, str, int]]:
    """``(file name, PEM text, mode)`` in the order they are written."""
    return [(KEY_FILE, secret.key_pem, 0o600), (CERT_CHAIN_FILE, secret.chain_pem, 0o644),
            (ROOT_CERT_FILE, secret.roots_pem, 0o644)]


def write(directory: Path, secret: WorkloadSecret) -> None:
    """Write the three files under ``directory`` (made if missing); OSError as it comes."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text, mode in contents(secret):
        target = directory / name
        temporary = directory / f".{name}.new"
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
        os.replace(temporary, target)

