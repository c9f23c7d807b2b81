"""``pilotfish waypoint apply|list|delete``: waypoint Gateways in the config source, as
``istioctl waypoint`` manages them.

A waypoint is a Gateway API Gateway of class ``istio-waypoint`` with one listener, ``mesh``
on 15008 speaking HBONE, and the label ``istio.io/waypoint-for`` saying which traffic it
takes (``service``, ``workload``, ``all`` or ``none``). ``apply --enroll-namespace`` also
labels the namespace ``istio.io/use-waypoint: NAME`` so that its services use it.

The config source is a folder (``--config-dir``, what discovery's file source reads) or a
cluster (``--kubeconfig``/``--context``, through the API server with server-side apply,
field manager ``pilotfish``). In a folder a waypoint lives in a file of its own,
``waypoint-NS-NAME.yaml``, and an enrolled namespace that no file declares in
``namespace-NS.yaml``. A user's own files are never rewritten: a namespace declared in one
is reported with the label to add, and a waypoint declared in one is reported with its
file instead of being replaced or deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from pilotfish.core.ambient.waypoints import (
    ALL,
    HBONE_PORT,
    NONE,
    SERVICE,
    USE_WAYPOINT_LABEL,
    WAYPOINT_CLASS,
    WAYPOINT_FOR_LABEL,
    WORKLOAD,
)
from pilotfish.core.output import CommandError, emit, manifests, table
from pilotfish.core.yamlload import YAMLFileError, load_text

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
TRAFFIC_TYPES = (SERVICE, WORKLOAD, ALL, NONE)


def waypoint_gateway(namespace: str, name: str, traffic_type: str = SERVICE
                     ) -> dict[str, Any]:
    """The Gateway ``istioctl waypoint apply`` writes."""
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {WAYPOINT_FOR_LABEL: traffic_type}},
        "spec": {"gatewayClassName": WAYPOINT_CLASS,
                 "listeners": [{"name": "mesh", "port": HBONE_PORT, "protocol": "HBONE"}]},
    }


def is_waypoint(obj: Mapping[str, Any]) -> bool:
    return (obj.get("kind") == "Gateway"
            and str(obj.get("apiVersion", "")).startswith("gateway.networking.k8s.io/")
            and (obj.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS)


def _name(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")


class Source(Protocol):
    """Where waypoints are kept."""

    def apply(self, gateway: Mapping[str, Any]) -> str: ...
    def enroll(self, namespace: str, name: str, overwrite: bool) -> str: ...
    def waypoints(self, namespace: str | None) -> list[dict[str, Any]]: ...
    def delete(self, namespace: str, name: str) -> str: ...


# -- a config folder ----------------------------------------------------------------------


class FolderSource:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise CommandError(f"--config-dir {root}: not a folder")
        self.root = root

    def _documents(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        from pilotfish.plugins.files_source import config_files, read_config_file

        for path in config_files(self.root):
            try:
                objects, _ = load_text(read_config_file(path, self.root), str(path))
            except (OSError, YAMLFileError) as exc:
                raise CommandError(str(exc)) from exc
            for obj in objects:
                yield path, dict(obj.body)

    def _own(self, namespace: str, name: str) -> Path:
        return self.root / f"waypoint-{namespace}-{name}.yaml"

    def _write(self, path: Path, documents: list[dict[str, Any]]) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(manifests(documents))
        os.replace(tmp, path)  # discovery's watcher sees the whole file or none of it

    def apply(self, gateway: Mapping[str, Any]) -> str:
        namespace, name = _name(gateway)
        own = self._own(namespace, name)
        for path, obj in self._documents():
            if obj.get("kind") == "Gateway" and _name(obj) == (namespace, name) and path != own:
                raise CommandError(f"{path}: already declares Gateway {namespace}/{name}; "
                                   "edit that file, or pick another --name")
        self._write(own, [dict(gateway)])
        return f"waypoint {namespace}/{name} applied ({own})"

    def enroll(self, namespace: str, name: str, overwrite: bool) -> str:
        own = self.root / f"namespace-{namespace}.yaml"
        found = next(((path, obj) for path, obj in self._documents()
                      if obj.get("kind") == "Namespace" and _name(obj)[1] == namespace), None)
        labels: dict[str, str] = {}
        if found is not None:
            path, obj = found
            labels = dict((obj.get("metadata") or {}).get("labels") or {})
            current = labels.get(USE_WAYPOINT_LABEL)
            if current == name:
                return f"namespace {namespace} already uses waypoint {name}"
            _check_overwrite(namespace, current, name, overwrite)
            if path != own:
                raise CommandError(
                    f"{path}: declares Namespace {namespace}; add the label "
                    f"\"{USE_WAYPOINT_LABEL}: {name}\" there (pilotfish does not rewrite "
                    "your files)")
        labels[USE_WAYPOINT_LABEL] = name
        self._write(own, [{"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": namespace, "labels": labels}}])
        return f"namespace {namespace} labeled with \"{USE_WAYPOINT_LABEL}: {name}\" ({own})"

    def waypoints(self, namespace: str | None) -> list[dict[str, Any]]:
        return [obj for _, obj in self._documents()
                if is_waypoint(obj) and namespace in (None, _name(obj)[0])]

    def delete(self, namespace: str, name: str) -> str:
        own = self._own(namespace, name)
        for path, obj in self._documents():
            if is_waypoint(obj) and _name(obj) == (namespace, name) and path != own:
                raise CommandError(f"{path}: declares waypoint {namespace}/{name}; remove "
                                   "it from that file (pilotfish does not rewrite your files)")
        if not own.exists():
            raise CommandError(f"waypoint {namespace}/{name}: not found in {self.root}")
        own.unlink()
        return f"waypoint {namespace}/{name} deleted"


def _check_overwrite(namespace: str, current: str | None, name: str, overwrite: bool) -> None:
    if current and current != name and not overwrite:
        raise CommandError(f"namespace {namespace} already uses waypoint {current}; "
                           "pass --overwrite to replace it")


# -- a cluster ---------------------------------------------------------------------------


class ClusterSource:
    def __init__(self, args: argparse.Namespace) -> None:
        from pilotfish.cli import install

        self.install = install
        self.api = install.connect(args)

    def _gateways(self, namespace: str | None) -> str:
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"/apis/{GATEWAY_API_VERSION}{where}/gateways"

    def _request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                 body: Any = None, content_type: str | None = None) -> dict[str, Any]:
        from pilotfish.plugins.kube import client as kube

        try:
            if content_type is None:
                return self.api.request(method, path, query, body)
            return self.api.request(method, path, query, body, content_type)
        except kube.ApiError as exc:
            raise CommandError(f"{method} {path}: {exc}") from exc

    def _apply(self, path: str, body: Mapping[str, Any]) -> None:
        self._request("PATCH", path, {"fieldManager": self.install.FIELD_MANAGER,
                                      "force": "true"}, dict(body), self.install.APPLY)

    def apply(self, gateway: Mapping[str, Any]) -> str:
        namespace, name = _name(gateway)
        self._apply(f"{self._gateways(namespace)}/{name}", gateway)
        return f"waypoint {namespace}/{name} applied"

    def enroll(self, namespace: str, name: str, overwrite: bool) -> str:
        path = f"/api/v1/namespaces/{namespace}"
        current = ((self._request("GET", path).get("metadata") or {}).get("labels")
                   or {}).get(USE_WAYPOINT_LABEL)
        if current == name:
            return f"namespace {namespace} already uses waypoint {name}"
        _check_overwrite(namespace, current, name, overwrite)
        self._apply(path, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace, "labels": {USE_WAYPOINT_LABEL: name}}})
        return f"namespace {namespace} labeled with \"{USE_WAYPOINT_LABEL}: {name}\""

    def waypoints(self, namespace: str | None) -> list[dict[str, Any]]:
        items = self._request("GET", self._gateways(namespace)).get("items") or []
        return [dict(item, apiVersion=GATEWAY_API_VERSION, kind="Gateway") for item in items
                if is_waypoint(dict(item, apiVersion=GATEWAY_API_VERSION, kind="Gateway"))]

    def delete(self, namespace: str, name: str) -> str:
        self._request("DELETE", f"{self._gateways(namespace)}/{name}")
        return f"waypoint {namespace}/{name} deleted"


# -- the command -------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config-dir", type=Path, metavar="DIR",
                       help="the config folder discovery reads (file mode)")
    where.add_argument("--kubeconfig", help="the cluster's kubeconfig (default: $KUBECONFIG, "
                       "else ~/.kube/config)")
    p.add_argument("--context", help="the kubeconfig's context")
    p.add_argument("-n", "--namespace", default="default",
                   help="the waypoint's namespace (default: default)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Manage waypoints (Gateways of class istio-waypoint) in the config "
                     "folder or the cluster, as istioctl waypoint does.")
    commands = p.add_subparsers(dest="waypoint_command", metavar="COMMAND", required=True)
    apply = commands.add_parser("apply", help="create or update a waypoint")
    _common(apply)
    apply.add_argument("--name", default="waypoint", help="its name (default: waypoint)")
    apply.add_argument("--for", dest="traffic_type", choices=TRAFFIC_TYPES, default=SERVICE,
                       help="the traffic it takes (default: service)")
    apply.add_argument("--enroll-namespace", action="store_true",
                       help=f"label the namespace {USE_WAYPOINT_LABEL}: NAME")
    apply.add_argument("--overwrite", action="store_true",
                       help="with --enroll-namespace: replace another waypoint's label")
    listing = commands.add_parser("list", help="the waypoints of a namespace")
    _common(listing)
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    listing.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    delete = commands.add_parser("delete", help="delete waypoints by name")
    _common(delete)
    delete.add_argument("names", nargs="*", metavar="NAME", default=["waypoint"],
                        help="their names (default: waypoint)")


def _traffic_type(obj: Mapping[str, Any]) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return str(labels.get(WAYPOINT_FOR_LABEL, SERVICE))


def _source(args: argparse.Namespace) -> Source:
    if args.config_dir is not None:
        return FolderSource(args.config_dir)
    return ClusterSource(args)


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    source = _source(args)
    namespace = args.namespace
    if args.waypoint_command == "apply":
        out.write("✅ " + source.apply(waypoint_gateway(namespace, args.name,
                                                       args.traffic_type)) + "\n")
        if args.enroll_namespace:
            out.write("✅ " + source.enroll(namespace, args.name, args.overwrite) + "\n")
    elif args.waypoint_command == "list":
        found = source.waypoints(None if args.all_namespaces else namespace)
        if args.output != "table":
            emit(found, args.output)
            return 0
        if not found:
            where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
            out.write(f"No waypoints found in {where}.\n")
            return 0
        rows = [[_name(obj)[1], _name(obj)[0], _traffic_type(obj)]
                for obj in sorted(found, key=_name)]
        out.write(table(["NAME", "NAMESPACE", "TRAFFIC TYPE"], rows))
    else:
        for name in args.names:
            out.write("✅ " + source.delete(namespace, name) + "\n")
    return 0
