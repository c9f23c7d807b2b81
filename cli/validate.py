"""``pilotfish validate PATH...``: check config files offline, as the cluster would.

Reads files and directories (recursively: ``.yaml``, ``.yml``, ``.json``), validates every
object and prints one line per problem::

    bookinfo/vs.yaml:14: VirtualService default/reviews: spec.http[0]: <message>
    bookinfo/dr.yaml:9: warning: DestinationRule default/reviews: <message>

Exit status 1 when any error was found (warnings alone exit 0). ``-o json`` prints a list
of problem objects instead, for scripts and editors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pilotfish.core import meshconfig
from pilotfish.core.store import ConfigError
from pilotfish.core.yamlload import YAMLFileError, load_text
from pilotfish.validation import FIELD_VALIDATION, check

SUFFIXES = (".yaml", ".yml", ".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Validate Istio and Kubernetes config files offline: OpenAPI " \
        "schema, CEL rules and Istio's semantic checks, with file, line and field."
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="files or directories (searched recursively for "
                        f"{', '.join(SUFFIXES)})")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="text: one line per problem (default); json: a list of objects")
    parser.add_argument("--mesh-config", help="pilotfish.yaml: discovery.fieldValidation and "
                        "configLimits apply as in discovery")


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    settings = meshconfig.load(getattr(args, "mesh_config", None)).discovery
    problems: list[ConfigError] = []
    files = objects = 0
    for path in _files(args.paths, problems):
        files += 1
        objects += _check_file(path, problems, settings)
    if args.output == "json":
        json.dump([p.as_dict() for p in problems], out, indent=2)
        out.write("\n")
    else:
        for problem in problems:
            out.write(f"{problem}\n")
        errors = sum(p.severity == "error" for p in problems)
        err.write(f"checked {objects} objects in {files} files: {errors} errors, "
                  f"{len(problems) - errors} warnings\n")
    return 1 if any(p.severity == "error" for p in problems) else 0


def _files(paths: list[str], problems: list[ConfigError]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file()
                              and p.suffix in SUFFIXES)
        elif path.is_file():
            yield path
        else:
            problems.append(ConfigError(name, 0, "no such file or directory"))


def _check_file(path: Path, problems: list[ConfigError],
                settings: meshconfig.DiscoverySettings) -> int:
    """Validate every object of one file; returns how many objects it held."""
    name = str(path)
    try:
        objects, load_errors = load_text(path.read_text(encoding="utf-8"), name,
                                         limits=settings.config_limits)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigError(name, 0, f"cannot read: {exc}"))
        return 0
    except YAMLFileError as exc:
        problems.append(ConfigError(name, exc.error.line, exc.error.message))
        return 0
    problems.extend(ConfigError(e.file, e.line, e.message) for e in load_errors)
    unknown = FIELD_VALIDATION[settings.field_validation]
    for obj in objects:
        problems.extend(check(obj, unknown_fields=unknown))
    return len(objects)

