"""The rotation state machine: renewal time with jitter, backoff, root changes (sans-IO)."""

from __future__ import annotations

import itertools
import time

import pytest

from pilotfish.core.backoff import Backoff
from pilotfish.core.security import pki, signing, workload_cert
from pilotfish.core.security.cert_rotation import Phase, Rotation, Update, renew_time
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.provider import SigningRequest

HOUR = 3600.0
DAY = 24 * HOUR
NOW = time.time()
ME = "spiffe://cluster.local/ns/shop/sa/reviews"


class Draws:
    """A scripted ``random``: the values given, then 0.5 forever."""

    def __init__(self, *values: float) -> None:
        self._values = itertools.chain(values, itertools.repeat(0.5))

    def __call__(self) -> float:
        return next(self._values)


def ca() -> pki.SigningBundle:
    root, key = pki.self_signed_root("cluster.local", NOW - 60)
    return pki.make_bundle(root, key, [], [root])


def issue(bundle: pki.SigningBundle, ttl: float, now: float):
    """(secret, roots of the answer) as the cert manager hands them to the rotation."""
    from cryptography import x509
    key = workload_cert.generate_key()
    csr = x509.load_pem_x509_csr(workload_cert.make_csr(key, ME).encode())
    chain = signing.sign_workload(
        bundle, SigningRequest(csr, Identity("shop", "reviews"), ME, ttl), now)
    secret = workload_cert.from_response(chain, key, ME, (), now)
    return secret, workload_cert.load_pems(chain[-1], "root")


# -- the renewal time --------------------------------------------------------------------


def test_a_day_long_certificate_is_renewed_after_about_twelve_hours():
    assert renew_time(0, DAY, 0.0, 1) == 12 * HOUR
    earliest = renew_time(0, DAY, 0.999999, 1)  # grace 0.51: renew sooner
    latest = renew_time(0, DAY, 0.999999, -1)  # grace 0.49: renew later
    assert 11 * HOUR + 45 * 60 < earliest < latest < 12 * HOUR + 15 * 60
    assert earliest == pytest.approx(DAY * 0.49, abs=1)
    assert latest == pytest.approx(DAY * 0.51, abs=1)


def test_the_lifetime_runs_from_arrival_not_from_a_backdated_not_before():
    # A 20 s certificate whose NotBefore is 2 min back must not be renewed after expiry.
    received, not_after = 1000.0, 1020.0
    assert received < renew_time(received, not_after, 0.3, 1) < not_after


def test_the_grace_ratio_is_clamped_to_the_lifetime():
    assert renew_time(100, 200, 0.9, 1, ratio=0.99, jitter=0.5) == 100  # at once, not before
    assert renew_time(100, 200, 0.9, -1, ratio=0.01, jitter=0.5) == 200  # at expiry at most


# -- backoff ----------------------------------------------------------------------------


def test_backoff_grows_by_half_to_a_minute_and_is_randomized_by_half():
    backoff = Backoff()
    middle = [backoff.next(0.5) for _ in range(14)]  # draw 0.5: no randomization
    assert middle[:4] == [0.5, 0.75, 1.125, 1.6875]
    assert middle[-1] == 60.0 and max(middle) == 60.0
    low, high = Backoff(), Backoff()
    assert low.next(0.0) == 0.25 and high.next(0.999999) == pytest.approx(0.75)


def test_backoff_never_waits_more_than_the_maximum_and_resets():
    backoff = Backoff()
    waits = [backoff.next(0.999999) for _ in range(30)]
    assert max(waits) == 60.0
    backoff.reset()
    assert backoff.next(0.5) == 0.5


# -- the state machine -----------------------------------------------------------------------


def test_first_request_is_due_at_once_and_one_at_a_time():
    rotation = Rotation()
    assert rotation.phase is Phase.STARTING and rotation.due(NOW)
    rotation.begin(NOW)
    assert rotation.phase is Phase.REQUESTING
    assert not rotation.due(NOW + DAY) and rotation.wake_at() is None
    with pytest.raises(RuntimeError, match="no request is due"):
        rotation.begin(NOW)


