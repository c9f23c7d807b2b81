"""``pilotfish cni-agent``: Istio CNI's long-running node part, for ambient pods.

One per node, as root. It holds two unix sockets:

- the ZDS server (``--zds-socket``, default ``/var/run/ztunnel/ztunnel.sock``), which the
  node's ztunnel connects to and gets every ambient pod's network namespace from;
- the pod-event API (``--events-socket``, default ``/var/run/istio-cni/pluginevent.sock``),
  an HTTP server ``pilotfish-cni`` posts pod events to (the ``ztunnel-sockets`` interceptor;
  bodies in ``interceptors/ambient_events.py``).

On ``/cmdadd`` (a new pod) or ``/enroll`` (a running pod newly labelled ambient) for an ambient
pod it opens the pod's network namespace and keeps it open, writes the in-pod rules there
(``ambient_rules``, byte for byte Istio's), hands the namespace to ztunnel and waits for its
Ack, then answers ``{"redirection": "enabled"}`` — what Istio records as the pod annotation
``ambient.istio.io/redirection``. With no ztunnel connected the pod is held and handed over
when one connects (the answer says so). ``/cmddel`` removes the rules while the namespace
still exists and tells ztunnel. ``GET /pods`` lists what the agent holds.

The pods it holds are written to ``--state-file`` (default: ``ambient-pods.json`` beside the
events socket) after every change. A restarted agent reads it back: each pod whose namespace
still exists is held again (and so in the snapshot the reconnecting ztunnel gets); a pod whose
namespace is gone is left out, and ztunnel forgets it.

Answers: 400 for a body or pod it cannot use (naming the field), 500 when the rules cannot be
written, 503 when ztunnel refuses the pod or does not answer (retry later; the rules stay and
the pod is held, so the next ztunnel connection gets it). Bad input never stops the agent.

With ``--kubeconfig`` it also watches the API server for pods of its node (``--node-name``)
that join or leave ambient mode while running (``node/ambient_watch.py``); without one, the
node posts ``/enroll`` for them.

In its own network namespace (the node's) it keeps the rule and ipset that let the node's
probes reach ambient pods past ztunnel (``interceptors/host_probes.py``, Istio's
``hostprobe.golden``): installed at start, each held pod's IPs in the set, and both removed
when the agent stops. Without ``ipset`` the agent says so and runs without them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

from pilotfish.core.ambient.enrollment import in_ambient
from pilotfish.core.ambient.zds import WorkloadInfo, ZdsError, ZdsServer
from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.core.interceptor import InterceptorError
from pilotfish.interceptors import iptables
from pilotfish.interceptors.ambient_events import (
    ADD,
    DEFAULT_SOCKET,
    DELETE,
    ENROLL,
    EventError,
    PodEvent,
    add_body,
    parse_add,
    parse_delete,
)
from pilotfish.interceptors.ambient_rules import AmbientPlan, inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings, pod_overrides
from pilotfish.interceptors.capture_settings import SettingsError
from pilotfish.interceptors.host_probes import HostProbes
from pilotfish.interceptors.netns_exec import Netns

DEFAULT_ZDS_SOCKET = "/var/run/ztunnel/ztunnel.sock"
STATE_FILE = "ambient-pods.json"
log = logging.getLogger("pilotfish.cni_agent")


class AgentError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class HeldPod:
    event: PodEvent
    plan: AmbientPlan


class CniAgent:
    def __init__(self, zds_socket: str | Path, events_socket: str | Path,
                 settings: AmbientSettings | None = None,
                 state_file: str | Path | None = None) -> None:
        self.settings = settings or AmbientSettings()
        self.zds = ZdsServer(zds_socket)
        self.events_socket = str(events_socket)
        self.state_file = Path(state_file) if state_file else \
            Path(events_socket).parent / STATE_FILE
        self.pods: dict[str, HeldPod] = {}
        self.probes = HostProbes(self.settings)
        self.probes_installed = False
        self.http = HttpServer({ADD: self._on_add, ENROLL: self._on_add,
                                DELETE: self._on_delete, "/pods": self._on_pods})

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve both sockets until cancelled; started once both exist."""
        await self._restore()
        await anyio.to_thread.run_sync(self._install_probes)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.zds.serve)
                await tasks.start(self.http.serve_unix, self.events_socket)
                while not self.zds.path.exists():  # serve() binds before its first await
                    await anyio.sleep(0.005)
                log.info("cni-agent: pod events on %s, ZDS on %s", self.events_socket,
                         self.zds.path)
                task_status.started()
        finally:
            if self.probes_installed:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._uninstall_probes)

    def _install_probes(self) -> None:
        try:
            self.probes.install()
            self.probes.sync({uid: held.event.pod.ips for uid, held in self.pods.items()})
        except InterceptorError as exc:
            log.warning("cni-agent: the node's probes will go through ztunnel (no host probe "
                        "rule): %s", exc)
            return
        self.probes_installed = True

    def _uninstall_probes(self) -> None:
        try:
            self.probes.uninstall()
        except InterceptorError as exc:
            log.warning("cni-agent: removing the host probe rule: %s", exc)

    # --- the work -------------------------------------------------------------------------

    async def add_pod(self, event: PodEvent) -> dict[str, Any]:
        """Capture an ambient pod (see the module docstring); ``AgentError`` says why not,
        with the HTTP status that fits."""
        pod = event.pod
        if not in_ambient(pod.labels, pod.annotations, pod.namespace_labels):
            raise AgentError(400, f"pod {pod.key}: not in ambient mode (neither it nor its "
                             "namespace is labelled istio.io/dataplane-mode=ambient, or it "
                             "opted out or has a sidecar)")
        try:
            plan = inpod_plan(self.settings, pod_overrides(pod.annotations))
        except SettingsError as exc:
            raise AgentError(400, f"pod {pod.key}: {exc}") from None
        try:
            netns = Netns(event.netns)
            assert netns.path is not None
            fd = os.open(netns.path, os.O_RDONLY | os.O_CLOEXEC)
        except (InterceptorError, OSError) as exc:
            raise AgentError(400, f"Netns: {event.netns!r}: {exc}") from None
        try:
            try:
                await anyio.to_thread.run_sync(iptables.apply, plan, netns)
            except InterceptorError as exc:
                raise AgentError(500, f"pod {pod.key}: writing the in-pod rules: {exc}"
                                 ) from None
            if self.probes_installed:
                try:
                    await anyio.to_thread.run_sync(self.probes.hold, pod.uid, pod.ips)
                except InterceptorError as exc:
                    raise AgentError(500, f"pod {pod.key}: adding its IPs to the probe "
                                     f"ipset: {exc}") from None
            self.pods[pod.uid] = HeldPod(event, plan)
            self._save()
            info = WorkloadInfo(pod.name, pod.namespace, pod.service_account)
            try:
                await self.zds.add(pod.uid, info, fd)
            except ZdsError as exc:
                raise AgentError(503, f"pod {pod.key}: ztunnel: {exc}") from None
        finally:
            os.close(fd)  # the ZDS server holds its own duplicate
        ztunnel = "acknowledged" if self.zds.connected else \
            "not connected: the pod is handed over when ztunnel connects"
        log.info("cni-agent: pod %s (%s) captured; ztunnel %s", pod.key, pod.uid, ztunnel)
        return {"pod": pod.key, "uid": pod.uid, "redirection": "enabled", "ztunnel": ztunnel}

    async def remove_pod(self, event: PodEvent) -> dict[str, Any]:
        """Let a pod go: its rules out while its namespace exists (only a pod this agent
        holds: DEL names every pod, ambient or not), and ztunnel told in any case."""
        uid = event.pod.uid
        held = self.pods.pop(uid, None)
        removed = False
        if held is not None:
            self._save()
            if self.probes_installed:
                try:
                    await anyio.to_thread.run_sync(self.probes.release, held.event.pod.ips)
                except InterceptorError as exc:
                    log.warning("cni-agent: pod %s: taking its IPs out of the probe ipset: "
                                "%s", held.event.pod.key, exc)
            path = event.netns or held.event.netns
            try:
                netns: Netns | None = Netns(path)
            except InterceptorError:
                netns = None  # the namespace is gone, and the rules with it
            if netns is not None:
                try:
                    removed = await anyio.to_thread.run_sync(iptables.remove, netns, held.plan)
                except InterceptorError as exc:
                    log.warning("cni-agent: pod %s: removing the in-pod rules: %s",
                                held.event.pod.key, exc)
        try:
            await self.zds.delete(uid)
        except ZdsError as exc:
            raise AgentError(503, f"pod {uid}: ztunnel: {exc}") from None
        return {"uid": uid, "rulesRemoved": removed, "held": held is not None}

    # --- across restarts -------------------------------------------------------------------

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps([json.loads(add_body(held.event.pod, held.event.netns))
                                       for held in self.pods.values()], indent=1))
        scratch.replace(self.state_file)  # a crash mid-write leaves the old list

    async def _restore(self) -> None:
        """Hold again the pods a previous run held (before ztunnel can connect)."""
        try:
            saved = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except ValueError as exc:
            log.warning("cni-agent: %s: not JSON (%s); starting with no pods",
                        self.state_file, exc)
            return
        for entry in saved if isinstance(saved, list) else []:
            try:
                event = parse_add(json.dumps(entry).encode())
                plan = inpod_plan(self.settings, pod_overrides(event.pod.annotations))
            except (EventError, SettingsError) as exc:
                log.warning("cni-agent: %s: a pod left out: %s", self.state_file, exc)
                continue
            pod = event.pod
            info = WorkloadInfo(pod.name, pod.namespace, pod.service_account)
            try:
                fd = os.open(event.netns, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                log.info("cni-agent: pod %s: its netns %s is gone; not held", pod.key,
                         event.netns)
                continue
            except OSError as exc:  # there, but not ours to open: ztunnel keeps what it has
                log.warning("cni-agent: pod %s: %s; ztunnel is told to keep it", pod.key, exc)
                await self.zds.keep(pod.uid, info)
                self.pods[pod.uid] = HeldPod(event, plan)
                continue
            try:
                await self.zds.add(pod.uid, info, fd)  # no ztunnel yet: held for the snapshot
            finally:
                os.close(fd)
            self.pods[pod.uid] = HeldPod(event, plan)
        self._save()
        log.info("cni-agent: %d pod(s) held again from %s", len(self.pods), self.state_file)

    # --- HTTP -----------------------------------------------------------------------------

    async def _on_add(self, request: Request) -> Response:
        return await self._answer(request, parse_add, self.add_pod)

    async def _on_delete(self, request: Request) -> Response:
        return await self._answer(request, parse_delete, self.remove_pod)

    async def _answer(self, request: Request, parse: Any, act: Any) -> Response:
        if request.method != "POST":
            return Response.json({"error": f"{request.path}: use POST"}, 405)
        try:
            return Response.json(await act(parse(request.body)))
        except EventError as exc:
            return Response.json({"error": f"{request.path}: {exc}"}, 400)
        except AgentError as exc:
            log.warning("cni-agent: %s: %s", request.path, exc)
            return Response.json({"error": str(exc)}, exc.status)

    async def _on_pods(self, request: Request) -> Response:
        return Response.json({"ztunnelConnected": self.zds.connected,
                              "hostProbes": self.probes_installed, "pods": [
            {"uid": uid, "pod": held.event.pod.key, "netns": held.event.netns}
            for uid, held in sorted(self.pods.items())]})


# --- the command --------------------------------------------------------------------------


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "t", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zds-socket", default=DEFAULT_ZDS_SOCKET,
                        help="where ztunnel connects for pods (default %(default)s)")
    parser.add_argument("--events-socket", default=DEFAULT_SOCKET,
                        help="where pilotfish-cni posts pod events (default %(default)s)")
    parser.add_argument("--state-file",
                        help="where the held pods are kept across restarts (default: "
                        f"{STATE_FILE} beside the events socket)")
    parser.add_argument("--kubeconfig", help="watch this cluster's API server for pods of "
                        "this node joining or leaving ambient mode while running")
    parser.add_argument("--context", help="the kubeconfig's context (default: its "
                        "current-context)")
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME") or
                        socket.gethostname(),
                        help="this node's name in the cluster (default: env NODE_NAME, else "
                        "the host name)")
    parser.add_argument("--dns-capture", action=argparse.BooleanOptionalAction,
                        default=_env_bool("AMBIENT_DNS_CAPTURE", True),
                        help="send pods' DNS to ztunnel (env AMBIENT_DNS_CAPTURE; default on)")
    parser.add_argument("--ipv6", action=argparse.BooleanOptionalAction,
                        default=_env_bool("AMBIENT_IPV6", True),
                        help="write IPv6 rules too (env AMBIENT_IPV6; default on)")


def main(args: argparse.Namespace) -> int:
    from pilotfish.core.output import CommandError

    if os.geteuid() != 0:
        raise CommandError("needs root (it enters pods' network namespaces)")
    settings = AmbientSettings(enable_ipv6=args.ipv6, redirect_dns=args.dns_capture)
    agent = CniAgent(args.zds_socket, args.events_socket, settings, args.state_file)

    async def until_signalled() -> None:
        # SIGTERM, as a DaemonSet's pod gets: stop cleanly, removing both sockets.
        async with anyio.create_task_group() as tasks:
            await tasks.start(agent.run)
            if args.kubeconfig:
                from pilotfish.node.ambient_watch import PodWatch

                watch = PodWatch(agent, Path(args.kubeconfig), args.node_name, args.context)
                await tasks.start(watch.run)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tasks.cancel_scope.cancel()
                    break
    anyio.run(until_signalled)
    return 0
