"""The Gateway API conformance runner: the suite's cases against ``pilotfish up``.

    python -m pilotfish.testing.conformance.runner --out docs/conformance/report.yaml \\
        [--profile GATEWAY-HTTP ...] [--case HTTPRouteExactPathMatching ...]

The node comes up once with the suite's infrastructure (``live.py``); then every case the
chosen profiles select (``profiles.tests_for``, with Istio 1.30's extended features)
runs in the Go suite's order, as its Go test does: its manifests applied, each step's
changes made, its status checks polled with the Go helpers' timeouts, its requests sent
until they pass as the Go helpers demand; and what it applied or created deleted after it,
as the Go suite's cleanup does. A case stops at its first unmet check. The report is a
ConformanceReport (``report.py``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import ipaddress
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import yaml

from . import exchanges, manifests, mesh_client, mirrors, report, status, streams
from .apiserver import Key
from .cases import ALL
from .model import (
    MESH_CONSUMER_NS,
    MESH_NS,
    BackendNamedByHeader,
    Case,
    EndpointSlicesFromPods,
    ExpectedResponse,
    GRPCExpectedResponse,
    Patch,
    Step,
    TCPEcho,
    TCPExpectedResponse,
    TLSConnectionRejected,
    WebSocketEcho,
)
from .profiles import BY_NAME, ISTIO_1_30_SUPPORTED, PROFILES, Profile, tests_for
from .timeouts import DEFAULT, TimeoutConfig

SETUP_NAMESPACES = ("gateway-conformance-infra", "gateway-conformance-app-backend",
                    "gateway-conformance-web-backend")
MESH_NAMESPACES = (MESH_NS, MESH_CONSUMER_NS)
SUBNET = "10.240.0.0/24"
SLOW = 5.0  # a wait longer than this is logged
BRIDGE = "pfconf0"
ALL_PROFILES = tuple(p.name for p in PROFILES)


class CaseFailed(Exception):
    pass


class NotRunnable(Exception):
    """Something the case needs that this runner cannot do here (reported as skipped)."""


def select(profiles: Sequence[Profile], supported: frozenset[str],
           names: Sequence[str] = ()) -> list[Case]:
    """The cases a run of these profiles reports on, in the suite's order, each once."""
    chosen: set[str] = set()
    for profile in profiles:
        core, extended = tests_for(profile, supported)
        chosen |= {case.short_name for case in (*core, *extended)}
    if names:
        unknown = set(names) - {case.short_name for case in ALL}
        if unknown:
            raise SystemExit(f"no such test: {', '.join(sorted(unknown))}")
        chosen &= set(names)
    return [case for case in ALL if case.short_name in chosen]


def _print(text: str) -> None:
    print(text, flush=True)


