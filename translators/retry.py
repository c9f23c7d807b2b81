"""VirtualService ``retries`` (and the mesh default) → Envoy ``RetryPolicy``.

Istio retries by default: a route without ``retries`` still gets two retries on connection
failures, refused streams, ``unavailable``, ``cancelled`` and 503, preferring hosts not yet
tried. A user policy starts from that default and overrides field by field, so leaving out
``retryOn`` keeps the default conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from google.protobuf import wrappers_pb2

from pilotfish.translators.common import istio_duration, pack

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_ATTEMPTS = 2
# Envoy may try this many hosts per retry to find one the host predicate accepts.
HOST_SELECTION_ATTEMPTS = 5
STATUS_CODES_TOKEN = "retriable-status-codes"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
_KNOWN_STATUSES = frozenset(int(s) for s in HTTPStatus)


def _previous_hosts() -> rc.RetryPolicy.RetryHostPredicate:
    return rc.RetryPolicy.RetryHostPredicate(
        name=PREVIOUS_HOSTS, typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate())
    )


def default_policy(consistent_hash: bool = False) -> rc.RetryPolicy:
    """Istio's built-in policy. With consistent hashing, retries stay on the hashed host
    (no previous-hosts predicate): moving to another host would defeat the affinity."""
    policy = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=DEFAULT_ATTEMPTS),
        host_selection_retry_max_attempts=HOST_SELECTION_ATTEMPTS,
        retriable_status_codes=[int(HTTPStatus.SERVICE_UNAVAILABLE)],
    )
    if not consistent_hash:
        policy.retry_host_predicate.append(_previous_hosts())
    return policy


def parse_retry_on(text: str) -> tuple[str, list[int]]:
    """``"5xx,503,gateway-error"`` → (``"5xx,gateway-error"``, ``[503]``).

    Istio lets users mix Envoy retry conditions and status codes in one list; numbers that
    are HTTP statuses become ``retriable_status_codes``.
    """
    conditions: list[str] = []
    codes: list[int] = []
    for part in text.split(","):
        token = part.strip()
        if not token:
            continue
        if token.isdigit() and int(token) in _KNOWN_STATUSES:
            codes.append(int(token))
        else:
            conditions.append(token)
    if codes and STATUS_CODES_TOKEN not in conditions:
        # Envoy only honours retriable_status_codes when this condition is listed.
        conditions.append(STATUS_CODES_TOKEN)
    return ",".join(conditions), codes


def retry_policy(
    spec: Mapping[str, Any] | None, consistent_hash: bool = False
) -> rc.RetryPolicy | None:
    """The route's policy for an Istio ``HTTPRetry`` (``None`` spec: the default policy).

    ``attempts`` missing or 0 turns retries off: Istio reads an explicit policy without
    attempts as "no retries".
    """
    policy = default_policy(consistent_hash)
    if spec is None:
        return policy
    attempts = int(spec.get("attempts") or 0)
    if attempts <= 0:
        return None
    policy.num_retries.value = attempts
    retry_on = str(spec.get("retryOn") or "")
    if retry_on:
        conditions, codes = parse_retry_on(retry_on)
        policy.retry_on = conditions
        del policy.retriable_status_codes[:]
        policy.retriable_status_codes.extend(codes)
    if spec.get("perTryTimeout"):
        policy.per_try_timeout.CopyFrom(istio_duration(spec["perTryTimeout"]))
    ignore_previous = spec.get("retryIgnorePreviousHosts")
    if ignore_previous is not None:
        del policy.retry_host_predicate[:]
        if ignore_previous:
            policy.retry_host_predicate.append(_previous_hosts())
    if spec.get("retryRemoteLocalities"):
        policy.retry_priority.CopyFrom(rc.RetryPolicy.RetryPriority(
            name=PREVIOUS_PRIORITIES,
            # Recompute the priority load after every 2 attempts, so retries move on to
            # the next locality priority instead of hammering the failed one.
            typed_config=pack(
                previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
            ),
        ))
    if spec.get("backoff"):
        policy.retry_back_off.base_interval.CopyFrom(istio_duration(spec["backoff"]))
    return policy
