"""Generate the Python modules of the protos pilotfish ships (not Envoy's: those come from a
package) and check that the shipped ones are current.

    python scripts/gen_protos.py          # rewrite every set's *_pb2*.py{,i}
    python scripts/gen_protos.py --check  # exit 1 if a shipped module is out of date
    python scripts/gen_protos.py --check core/ambient  # only the sets of these folders

The sets:

- ``core/security/ca.proto``: Istio's CA API (messages and the gRPC service).
- ``core/ambient/{workload,authorization}.proto``: ztunnel's Workload Discovery types
  (``istio.workload``, ``istio.security``), as ztunnel publishes them (see core/ambient/SOURCE.md).
- ``core/ambient/zds.proto``: ZDS (``istio.workload.zds``), the node agent's messages to ztunnel
  (pods and their network namespaces) and its acks; compiled with the Workload Discovery set.
- ``core/ztunnel/discovery.proto``: the part of Envoy's delta xDS messages ztunnel uses, with
  Envoy's field numbers, so that ztunnel does not load Envoy's protos.

Beside each ``<name>_pb2.py`` goes ``<name>_wire.py``: the proto's field tables for
``core/protowire.py``, the codec ztunnel uses instead of the protobuf runtime (written by
``scripts/gen_wire.py`` from the set's compiled descriptors).

Each proto is compiled as ``pilotfish/<folder>/<name>.proto`` so that generated imports name
the installed modules (``pilotfish.core.ambient.workload_pb2``). ztunnel's
``authorization.proto`` imports ``"workload.proto"`` by bare name; the scratch copy is given
the installed path instead, which changes no message name and so no type URL. grpcio-tools
stamps its own and protobuf's versions into the output; ``--check`` ignores those lines, so a
developer with a newer grpcio-tools is not told the API changed when it did not.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
# Lines that only say which generator ran (see the module docstring).
_VERSION_LINES = re.compile(
    r"^(# Protobuf Python Version:.*|\s+\d+,$|GRPC_GENERATED_VERSION = .*)$", re.MULTILINE
)
_BARE_IMPORT = re.compile(r'^import "(\w+\.proto)";$', re.MULTILINE)


@attrs.frozen
class ProtoSet:
    """Protos of one folder, compiled together."""

    folder: str  # relative to the repository, e.g. "core/security"
    protos: tuple[str, ...]
    grpc: bool = False  # also the gRPC stubs (the proto declares a service)

    @property
    def package_path(self) -> Path:
        return Path("pilotfish") / self.folder

    @property
    def outputs(self) -> tuple[str, ...]:
        stems = [name.removesuffix(".proto") for name in self.protos]
        suffixes = ("_pb2.py", "_pb2.pyi", *(("_pb2_grpc.py",) if self.grpc else ()),
                    "_wire.py")
        return tuple(stem + suffix for stem in stems for suffix in suffixes)


SETS = (
    ProtoSet("core/security", ("ca.proto",), grpc=True),
    ProtoSet("core/ambient", ("workload.proto", "authorization.proto", "zds.proto")),
    ProtoSet("core/ztunnel", ("discovery.proto",)),
)


def _installed_imports(text: str, proto_set: ProtoSet) -> str:
    """A bare ``import "x.proto"`` of a sibling → its installed path."""
    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in proto_set.protos:
            return match.group(0)
        return f'import "{proto_set.package_path / match.group(1)}";'
    return _BARE_IMPORT.sub(replace, text)


def generate(proto_set: ProtoSet) -> dict[str, str]:
    """Compile a set in a scratch tree; return each output file's text."""
    import grpc_tools
    from gen_wire import wire_modules  # beside this script
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="pilotfish-proto-") as tmp:
        folder = Path(tmp) / proto_set.package_path
        folder.mkdir(parents=True)
        for name in proto_set.protos:
            text = (ROOT / proto_set.folder / name).read_text()
            (folder / name).write_text(_installed_imports(text, proto_set))
        code = protoc.main([
            "grpc_tools.protoc", f"-I{tmp}", f"-I{includes}", f"--python_out={tmp}",
            f"--pyi_out={tmp}", *([f"--grpc_python_out={tmp}"] if proto_set.grpc else []),
            f"--descriptor_set_out={tmp}/set.pb", "--include_imports",
            *(str(proto_set.package_path / name) for name in proto_set.protos),
        ])
        if code != 0:
            raise SystemExit(f"protoc failed on {proto_set.folder} (exit {code})")
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(
            (Path(tmp) / "set.pb").read_bytes())
        wire = wire_modules(descriptors, {
            str(proto_set.package_path / name):
                ".".join((proto_set.package_path / name.removesuffix(".proto")).parts)
                + "_wire" for name in proto_set.protos})
        return {name: wire[name] if name in wire else (folder / name).read_text()
                for name in proto_set.outputs}


def normalized(text: str) -> str:
    return _VERSION_LINES.sub("", text)


def stale(proto_set: ProtoSet) -> list[str]:
    """The set's shipped modules that differ from what its protos generate."""
    target = ROOT / proto_set.folder
    return [f"{proto_set.folder}/{name}" for name, text in generate(proto_set).items()
            if not (target / name).exists()
            or normalized((target / name).read_text()) != normalized(text)]


def main() -> int:
    folders = [arg.rstrip("/") for arg in sys.argv[1:] if not arg.startswith("-")]
    chosen = [proto_set for proto_set in SETS if not folders or proto_set.folder in folders]
    if "--check" in sys.argv:
        out_of_date = [name for proto_set in chosen for name in stale(proto_set)]
        if out_of_date:
            print(f"{', '.join(out_of_date)} out of date with their protos: "
                  "run python scripts/gen_protos.py")
            return 1
        return 0
    for proto_set in chosen:
        for name, text in generate(proto_set).items():
            (ROOT / proto_set.folder / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
