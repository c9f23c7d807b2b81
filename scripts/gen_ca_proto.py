"""Generate the Python modules of Istio's CA API from ``core/security/ca.proto``.

    python scripts/gen_ca_proto.py          # rewrite core/security/ca_pb2{,_grpc}.py{,i}
    python scripts/gen_ca_proto.py --check  # exit 1 if the shipped modules are out of date

The proto is compiled as ``pilotfish/core/security/ca.proto`` so that the gRPC module imports
``pilotfish.core.security.ca_pb2`` (the installed name). grpcio-tools stamps its own and
protobuf's versions into the output; ``--check`` ignores those lines, so a developer with a
newer grpcio-tools is not told the API changed when it did not.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "core" / "security" / "ca.proto"
TARGET = ROOT / "core" / "security"
OUTPUTS = ("ca_pb2.py", "ca_pb2.pyi", "ca_pb2_grpc.py")
PACKAGE_PATH = Path("pilotfish/core/security")
# Lines that only say which generator ran (see the module docstring).
_VERSION_LINES = re.compile(
    r"^(# Protobuf Python Version:.*|\s+\d+,$|GRPC_GENERATED_VERSION = .*)$", re.MULTILINE
)


def generate() -> dict[str, str]:
    """Compile the proto in a scratch tree; return each output file's text."""
    import grpc_tools
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="pilotfish-proto-") as tmp:
        source = Path(tmp) / PACKAGE_PATH / SOURCE.name
        source.parent.mkdir(parents=True)
        source.write_text(SOURCE.read_text())
        code = protoc.main([
            "grpc_tools.protoc", f"-I{tmp}", f"-I{includes}", f"--python_out={tmp}",
            f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", str(PACKAGE_PATH / SOURCE.name),
        ])
        if code != 0:
            raise SystemExit(f"protoc failed on {SOURCE} (exit {code})")
        return {name: (source.parent / name).read_text() for name in OUTPUTS}


def normalized(text: str) -> str:
    return _VERSION_LINES.sub("", text)


def main() -> int:
    outputs = generate()
    if "--check" in sys.argv:
        stale = [name for name, text in outputs.items()
                 if not (TARGET / name).exists()
                 or normalized((TARGET / name).read_text()) != normalized(text)]
        if stale:
            print(f"{', '.join(stale)} out of date with {SOURCE.name}: "
                  "run python scripts/gen_ca_proto.py")
            return 1
        return 0
    for name, text in outputs.items():
        (TARGET / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
