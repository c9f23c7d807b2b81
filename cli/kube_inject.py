"""``pilotfish kube-inject -f FILE [-o OUT]``: inject sidecars into manifests offline, as
``istioctl kube-inject`` does.

Reads one or more YAML documents (``-f -`` for stdin; ``kind: List`` too) and writes them
back with the pods of every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob and DeploymentConfig injected the way the webhook
would inject them; other objects are written unchanged. A pod that asks not to be
injected (``sidecar.istio.io/inject: "false"``, ``hostNetwork``) is left as it is, with a
line on stderr saying why.

Settings: the mesh config file's ``injection:`` (Istio's injector values) and ``mesh:``
(``defaultConfig`` and the rest of Istio's mesh config), then ``--set KEY=VALUE`` on the
values, as ``istioctl --set values.KEY=VALUE``. Exit status 2 with the file, document and
field named when a document cannot be read or injected.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from pilotfish.core import meshconfig
from pilotfish.core.output import CommandError, manifests
from pilotfish.discovery.inject.settings import InjectionError, Settings, set_value
from pilotfish.discovery.inject.workloads import inject_object


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Inject the sidecar into Kubernetes manifests offline (istioctl "
                          "kube-inject): Pods and the pod templates of workloads.")
    parser.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="manifests to inject, YAML or JSON, several documents allowed "
                        "('-' reads stdin)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the result here (default: stdout)")
    parser.add_argument("--mesh-config", metavar="PATH",
                        help="pilotfish.yaml: its injection: values and mesh: settings")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="an injector value, as in "
                        "global.proxy.image=pilotfish or global.nativeSidecar=false "
                        "(repeatable)")
    parser.add_argument("--revision", default=None,
                        help="the control plane revision the pods are for (istio.io/rev)")


def settings_from(args: argparse.Namespace) -> Settings:
    config = meshconfig.load(args.mesh_config)
    values: dict[str, Any] = dict(config.injection)
    try:
        for assignment in args.sets:
            values = set_value(values, assignment)
        if args.revision is not None:
            values = set_value(values, f"revision={args.revision}")
        return Settings.create(values, config.mesh_fields)
    except InjectionError as exc:
        raise CommandError(str(exc)) from None


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
         ) -> int:
    err = err or sys.stderr
    settings = settings_from(args)
    name = "<stdin>" if args.filename == "-" else args.filename
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(name).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{name}: cannot read: {exc}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        raise CommandError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    injected = []
    for index, document in enumerate(documents, 1):
        try:
            injected.append(inject_object(document, settings,
                                          warn=lambda line: print(line, file=err)))
        except InjectionError as exc:
            what = _describe(document)
            raise CommandError(f"{name}: document {index}{what}: {exc}") from None
    rendered = manifests(injected)
    if args.output:
        try:
            Path(args.output).write_text(rendered)
        except OSError as exc:
            raise CommandError(f"-o {args.output}: cannot write: {exc.strerror}") from None
    else:
        (out or sys.stdout).write(rendered)
    return 0


def _describe(document: Any) -> str:
    if not isinstance(document, dict):
        return ""
    metadata = document.get("metadata") or {}
    namespace = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f" ({document.get('kind')} {namespace}{metadata.get('name', '')})"
