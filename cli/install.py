"""``pilotfish install`` and ``pilotfish uninstall``: the objects of ``manifest generate`` put
on (or taken off) a cluster through the API server, as istioctl does.

Install applies with server-side apply (field manager ``pilotfish``, forcing ownership of the
fields it sets, so a re-install or an upgrade is the same command): the CRDs first, waiting
until each is Established, then the rest in order; then it waits for discovery's Deployment
(and the CNI DaemonSet) to be available, printing a line when what it waits for moves.
Uninstall deletes what install applied, but the namespace (it may hold a plugged-in
``cacerts``) and, unless ``--purge``, the CRDs (deleting one deletes every object of its
kind).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from pilotfish.cli import manifests
from pilotfish.core.output import CommandError
from pilotfish.plugins.kube import client as kube

FIELD_MANAGER = "pilotfish"
APPLY = "application/apply-patch+yaml"
POLL = 1.0  # seconds between looks at what install waits for

# kind → its resource name in the URL (every kind manifest generate writes).
PLURALS = {
    "CustomResourceDefinition": "customresourcedefinitions", "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps", "Service": "services",
    "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles", "RoleBinding": "rolebindings", "Deployment": "deployments",
    "DaemonSet": "daemonsets", "PodDisruptionBudget": "poddisruptionbudgets",
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}


def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="the cluster's kubeconfig (default: $KUBECONFIG, "
                   "else ~/.kube/config; in a pod, its service account)")
    p.add_argument("--context", help="the kubeconfig's context (default: its current-context)")
    manifests.add_value_arguments(p)


def add_install_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Apply pilotfish's manifests to a cluster (server-side apply, field "
                     "manager pilotfish) and wait until discovery is available.")
    _cluster_arguments(p)
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the CRDs and for discovery (default 300)")
    p.add_argument("--no-wait", action="store_true",
                   help="return once applied, without waiting for discovery")


def add_uninstall_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Delete what pilotfish install applied, but the namespace and (unless "
                     "--purge) the CRDs.")
    _cluster_arguments(p)
    p.add_argument("--purge", action="store_true",
                   help="delete the CRDs too, and with them every Istio and Gateway API "
                   "object in the cluster")


def connect(args: argparse.Namespace) -> kube.Client:
    """A client for ``--kubeconfig`` (else $KUBECONFIG's first file, else the pod's own
    cluster in a pod, else ~/.kube/config), as kubectl finds its cluster."""
    kubeconfig: Path | None
    if args.kubeconfig:
        kubeconfig, named = Path(args.kubeconfig), "--kubeconfig"
    elif os.environ.get("KUBECONFIG"):
        kubeconfig, named = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0]), "KUBECONFIG"
    elif kube.in_cluster():
        kubeconfig, named = None, ""
    else:
        kubeconfig, named = Path.home() / ".kube" / "config", "kubeconfig"
    if kubeconfig is not None and not kubeconfig.is_file():
        raise CommandError(f"{named} {kubeconfig}: no such file")
    try:
        return kube.load(kubeconfig, args.context, pool_size=4)
    except kube.ConfigError as exc:
        raise CommandError(str(exc)) from exc


def path_of(obj: Mapping[str, Any], *, named: bool = True) -> str:
    """The object's URL path (its collection's, without ``named``)."""
    group_version = obj["apiVersion"]
    prefix = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
    metadata = obj["metadata"]
    if metadata.get("namespace"):
        prefix += f"/namespaces/{metadata['namespace']}"
    path = f"{prefix}/{PLURALS[obj['kind']]}"
    return f"{path}/{metadata['name']}" if named else path


def describe(obj: Mapping[str, Any]) -> str:
    metadata = obj["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{obj['kind']} {where}{metadata['name']}"


def apply(api: kube.Client, obj: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return api.request("PATCH", path_of(obj), {"fieldManager": FIELD_MANAGER,
                                                   "force": "true"}, dict(obj), APPLY)
    except kube.ApiError as exc:
        raise CommandError(f"applying {describe(obj)}: {exc}") from exc


# -- what is ready -------------------------------------------------------------------------


def crd_waiting(obj: Mapping[str, Any]) -> str | None:
    """None once the CRD is Established, else why not."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or ()}
    established = conditions.get("Established") or {}
    if established.get("status") == "True":
        return None
    return established.get("message") or "not Established yet"


