"""Leader election with a Lease: the decisions over data (acquire, renew, a lease held,
one run out, release, the renew deadline), then two electors on the fake API server through
the official client (create races, 409 on a stale resourceVersion, takeover, release), and
the runner running work only while it leads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest

from pilotfish.discovery import leader
from pilotfish.discovery.leader import Election, LeaderElection, Record, Timing
from pilotfish.plugins.kube import client as kube_client
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.processes import wait_until
from tests.unit.discovery.racing_client import RacingClient

NS = "istio-system"
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TIMING = Timing(lease_duration=10, renew_deadline=5, retry_period=2)


def lease(holder: str, version: str = "7", duration: int = 10, transitions: int = 0,
          acquired: str = "2026-01-01T00:00:00.000000Z") -> dict[str, Any]:
    return {"metadata": {"name": "l", "namespace": NS, "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": acquired, "renewTime": acquired,
                     "leaseTransitions": transitions}}


def election(me: str = "a") -> Election:
    return Election(NS, "l", me, TIMING)


# -- the decisions -------------------------------------------------------------------------


def test_a_missing_lease_is_created_with_our_identity_and_micro_times():
    write = election().next_write(None, now=100.0, wall=0.5)
    assert write is not None and write.method == "POST"
    spec = write.body["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 10
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] == "1970-01-01T00:00:00.500000Z"
    assert "resourceVersion" not in write.body["metadata"]


def test_a_lease_another_holds_is_left_until_it_runs_out_on_our_clock():
    mine = election()
    assert mine.next_write(lease("b"), now=100.0, wall=0) is None
    assert mine.next_write(lease("b"), now=109.9, wall=0) is None  # unchanged, not yet out
    write = mine.next_write(lease("b"), now=110.0, wall=1.0)
    assert write is not None and write.method == "PUT"
    assert write.body["metadata"]["resourceVersion"] == "7"  # optimistic concurrency
    assert write.body["spec"]["holderIdentity"] == "a"
    assert write.body["spec"]["leaseTransitions"] == 1  # a takeover counts
    assert write.body["spec"]["acquireTime"] == leader.micro_time(1.0)


def test_a_renewed_lease_restarts_the_wait_however_old_its_renew_time():
    mine = election()
    assert mine.next_write(lease("b", version="7"), now=100.0, wall=0) is None
    # b renewed (its record changed) at 108 by our clock: valid until 118.
    assert mine.next_write(lease("b", version="8", acquired="2020-01-01T00:00:00.000000Z"),
                           now=108.0, wall=0) is None
    assert mine.next_write(lease("b", version="8", acquired="2020-01-01T00:00:00.000000Z"),
                           now=115.0, wall=0) is None


def test_a_released_lease_is_taken_at_once():
    write = election().next_write(lease("", duration=1, transitions=3), now=100.0, wall=0)
    assert write is not None and write.body["spec"]["leaseTransitions"] == 4


def test_renewing_keeps_acquire_time_and_transitions():
    mine = election()
    held = lease("a", transitions=2, acquired="2026-01-01T00:00:00.000000Z")
    write = mine.next_write(held, now=100.0, wall=5.0)
    assert write is not None
    assert write.body["spec"]["acquireTime"] == "2026-01-01T00:00:00.000000Z"
    assert write.body["spec"]["renewTime"] == leader.micro_time(5.0)
    assert write.body["spec"]["leaseTransitions"] == 2


def test_leading_ends_on_a_conflict_or_at_the_renew_deadline_and_someone_else_holding():
    mine = election()
    mine.written(lease("a"), now=100.0)
    assert mine.leading
    mine.failed(104.9)
    assert mine.leading  # within the renew deadline
    mine.failed(105.0)
    assert not mine.leading
    mine.written(lease("a"), now=200.0)
    mine.conflict()
    assert not mine.leading
    mine.written(lease("a"), now=300.0)
    assert mine.next_write(lease("b", version="9"), now=301.0, wall=0) is None
    assert not mine.leading


def test_release_clears_the_holder_and_keeps_the_transitions():
    mine = election()
    assert mine.release(0.0) is None  # not leading: nothing to hand back
    mine.written(lease("a", version="12", transitions=5), now=1.0)
    write = mine.release(2.0)
    assert write is not None and write.method == "PUT"
    assert write.body["metadata"]["resourceVersion"] == "12"
    assert write.body["spec"] == {"holderIdentity": "", "leaseDurationSeconds": 1,
                                  "leaseTransitions": 5, "acquireTime": leader.micro_time(2.0),
                                  "renewTime": leader.micro_time(2.0)}


def test_identities_name_the_pod_and_differ_per_start():
    first, second = (leader.identity({"POD_NAME": "istiod-7d9c"}) for _ in range(2))
    assert first.startswith("istiod-7d9c_") and first != second
    assert Timing.for_lease(30) == Timing(30, 15, 7.5)  # Istio's


# -- against the API server ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path / "api") as api:
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield api


@pytest.fixture
def clients(api: FakeKubeApi) -> Iterator[tuple[kube_client.Client, kube_client.Client]]:
    made = (kube_client.load(api.kubeconfig), kube_client.load(api.kubeconfig))
    yield made
    for one in made:
        one.close()


def stored(client: kube_client.Client) -> Record:
    return Record.of(client.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/l"))


def electors(clients: tuple[kube_client.Client, kube_client.Client], clock: Clock
             ) -> tuple[LeaderElection, LeaderElection]:
    a, b = (LeaderElection(client, election(me), clock=clock)
            for client, me in zip(clients, "ab", strict=True))
    return a, b


def test_one_of_two_acquires_the_other_waits_then_takes_over_an_expired_lease(clients):
    clock = Clock()
    a, b = electors(clients, clock)
    assert a.try_acquire_or_renew() and a.leading
    assert not b.try_acquire_or_renew() and not b.leading
    record = stored(clients[0])
    assert record.holder == "a" and record.duration == 10 and record.transitions == 0
    assert MICRO.match(record.acquire_time) and MICRO.match(record.renew_time)
    clock.now += 5
    assert a.try_acquire_or_renew()  # renewed: b's wait starts again
    assert not b.try_acquire_or_renew()
    clock.now += 9.9
    assert not b.try_acquire_or_renew()
    clock.now += 0.1  # a has not renewed for a lease on b's clock
    assert b.try_acquire_or_renew() and b.leading
    after = stored(clients[0])
    assert after.holder == "b" and after.transitions == 1
    assert not a.try_acquire_or_renew() and not a.leading  # sees b's lease


def test_a_takeover_racing_a_renewal_conflicts_and_does_not_lead(clients):
    clock = Clock()
    a, b = electors(clients, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 10  # a's lease ran out on b's clock; b reads it, a renews, b writes
    b.client = RacingClient(clients[1], a.try_acquire_or_renew)
    assert not b.try_acquire_or_renew() and not b.leading
    assert stored(clients[0]).holder == "a" and a.leading


def test_two_creating_at_once_one_wins_the_other_conflicts(clients):
    clock = Clock()
    a, b = electors(clients, clock)
    write = b.election.next_write(None, clock.now, 0)  # b found none too
    assert a.try_acquire_or_renew()
    assert write is not None
    with pytest.raises(kube_client.ApiError) as refused:
        clients[1].request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
                           body=write.body)
    assert refused.value.status == 409


def test_a_released_lease_is_taken_over_at_once(clients):
    clock = Clock()
    a, b = electors(clients, clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    a.release()
    assert stored(clients[0]).holder == "" and not a.leading
    assert b.try_acquire_or_renew()  # no lease duration to wait
    assert stored(clients[0]).transitions == 1


def test_the_runner_runs_work_while_leading_and_releases_when_stopped(api, clients):
    led: list[str] = []

    def elector(client: kube_client.Client, me: str) -> LeaderElection:
        found = LeaderElection(client, Election(NS, "l", me, Timing.for_lease(1.0)))

        async def work() -> None:
            led.append(me)
            await anyio.sleep_forever()

        found.add_run(work)
        return found

    a, b = elector(clients[0], "a"), elector(clients[1], "b")
    with anyio.from_thread.start_blocking_portal() as portal:
        first, _ = portal.start_task(a.run)
        wait_until(lambda: led == ["a"], 5, what="a to lead")
        second, _ = portal.start_task(b.run)
        portal.call(anyio.sleep, 1.0)  # four of b's tries: a holds it
        assert led == ["a"] and a.leading and not b.leading
        first.cancel()
        wait_until(lambda: led == ["a", "b"], 2, what="b to take over")
        assert stored(clients[0]).holder == "b"
        second.cancel()
        wait_until(lambda: stored(clients[0]).holder == "", 2, what="b to release")