@attrs.define
class Runner:
    live: Any  # live.Live (or a stand-in with the same reads)
    supported: frozenset[str]
    timeouts: TimeoutConfig = DEFAULT
    log: Callable[[str], None] = _print

    # -- setup ---------------------------------------------------------------------------

    def setup(self, mesh: bool) -> None:
        """``suite.Setup``'s checks: the GatewayClass accepted, the namespaces ready."""
        t = self.timeouts
        accepted = status.Wait(
            "GWCMustHaveAcceptedConditionTrue istio", t.gwc_must_be_accepted,
            t.default_poll_interval, lambda snap: None if status.find_condition(
                status.all_conditions("GatewayClass", snap.must_get("GatewayClass", ("", "istio"))),
                status.Condition("Accepted", "True")) else "not accepted yet")
        self.poll(accepted)
        self.poll(status.namespaces_ready(SETUP_NAMESPACES, t))
        if mesh:
            self.poll(status.namespaces_ready(MESH_NAMESPACES, t, mesh=True))

    # -- cases -----------------------------------------------------------------------------

    def run_case(self, case: Case) -> report.Result:
        started = time.monotonic()
        if case.not_runnable:
            return report.Result(case, report.SKIPPED, case.not_runnable)
        if any(f in self.supported for f in case.returns_if_supported) or any(
                f not in self.supported for f in case.returns_unless_supported):
            return report.Result(case, report.PASSED, "the Go test returns at once here")
        created: list[Key] = []
        before: dict[Key, int] = {}
        folder = f"cases/{case.short_name}"
        try:
            for manifest in case.manifests:
                created += self.live.apply_manifest(manifest, folder)
            for number, step in enumerate(case.steps, 1):
                try:
                    self.run_step(step, created, before, folder)
                except CaseFailed as exc:
                    raise CaseFailed(f"step {number}: {exc}") from None
                except NotRunnable as exc:
                    raise NotRunnable(f"step {number}: {exc}") from None
            outcome = report.Result(case, report.PASSED)
        except CaseFailed as exc:
            outcome = report.Result(case, report.FAILED, str(exc))
        except NotRunnable as exc:
            outcome = report.Result(case, report.SKIPPED, f"not runnable here: {exc}")
        except Exception as exc:  # a bug of the runner's: the case fails, the run goes on
            self.log(traceback.format_exc())
            outcome = report.Result(case, report.FAILED, f"runner error: {exc!r}")
        finally:
            for key in reversed(created):
                self.live.api.delete(key)
        return attrs.evolve(outcome, seconds=time.monotonic() - started)

    def run_step(self, step: Step, created: list[Key], before: dict[Key, int],
                 folder: str) -> None:
        api = self.live.api
        if step.pause:
            time.sleep(step.pause)
        for manifest in step.apply:
            created += self.live.apply_manifest(manifest, folder)
        for create in step.create:
            document = {"apiVersion": create.api_version, "kind": create.kind,
                        "metadata": {"name": create.object[1], "namespace": create.object[0]},
                        **api.resolve(dict(create.fields))}
            if not create.object[0]:
                del document["metadata"]["namespace"]
            created.append(api.create(document, folder))
        for change in step.patch:
            if isinstance(change, EndpointSlicesFromPods):
                self.endpoint_slices(change)
                continue
            assert isinstance(change, Patch)
            key = (change.kind, *change.object)
            before[key] = status.generation(api.get(key))
            api.patch(key, change.ops)
        for ref in step.delete:
            api.delete((step.delete_kind, *ref))
        ctx = status.Context(usable_addresses=[a.value for a in
                                               self.live.applier.usable_addresses],
                             generations_before=dict(before))
        for wait in status.waits(step, ctx, self.timeouts, MESH_NAMESPACES):
            self.poll(wait)
        if step.requests:
            started = time.monotonic()
            self.exchange(step)
            if time.monotonic() - started > SLOW:
                self.log(f"    {len(step.requests)} requests: passed after "
                         f"{time.monotonic() - started:.1f}s")

    def endpoint_slices(self, change: EndpointSlicesFromPods) -> None:
        """``setupEndpointSlices``: each slice ``<prefix>-ip4`` / ``-ip6`` gets an endpoint
        per address of its family of the Deployment's pods (ready, serving, not
        terminating, a Pod targetRef); a slice with none is left as it is."""
        api = self.live.api
        namespace, name = change.deployment
        deployment = api.get(("Deployment", namespace, name))
        wanted = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
        pods = [p for p in self.live.pods() if p.namespace == namespace and p.ip
                and all(p.labels.get(k) == v for k, v in wanted.items())]
        if not pods:
            raise CaseFailed(f"expected {name} to have running Pods")
        for suffix, version in (("ip4", 4), ("ip6", 6)):
            for prefix in change.slice_prefixes:
                key = ("EndpointSlice", namespace, f"{prefix}-{suffix}")
                endpoints = [{
                    "addresses": [pod.ip],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace},
                } for pod in pods if ipaddress.ip_address(pod.ip).version == version]
                if endpoints:
                    api.update({**api.get(key), "endpoints": endpoints})

    def poll(self, wait: status.Wait) -> None:
        """``wait.PollUntilContextTimeout`` (immediate): look, then every interval."""
        started = time.monotonic()
        deadline = started + wait.timeout
        last = ""
        while True:
            try:
                why = wait.check(self.live.snapshot(wait.needs))
            except status.Fatal as exc:
                raise CaseFailed(f"{wait.what}: {exc}") from None
            except OSError as exc:  # the API side busy: as Go's helpers, look again
                why = f"the status view did not answer: {exc}"
            if why is None:
                if time.monotonic() - started > SLOW:
                    self.log(f"    {wait.what}: met after {time.monotonic() - started:.1f}s"
                             f" (last: {last[:150]})")
                return
            last = why
            if time.monotonic() > deadline:
                raise CaseFailed(f"{wait.what}: not met in {wait.timeout:g}s: {why}")
            time.sleep(wait.interval)

    # -- exchanges -------------------------------------------------------------------------

    def target(self, step: Step) -> exchanges.Target:
        assert step.gateway is not None
        found: list[tuple[str, int]] = []

        def address(snap: status.Snapshot) -> str | None:
            got = status.gateway_address(snap, step.gateway, step.listener)  # type: ignore[arg-type]
            if got is None:
                return "no typed status address yet"
            found.append(got)
            return None
        self.poll(status.Wait(f"WaitForGatewayAddress {step.gateway[1]}",
                              self.timeouts.gateway_must_have_address,
                              self.timeouts.default_poll_interval, address))
        ip, port = found[-1]
        return exchanges.Target(ip, step.port or port, step.scheme)

    def exchange(self, step: Step) -> None:
        if step.client is not None:
            self.mesh_exchange(step)
            return
        target = self.target(step)
        first = [r for r in step.requests if not isinstance(r, BackendNamedByHeader)]
        later = [r for r in step.requests if isinstance(r, BackendNamedByHeader)]
        failures = []
        with ThreadPoolExecutor(max(1, min(16, len(first)))) as pool:
            for request, outcome in zip(first, pool.map(
                    lambda r: self._one(r, target), first), strict=True):
                if outcome is not None:
                    failures.append(f"{_describe(request)}: {outcome}")
        if failures:
            more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
            raise CaseFailed("; ".join(failures[:3]) + more)
        for named in later:
            outcome = exchanges.named_by_header(named, target, self.live, self.timeouts)
            if outcome is not None:
                raise CaseFailed(f"{_describe(named)}: {outcome}")
        if step.weights:
            last = step.requests[-1]
            if isinstance(last, ExpectedResponse):
                outcome = exchanges.http_weights(last, step.weights, target, self.live,
                                                 self.timeouts)
            elif isinstance(last, GRPCExpectedResponse):
                outcome = streams.grpc_weights(last, step.weights, target, self.timeouts)
            else:
                raise NotRunnable(f"weights over {type(last).__name__} are not sent yet")
            if outcome is not None:
                raise CaseFailed(outcome)

    def mesh_exchange(self, step: Step) -> None:
        """Requests from an echo pod of the mesh (``echo.ConnectToApp``)."""
        assert step.client is not None
        try:
            run = self.live.pod_exec(*step.client)
        except LookupError as exc:
            raise CaseFailed(str(exc)) from None
        requests = []
        for request in step.requests:
            if not isinstance(request, ExpectedResponse):
                raise NotRunnable(f"mesh {type(request).__name__} exchanges are not sent yet")
            if (request.request.protocol or "").lower() == "grpc":
                raise NotRunnable("the echo stand-in does not speak gRPC")
            requests.append(request)

        def one(request: ExpectedResponse) -> str | None:
            pod_address = None
            if request.host_pod is not None:
                host_pod = request.host_pod
                pod_address = lambda: self.live.pod_ip(*host_pod)  # noqa: E731
            return mesh_client.exchange(request, run, self.timeouts, pod_address)
        with ThreadPoolExecutor(max(1, min(8, len(requests)))) as pool:
            failures = [f"{_describe(r)}: {outcome}" for r, outcome in
                        zip(requests, pool.map(one, requests), strict=True) if outcome]
        if failures:
            raise CaseFailed("; ".join(failures[:3]))
        if step.weights:
            outcome = mesh_client.weights(requests[-1], step.weights, run)
            if outcome is not None:
                raise CaseFailed(outcome)

    def _one(self, request: Any, target: exchanges.Target) -> str | None:
        t = self.timeouts
        try:
            if isinstance(request, ExpectedResponse):
                if any(m.percent is not None for m in request.mirrored_to):
                    return mirrors.percentage(request, target, self.live,
                                              self.live.service_logs, t)
                if request.mirrored_to:
                    return mirrors.mirrored(request, target, self.live,
                                            self.live.service_logs, t)
                return exchanges.http_exchange(request, target, self.live, t)
            if isinstance(request, GRPCExpectedResponse):
                return streams.grpc_exchange(request, target, t)
            if isinstance(request, TCPExpectedResponse):
                return streams.tcp_exchange(request, target, self.live, t)
            if isinstance(request, TCPEcho):
                return streams.tcp_echo(request, target, t)
            if isinstance(request, TLSConnectionRejected):
                return streams.tls_rejected(request, target, t)
            if isinstance(request, WebSocketEcho):
                return streams.websocket_echo(request, target, t)
            raise NotRunnable(f"{type(request).__name__} exchanges are not sent yet")
        except exchanges.Failed as exc:
            return str(exc)