def deployment_waiting(obj: Mapping[str, Any]) -> str | None:
    """None once every replica of the current generation is available, as ``kubectl rollout
    status`` decides; else how far it got."""
    status = obj.get("status") or {}
    want = (obj.get("spec") or {}).get("replicas", 1)
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 1):
        return _unseen(obj)
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    if updated < want or available < want:
        return f"{available} of {want} replicas available, {updated} updated"
    return None


def daemonset_waiting(obj: Mapping[str, Any]) -> str | None:
    status = obj.get("status") or {}
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 1):
        return _unseen(obj)
    want = status.get("desiredNumberScheduled", 0)
    available, updated = status.get("numberAvailable", 0), status.get("updatedNumberScheduled", 0)
    if available < want or updated < want:
        return f"{available} of {want} nodes available, {updated} updated"
    return None


def _unseen(obj: Mapping[str, Any]) -> str:
    return (f"its controller has not seen generation {obj['metadata'].get('generation', 1)} "
            "yet")


WAITS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "Deployment": deployment_waiting, "DaemonSet": daemonset_waiting,
}


def wait_ready(api: kube.Client, objects: list[dict[str, Any]],
               waiting: Callable[[Mapping[str, Any]], str | None], timeout: float,
               say: Callable[[str], object], poll: float = POLL) -> None:
    """Until ``waiting`` says None for every object (read again each ``poll`` seconds),
    telling ``say`` each object's state when it changes; a `CommandError` naming what is not
    ready when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    said: dict[str, str | None] = {}
    pending = list(objects)
    while True:
        still = []
        for obj in pending:
            try:
                why = waiting(api.request("GET", path_of(obj)))
            except kube.ApiError as exc:
                why = str(exc)
            name = describe(obj)
            if why is None:
                say(f"✔ {name} ready")
                continue
            if said.get(name) != why:
                say(f"  {name}: {why}")
                said[name] = why
            still.append(obj)
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise CommandError(f"not ready after {timeout:g}s: " + "; ".join(
                f"{describe(obj)} ({said[describe(obj)]})" for obj in pending))
        time.sleep(poll)


# -- the commands --------------------------------------------------------------------------


def install(api: kube.Client, objects: list[dict[str, Any]], *, timeout: float, wait: bool,
            out: TextIO, poll: float = POLL) -> None:
    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    if crds:
        for obj in crds:
            apply(api, obj)
        say(f"✔ {len(crds)} CustomResourceDefinitions applied")
        deadline = time.monotonic() + timeout
        # one line for all of them; a timeout names those not Established
        wait_ready(api, crds, crd_waiting, timeout, lambda line: None, poll)
        say("✔ CustomResourceDefinitions Established")
        timeout = max(0.0, deadline - time.monotonic())
    for obj in rest:
        apply(api, obj)
        say(f"✔ {describe(obj)} applied")
    if wait:
        wait_ready(api, [o for o in rest if o["kind"] in WAITS],
                   lambda obj: WAITS[obj["kind"]](obj), timeout, say, poll)
        say("✔ installed")


def uninstall(api: kube.Client, objects: list[dict[str, Any]], *, purge: bool,
              out: TextIO) -> None:
    for obj in reversed(objects):
        if obj["kind"] == "Namespace" or (obj["kind"] == "CustomResourceDefinition"
                                          and not purge):
            continue
        try:
            api.request("DELETE", path_of(obj))
            out.write(f"✔ {describe(obj)} deleted\n")
        except kube.ApiError as exc:
            if exc.status != 404:
                raise CommandError(f"deleting {describe(obj)}: {exc}") from exc
    if not purge:
        out.write("CRDs kept (their objects too); --purge deletes them\n")


def install_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    objects = manifests.generate(manifests.values(args.profile, args.sets))
    api = connect(args)
    try:
        install(api, objects, timeout=args.timeout, wait=not args.no_wait,
                out=out or sys.stdout)
    finally:
        api.close()
    return 0


def uninstall_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    vals = manifests.values(args.profile, args.sets)
    # Whatever the install enabled: deleting what is not there is no error.
    vals.update({"components.crds.enabled": True, "components.webhooks.enabled": True,
                 "components.cni.enabled": True})
    api = connect(args)
    try:
        uninstall(api, manifests.generate(vals), purge=args.purge, out=out or sys.stdout)
    finally:
        api.close()
    return 0

