"""Issue 8 on the plain engine: a spec's ``placement`` is validated like any field
and ignored, with a warning on stderr from ``plan`` and ``apply``."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_helpers import Reconcile, httpd_spec, owned

pytestmark = pytest.mark.docker

PLACED = "  placement:\n    constraints: [node.labels.tier==gpu]\n"
WARNING = "warning: web.yaml: spec.placement is ignored by the docker engine (it applies with --engine swarm)"


def test_placement_is_ignored_with_a_warning_by_the_docker_engine(tmp_path: Path, instance: str, docker_client) -> None:  # noqa: ANN001
    rc = Reconcile(tmp_path, instance)
    rc.write("web.yaml", httpd_spec("web", extra=PLACED))
    rc.write("other.yaml", httpd_spec("other"))
    plan = rc("plan")
    assert plan.returncode == 0 and plan.stderr.splitlines() == [WARNING]
    applied = rc("apply")
    assert applied.returncode == 0 and applied.stderr.splitlines() == [WARNING]
    assert sorted(owned(docker_client, instance)) == ["other", "web"]
    assert rc("plan", "--detailed-exitcode").returncode == 0

    rc.write("web.yaml", httpd_spec("web", extra=PLACED.replace("tier==gpu", "tier=gpu")))
    invalid = rc("validate")
    assert invalid.returncode == 1
    assert "specs/web.yaml:14:19: spec.placement.constraints[0]: expected a constraint like node.labels.tier==gpu" in invalid.stdout
