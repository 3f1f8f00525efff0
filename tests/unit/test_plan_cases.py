"""Data-driven planner cases: ``tests/cases/<case>/`` holds

- ``specs/*.yaml``: the specs directory (absent: the directory is missing);
- ``before/*.yaml`` (optional): older specs that observed containers were created from;
- ``observed.json``: what the engine reports, in a short form (below);
- ``expected_plan.txt``: the exact ``render_text`` output.

``observed.json``::

    {"about": "what the case shows",
     "instance": "test",                                   # default "test"
     "images": {"reconciler-test/busybox:latest": "sha256:bb1"},
     "containers": [
        {"name": "web", "config": "specs"},                 # made from specs/ as it is now
        {"name": "api", "config": "before", "state": "exited"},   # made from before/
        {"name": "old", "config": "specs", "image_id": "sha256:old"},  # made with another image
        {"name": "raw", "labels": {"reconciler.port": "80"}} # only the ownership labels + these
     ],
     "networks": ["web"],                                  # sandbox names: rc-<instance>-<name>
     "volumes": [{"sandbox": "old", "volume": "data"}]}

A container's ``state`` defaults to ``running``. To add a case, write its
files and run ``UPDATE_PLAN_CASES=1 pytest tests/unit/test_plan_cases.py``
once to write ``expected_plan.txt``; then read that file: it is the assertion.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler import labels as L
from reconciler.container_config import desired_sandbox
from reconciler.loader import LoadedSpec, load_specs
from reconciler.observed import Observed, ObservedNetwork, ObservedSandbox, ObservedVolume
from reconciler.plan import Plan, compute_plan, render_json, render_text

CASES = Path(__file__).resolve().parent.parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "observed.json").is_file())
CREATED_AT = 1_700_000_000


def _spec_by_name(directory: Path, name: str) -> LoadedSpec:
    desired = load_specs(directory)
    assert name in desired.specs, f"{directory} has no valid spec named {name}: {desired.errors}"
    return desired.specs[name]


def observed_from(case: Path, data: dict[str, Any]) -> Observed:
    """Turn the short form of ``observed.json`` into reconciler.observed types."""
    instance = data.get("instance", "test")
    images: dict[str, str] = data.get("images", {})
    sandboxes: dict[str, ObservedSandbox] = {}
    strays: list[ObservedSandbox] = []
    for i, raw in enumerate(data.get("containers", [])):
        name = raw["name"]
        labels = {**L.owner_labels(instance), L.KIND: "sandbox", L.SANDBOX: name}
        image = raw.get("image", "")
        image_id = raw.get("image_id", "")
        if "config" in raw:
            loaded = _spec_by_name(case / raw["config"], name)
            image = loaded.spec.spec.image
            image_id = image_id or images[image]
            labels = desired_sandbox(loaded, instance, image_id).labels(CREATED_AT)
        labels.update(raw.get("labels", {}))
        state = raw.get("state", "running")
        sandbox = ObservedSandbox(
            name=name,
            container_id=f"{i:02d}{name}".ljust(64, "0"),
            container_name=L.container_name(instance, name),
            state=state,
            labels=labels,
            image=image,
            image_id=image_id,
            ip=f"10.213.0.{2 + 16 * i}" if state == "running" else None,
        )
        if name in sandboxes:
            strays.append(sandbox)  # as the engine does: the older one is the sandbox
        else:
            sandboxes[name] = sandbox
    networks = {
        L.network_name(instance, name): ObservedNetwork(L.network_name(instance, name), f"net-{name}", name)
        for name in data.get("networks", [])
    }
    volumes = {}
    for raw in data.get("volumes", []):
        vol = L.volume_name(instance, raw["sandbox"], raw["volume"])
        volumes[vol] = ObservedVolume(vol, raw["sandbox"])
    return Observed(instance, sandboxes, tuple(strays), networks, volumes, images)


def plan_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    monkeypatch.chdir(case)  # errors name files as specs/<file>
    data = json.loads((case / "observed.json").read_text())
    return compute_plan(load_specs(case / "specs"), observed_from(case, data))


def test_there_are_cases() -> None:
    assert len(CASE_NAMES) >= 14


@pytest.mark.parametrize("name", CASE_NAMES)
def test_plan_case(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES / name
    text = render_text(plan_case(case, monkeypatch))
    expected = case / "expected_plan.txt"
    if os.environ.get("UPDATE_PLAN_CASES") == "1":
        expected.write_text(text)
    assert text == expected.read_text()


def test_planning_is_pure_and_repeatable(monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES / "mixed-sorted-with-footer"
    assert render_text(plan_case(case, monkeypatch)) == render_text(plan_case(case, monkeypatch))


def test_a_recreate_counts_as_one_add_and_one_destroy(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_case(CASES / "command-edited", monkeypatch)
    assert [(c.action, c.name) for c in plan.changes] == [("recreate", "web")]
    assert plan.counts() == (1, 0, 1)


def test_invalid_spec_is_never_a_reason_to_destroy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("invalid-spec-kept", "duplicate-names-kept", "missing-image-kept", "specs-dir-missing"):
        plan = plan_case(CASES / name, monkeypatch)
        assert [c.name for c in plan.changes if c.name == "web"] == [], name
        assert "web" in plan.kept, name
        assert plan.problems, name


def test_render_json_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_case(CASES / "mixed-sorted-with-footer", monkeypatch)
    out = render_json(plan)
    json.dumps(out)  # serialisable as it is
    assert {"changes", "orphan_networks", "orphan_volumes", "kept", "unchanged", "errors", "summary"} <= set(out)
    assert [(c["action"], c["name"]) for c in out["changes"]] == [(c.action, c.name) for c in plan.changes]
    for change in out["changes"]:
        assert set(change) == {"action", "name", "cause", "container_id", "config_hash"}
        if change["action"] == "create":
            assert change["container_id"] is None and len(change["config_hash"]) == 64
        if change["action"] == "destroy":
            assert change["config_hash"] is None and len(change["container_id"]) == 64
    add, change, destroy = plan.counts()
    assert out["summary"] == {"add": add, "change": change, "destroy": destroy}
    assert out["unchanged"] == list(plan.unchanged)
    assert out["kept"] == list(plan.kept)
    spec_errors = [e for e in out["errors"] if "path" in e]
    assert spec_errors and all(set(e) == {"path", "line", "col", "field", "message", "text"} for e in spec_errors)
    other = [e for e in out["errors"] if "path" not in e]
    assert all(set(e) == {"name", "message", "text"} for e in other)