def test_success_schedules_the_renewal_within_the_jitter_bounds():
    bundle = ca()
    for draws in ((0.0, 0.999999), (0.9, 0.999999), (0.3, 0.0)):  # sign draw, size draw
        rotation = Rotation(random=Draws(*draws))
        rotation.begin(NOW)
        secret, roots = issue(bundle, HOUR, NOW)
        update = rotation.succeeded(secret, roots, NOW)
        assert update == Update(default=True, roots=True)
        assert rotation.phase is Phase.HOLDING and rotation.issued == 1
        assert rotation.renew_at is not None
        lifetime = secret.leaf.not_after - NOW
        assert NOW + 0.49 * lifetime - 1 <= rotation.renew_at <= NOW + 0.51 * lifetime + 1
        assert not rotation.due(rotation.renew_at - 1) and rotation.due(rotation.renew_at)


def test_failures_back_off_and_a_success_resets_them():
    rotation = Rotation(random=Draws())
    waits = []
    for attempt in range(1, 5):
        now = rotation.next_attempt
        rotation.begin(now)
        waits.append(rotation.failed(f"unreachable #{attempt}", now))
        assert rotation.phase is Phase.RETRYING and rotation.failures == attempt
        assert not rotation.due(now) and rotation.due(now + waits[-1])
    assert waits == [0.5, 0.75, 1.125, 1.6875]
    assert rotation.last_error == "unreachable #4"
    now = rotation.next_attempt
    rotation.begin(now)
    secret, roots = issue(ca(), HOUR, now)
    rotation.succeeded(secret, roots, now)
    assert rotation.failures == 0 and rotation.last_error == ""
    assert rotation.backoff.interval == 0.5


def test_a_failed_renewal_keeps_serving_the_held_certificate():
    rotation = Rotation(random=Draws())
    rotation.begin(NOW)
    secret, roots = issue(ca(), 60, NOW)
    rotation.succeeded(secret, roots, NOW)
    later = NOW + 61
    rotation.begin(later)
    rotation.failed("CA down", later)
    assert rotation.secret == secret and rotation.expired(later)


def test_a_renewal_from_the_same_ca_pushes_default_only():
    bundle = ca()
    rotation = Rotation(random=Draws())
    rotation.begin(NOW)
    first, roots = issue(bundle, HOUR, NOW)
    rotation.succeeded(first, roots, NOW)
    assert rotation.renew_at is not None
    at = rotation.renew_at
    rotation.begin(at)
    second, roots = issue(bundle, HOUR, at)
    assert rotation.succeeded(second, roots, at) == Update(default=True, roots=False)
    assert rotation.secret is not None and rotation.secret.leaf.serial != first.leaf.serial


def test_a_new_root_in_the_answer_pushes_rootca_too():
    rotation = Rotation(random=Draws())
    rotation.begin(NOW)
    secret, roots = issue(ca(), HOUR, NOW)
    rotation.succeeded(secret, roots, NOW)
    assert rotation.renew_at is not None
    at = rotation.renew_at
    rotation.begin(at)
    secret, roots = issue(ca(), HOUR, at)  # the CA moved to another root
    assert rotation.succeeded(secret, roots, at) == Update(default=True, roots=True)


def test_a_root_file_change_pushes_the_merged_roots_and_renews_at_once():
    old, new = ca(), ca()
    rotation = Rotation(file_roots=old.roots, random=Draws())
    rotation.begin(NOW)
    secret, roots = issue(old, HOUR, NOW)
    assert rotation.succeeded(secret, roots, NOW).roots
    assert rotation.secret is not None and rotation.secret.roots == old.roots
    assert rotation.roots_changed(old.roots, NOW + 5) == Update()  # same content: nothing
    update = rotation.roots_changed([*old.roots, *new.roots], NOW + 5)
    assert update == Update(roots=True)
    assert rotation.secret.roots == (*old.roots, *new.roots)
    assert rotation.due(NOW + 5)  # Istio re-signs when the trust bundle changes


def test_a_root_file_change_during_a_request_renews_once_more_after_it():
    old, new = ca(), ca()
    rotation = Rotation(file_roots=old.roots, random=Draws())
    rotation.begin(NOW)
    assert rotation.roots_changed(new.roots, NOW + 1) == Update()  # nothing held yet
    secret, roots = issue(old, HOUR, NOW + 2)
    rotation.succeeded(secret, roots, NOW + 2)
    # Built before the change, served with the file's roots as they are now.
    assert rotation.secret is not None
    assert set(rotation.secret.roots) == {*old.roots, *new.roots}
    assert rotation.due(NOW + 2)