def _describe(request: Any) -> str:
    if isinstance(request, ExpectedResponse):
        if request.test_case_name:
            return request.test_case_name
        r = request.request
        return f"{r.method or 'GET'} {r.host}{r.path}" + (f" {dict(r.headers)}" if r.headers
                                                          else "")
    return type(request).__name__


# --- a whole run ------------------------------------------------------------------------


@attrs.frozen
class Options:
    out: Path | None = None
    profiles: tuple[str, ...] = ALL_PROFILES
    cases: tuple[str, ...] = ()
    suite: Path = manifests.DEFAULT_SUITE
    workdir: Path | None = None
    subnet: str = SUBNET
    bridge: str = BRIDGE
    supported: frozenset[str] = ISTIO_1_30_SUPPORTED
    timeouts: TimeoutConfig = DEFAULT
    proxy: str = "envoy"  # the node's proxies: envoy | native


def implementation_version() -> str:
    version = importlib.metadata.version("pilotfish")
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent)
    return f"{version}+{commit.stdout.strip()}" if commit.returncode == 0 else version


def run(options: Options, log: Callable[[str], None] = _print) -> dict[str, Any]:
    """Bring the node up, run the cases, tear it down; the report."""
    from .live import Live

    profiles = [BY_NAME[name] for name in options.profiles]
    cases = select(profiles, options.supported, options.cases)
    mesh = any("Mesh" in case.features for case in cases)
    usable = manifests.Address(str(_host(options.subnet, -6)))
    applier = manifests.Applier(usable_addresses=(usable,),
                                unusable_addresses=(manifests.Address("203.0.113.1"),))
    with tempfile.TemporaryDirectory(prefix="pilotfish-conformance-") as tmp:
        workdir = options.workdir or Path(tmp)
        live = Live(workdir, options.suite, applier, options.subnet, options.bridge, mesh,
                    options.proxy)
        runner = Runner(live, options.supported, options.timeouts, log)
        results: list[report.Result] = []
        started = time.monotonic()
        try:
            log(f"==> pilotfish up with the suite's infrastructure ({len(cases)} cases)")
            live.start()
            runner.setup(mesh)
            log(f"    ready in {time.monotonic() - started:.0f}s")
            for case in cases:
                result = runner.run_case(case)
                results.append(result)
                log(f"{result.result:9} {case.short_name} ({result.seconds:.1f}s)"
                    + (f": {result.reason}" if result.reason else ""))
        finally:
            left = live.stop()
            if left:
                log(f"left behind: {left}")
        log(f"==> {len(results)} cases in {time.monotonic() - started:.0f}s")
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    built = report.build(results, profiles, options.supported,
                         implementation=report.Implementation(version=implementation_version()),
                         api_version=report.gateway_api_version(options.suite), date=date)
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(yaml.safe_dump(built, sort_keys=False, width=100))
    return built


