"""holdApplicationUntilProxyStarts: the pod's choice, and waiting for readiness."""

from __future__ import annotations

import pytest

from pilotfish.agent import startup
from pilotfish.core import meshconfig

HOLD = meshconfig.MeshSettings(hold_application_until_proxy_starts=True)
NO_HOLD = meshconfig.MeshSettings()
ANNOTATION = "proxy.istio.io/config"


@pytest.mark.parametrize(("mesh", "annotations", "hold"), [
    (NO_HOLD, {}, False),
    (HOLD, {}, True),
    (NO_HOLD, {ANNOTATION: "holdApplicationUntilProxyStarts: true"}, True),
    (HOLD, {ANNOTATION: "holdApplicationUntilProxyStarts: false\n"}, False),
    (HOLD, {ANNOTATION: "terminationDrainDuration: 10s"}, True),  # other fields only
    (HOLD, {ANNOTATION: ""}, True),
    (NO_HOLD, {ANNOTATION: '{"holdApplicationUntilProxyStarts": true}'}, True),  # JSON is YAML
])
def test_annotation_overrides_the_mesh_default(
        mesh: meshconfig.MeshSettings, annotations: dict[str, str], hold: bool) -> None:
    assert startup.hold_application(mesh, annotations) is hold


def test_mesh_default_comes_from_the_mesh_config_file() -> None:
    config = meshconfig.from_dict(
        {"mesh": {"defaultConfig": {"holdApplicationUntilProxyStarts": True}}})
    assert startup.hold_application(config.mesh, {}) is True


@pytest.mark.parametrize(("text", "message"), [
    ("holdApplicationUntilProxyStarts: [", "not YAML"),
    ("- a list", "expected a mapping of ProxyConfig fields, got list"),
    ("holdApplicationUntilProxyStarts: yes please", "expected true or false, got 'yes please'"),
])
def test_bad_annotations_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"annotation proxy.istio.io/config: .*{message}"):
        startup.hold_application(NO_HOLD, {ANNOTATION: text})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_polls_until_ready() -> None:
    clock = Clock()
    answers = iter([(False, "HTTP 503: waiting"), (False, "HTTP 503: waiting"),
                    (True, "HTTP 200")])
    asked: list[tuple[str, float]] = []

    def check(url: str, timeout: float) -> tuple[bool, str]:
        asked.append((url, timeout))
        return next(answers)

    ready = startup.wait_ready("http://x/healthz/ready", 60, 0.5, 0.25, check=check,
                               clock=clock, sleep=clock.sleep)
    assert ready == (True, "HTTP 200")
    assert asked == [("http://x/healthz/ready", 0.25)] * 3
    assert clock.now == 1.0


def test_wait_gives_up_with_the_last_answer() -> None:
    clock = Clock()
    result = startup.wait_ready("u", 2, 0.5, check=lambda u, t: (False, "HTTP 503: why"),
                                clock=clock, sleep=clock.sleep)
    assert result == (False, "HTTP 503: why")
    assert clock.now == 2.0
