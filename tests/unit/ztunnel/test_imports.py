"""What ztunnel's process loads: issue 13 holds ztunnel to 30 MB, and each package below
costs megabytes it does not need at run time (docs/benchmarks.md, the Ambient section)."""

from __future__ import annotations

import json
import subprocess
import sys

# Top-level packages a started ztunnel must not import, with where each was dropped.
NOT_LOADED = {
    "cryptography": "keys, CSRs and certificates go through libcrypto (security/libcrypto)",
    **dict.fromkeys(("envoy", "xds", "udpa", "validate"),
                    "WDS speaks Envoy's messages through core/ztunnel/discovery.proto"),
    "email": "importlib.metadata brings it; ztunnel's version is core/version.py's",
    "zipfile": "the same",
    "google": "its messages go through core/protowire.py, not the protobuf runtime",
    "anyio": "its task groups, HTTP endpoints and HBONE run on asyncio (core/tasks.py)",
}


def test_ztunnel_loads_none_of_the_packages_it_was_cut_from() -> None:
    code = ("import json, sys; import pilotfish.agent.ztunnel, pilotfish.core.ztunnel.proxy; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    assert {name: why for name, why in NOT_LOADED.items() if name in loaded} == {}


def test_the_modules_it_was_cut_from_are_not_loaded_either() -> None:
    code = ("import json, sys; import pilotfish.agent.ztunnel, pilotfish.core.ztunnel.proxy; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    # anyio's TLS streams serve only TLS endpoints (core/http.py); ztunnel's are plaintext.
    # The config model (with its objects and protocols) came for is_ip (core/addresses.py),
    # the native proxy's connection for a type.
    assert {"importlib.metadata", "anyio.streams.tls", "pilotfish.core.model",
            "pilotfish.core.objects", "pilotfish.core.native.connection"} & loaded == set()


def test_its_command_line_loads_no_shutil() -> None:
    # argparse imports shutil (and bz2, lzma: 0.5 MiB) for the terminal's width in every
    # formatter unless given one; the CLI's own formatter finds it without.
    code = ("import json, sys; from pilotfish.cli.main import build_parser; "
            "build_parser(['ztunnel']); import pilotfish.agent.ztunnel; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    assert {"shutil", "bz2", "lzma"} & loaded == set()
