"""``pilotfish analyze``: find config that is valid but will not work as meant.

Loads a config directory the way discovery does (the files source, schema and semantic
validation, the push context), adds the pod templates of workload controllers found in
the same files, and runs every analyzer (`pilotfish.analysis`). One line per finding,
with the code Istio's analyzers give the same problem in brackets::

    dr.yaml:12: warning PF0103 [IST0173] DestinationRule default/reviews: spec.subsets[2]...

Exit status 1 when any finding is at error level, else 0. ``-o json`` prints a list of
objects instead. ``--listeners FILE`` adds the listening sockets of running pods.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import attrs

from pilotfish.analysis import CHECKS, INVALID_CONFIG, SCHEMA_WARNING, inputs_for, run, sort
from pilotfish.analysis.base import TEMPLATE_PATHS, Finding, Inputs, Level
from pilotfish.analysis.localhost import PodSockets, load_listeners
from pilotfish.core import meshconfig, push_context
from pilotfish.core.objects import ConfigObject
from pilotfish.core.output import CommandError
from pilotfish.core.plugins import Plugins
from pilotfish.core.store import ConfigError, ConfigStore
from pilotfish.core.yamlload import YAMLFileError, load_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Report config that validates but will not work as meant: undeclared port "
        "protocols, apps running as the proxy's uid, subsets that select nothing, routes to "
        "hosts, subsets or ports that do not exist, apps listening on 127.0.0.1 only, "
        "gateways that select no pod or conflict, routes bound to gateways that do not "
        "serve them, sidecar routes claiming one host twice. "
        "Exit status 1 when a finding is at error level."
    )
    parser.add_argument("--config-dir", default=".",
                        help="directory (or file) of Istio/Kubernetes YAML, read recursively "
                        "(default: the current directory)")
    parser.add_argument("--mesh-config", help="pilotfish.yaml: mesh settings (domain, root "
                        "namespace, inboundTrafficPolicy) and plugins that validate")
    parser.add_argument("--listeners", metavar="FILE",
                        help='JSON: listening sockets of running pods, [{"pod": "ns/name", '
                        '"listeners": ["127.0.0.1:8080"]}] (or "ss": "<ss -ltn output>")')
    parser.add_argument("--state-dir", default=None,
                        help="the local node's state (default /run/pilotfish/node): when a "
                        "node is up and --listeners is not given, its pods' listening sockets "
                        "are read with ss inside each pod's network namespace")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="text: one line per finding (default); json: a list of objects")


def load(root: Path, config: meshconfig.MeshConfig) -> tuple[Inputs, list[Finding]]:
    """Read a directory as discovery would; return the inputs and the validation problems."""
    from pilotfish.plugins.files_source import config_files, load_file
    from pilotfish.validation import make_kinds, make_validator

    active = Plugins.from_config(config)
    store = ConfigStore(make_validator(active, config.discovery.field_validation),
                        make_kinds(active))
    raw: list[ConfigObject] = []
    for path in config_files(root):
        load_file(store, path, root, config.discovery.config_limits)
        raw += _controllers(path)
    push = push_context.build(store.objects(), config.mesh, "analyze")
    errors = [e for e in store.errors() if not _is_controller_notice(e)]
    return inputs_for(store, push, raw, now=time.time()), [_problem(e) for e in errors]


def _controllers(path: Path) -> list[ConfigObject]:
    """Workload controllers in a file: not pilotfish kinds, so the store ignores them."""
    try:
        objects, _ = load_text(path.read_text(), str(path))
    except (OSError, UnicodeDecodeError, YAMLFileError):
        return []  # the store has reported the file already
    return [o for o in objects if o.kind in TEMPLATE_PATHS]


def _is_controller_notice(error: ConfigError) -> bool:
    """The store's "unknown kind" note for a Deployment and the like: analyze reads those."""
    return (error.severity == "warning" and error.key is not None
            and error.key.kind in TEMPLATE_PATHS and "unknown kind" in error.message)


def _problem(error: ConfigError) -> Finding:
    if error.severity == "error":
        return Finding(INVALID_CONFIG, error.message, error.file, error.line, error.key,
                       error.field)
    return Finding(INVALID_CONFIG, error.message, error.file, error.line, error.key,
                   error.field, Level.WARNING, SCHEMA_WARNING)


def _sockets(path: str | None) -> tuple[PodSockets, ...]:
    if path is None:
        return ()
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CommandError(f"--listeners {path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CommandError(f"--listeners {path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    try:
        return tuple(load_listeners(data))
    except ValueError as exc:
        raise CommandError(f"--listeners {path}: {exc}") from exc


def node_sockets(state_dir: Path | None) -> tuple[PodSockets, ...]:
    """Listening sockets of the running local node's pods (none when no node is up)."""
    import subprocess

    from pilotfish.analysis.localhost import parse_ss
    from pilotfish.node import netns
    from pilotfish.node.state import DEFAULT_STATE_DIR, NodeState, pid_alive
    state = NodeState.load(state_dir or DEFAULT_STATE_DIR)
    if state is None or not pid_alive(state.up_pid):
        return ()
    out = []
    for pod in state.pods.values():
        if not netns.exists(pod.netns):
            continue
        result = subprocess.run(["ip", "netns", "exec", pod.netns, "ss", "-H", "-ltn"],
                                capture_output=True, text=True, check=False)
        if result.returncode == 0:
            out.append(PodSockets(pod.namespace, pod.name, tuple(parse_ss(result.stdout))))
    return tuple(out)


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    root = Path(args.config_dir)
    if not root.exists():
        raise CommandError(f"--config-dir {args.config_dir}: no such file or directory")
    config = meshconfig.load(args.mesh_config)
    inputs, problems = load(root, config)
    sockets = _sockets(args.listeners) if args.listeners else node_sockets(
        Path(args.state_dir) if getattr(args, "state_dir", None) else None)
    inputs = attrs.evolve(inputs, sockets=sockets)
    findings = sort([*problems, *run(inputs)])
    if args.output == "json":
        json.dump([f.as_dict() for f in findings], out, indent=2)
        out.write("\n")
    else:
        for item in findings:
            out.write(f"{item}\n")
        objects = sum(len(items) for items in inputs.push.objects_by_kind.values())
        err.write(_summary(findings, objects, len(inputs.pods)))
    return 1 if any(f.severity is Level.ERROR for f in findings) else 0


def _summary(findings: Sequence[Finding], objects: int, pods: int) -> str:
    counts = {level: sum(f.severity is level for f in findings) for level in Level}
    return (f"analyzed {objects} objects and {pods} pod specs: {counts[Level.ERROR]} errors, "
            f"{counts[Level.WARNING]} warnings, {counts[Level.INFO]} info\n")


def describe_checks() -> list[dict[str, str]]:
    """The catalog, for docs and ``--help`` readers."""
    return [{"code": c.code, "name": c.name, "level": c.level.value, "summary": c.summary,
             "istio_code": c.istio.code if c.istio else "",
             "istio_name": c.istio.name if c.istio else ""}
            for c in CHECKS]
