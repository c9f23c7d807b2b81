"""The fuzz suite's budgets: hypothesis profiles, chosen with ``PILOTFISH_FUZZ``.

``ci`` (the default) is what the regular suite runs: a bounded number of examples per
property, derandomized so that every run tries the same inputs (a failure in CI is a
failure on a laptop), the whole folder in one to two minutes on two cores.
``PILOTFISH_FUZZ=bench`` is what ``./dev bench`` runs (tests/benchmarks/fuzz): 20 times
the examples, random ones, so each run explores inputs no earlier run tried; a failure
prints the ``@reproduce_failure`` line that replays it.

The deadline is per example: a slow example is a finding (something grows worse than
linearly with its input), not noise to retry.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("PILOTFISH_FUZZ", "ci")

settings.register_profile(
    "ci",
    max_examples=400,
    derandomize=True,
    database=None,  # nothing written into the checkout; derandomized runs replay anyway
    deadline=timedelta(seconds=5),
    print_blob=True,
    # Examples build real files, stores and streams: slow to generate by hypothesis'
    # standards, and deliberately large at times.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
settings.register_profile(
    "bench",
    parent=settings.get_profile("ci"),
    max_examples=400 * 20,
    derandomize=False,
)
settings.load_profile(PROFILE)