def _host(subnet: str, index: int) -> object:
    return ipaddress.ip_network(subnet)[index]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pilotfish.testing.conformance.runner",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the ConformanceReport YAML here")
    parser.add_argument("--profile", action="append", choices=sorted(BY_NAME),
                        help="a profile to run (repeat; default: all four)")
    parser.add_argument("--case", action="append", default=[], help="only this test (repeat)")
    parser.add_argument("--suite", type=Path, default=manifests.DEFAULT_SUITE,
                        help="the suite's conformance/ folder (default %(default)s)")
    parser.add_argument("--workdir", type=Path, help="keep the node's files here")
    parser.add_argument("--subnet", default=SUBNET, help="the node's pod network")
    parser.add_argument("--bridge", default=BRIDGE, help="the node's bridge")
    parser.add_argument("--proxy", default="envoy", choices=("envoy", "native"),
                        help="the proxy the node runs (default %(default)s)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    options = Options(out=args.out, profiles=tuple(args.profile or ALL_PROFILES),
                      cases=tuple(args.case), suite=args.suite, workdir=args.workdir,
                      subnet=args.subnet, bridge=args.bridge, proxy=args.proxy)
    built = run(options)
    for name, (core, core_total, ext, ext_total) in report.counts(built).items():
        print(f"{name}: core {core}/{core_total}, extended {ext}/{ext_total}")
    failed = any(t["result"] == report.FAILED for t in built["tests"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
