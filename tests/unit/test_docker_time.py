"""docker_engine.docker_time: Docker's timestamps (nanoseconds, "Z") as unix seconds,
shared by the plain and the swarm engine."""

from __future__ import annotations

import pytest

from reconciler.docker_engine import docker_time


def test_nanoseconds_and_z_are_read() -> None:
    assert docker_time("2026-12-01T08:22:45.437559732Z") == pytest.approx(1796113365.437559732)
    assert docker_time("2026-12-01T08:22:45Z") == 1796113365.0


@pytest.mark.parametrize("stamp", [None, "", "yesterday", 17])
def test_unreadable_is_zero(stamp) -> None:  # noqa: ANN001
    assert docker_time(stamp) == 0.0
