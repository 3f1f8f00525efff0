"""The benchmark suite works (issue 6, acceptance 1): ``python -m bench --quick`` runs
every case against the real engine, Traefik and both Composes, reports every row,
and cleans up. The figures are not judged here (no timing assertions): they live in
BENCHMARKS.md. The report goes to a temp file: the committed BENCHMARKS.md stays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench/ is a top-level package of the repo, not installed

from bench.report import ROW_KEYS  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.traefik]
COMPARED = ("cold-apply-small", "cold-apply-large", "noop-apply", "destroy")  # the rows with a Compose ratio


def test_quick_bench_reports_every_row_and_leaves_nothing(tmp_path, docker_client):
    report, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    committed = (REPO / "BENCHMARKS.md").read_bytes() if (REPO / "BENCHMARKS.md").exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(report), "--json", str(raw)],
        cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    data = json.loads(raw.read_text())
    rows = {row["key"]: row for row in data["rows"]}
    assert list(rows) == list(ROW_KEYS)
    for key, row in rows.items():
        assert row["figure"] and not row["figure"].startswith("NOT MEASURED"), (key, row["figure"])
        assert row["target"], key
    for key in COMPARED:
        assert rows[key]["vs_v2"].endswith(")") or rows[key]["vs_v2"].endswith("×"), (key, rows[key])
        assert rows[key]["vs_v1"], key
    assert {"cores", "memory", "kernel", "Docker engine", "Traefik", "Python"} <= set(data["machine"])

    text = report.read_text()
    for row in rows.values():
        assert f"| {row['case']} |" in text
    assert "## Machine" in text and "Compose v2" in text and "Compose v1" in text

    # Everything the run made is gone: its instances and compose projects. The one exception the
    # bench reports: a Compose network dockerd 20.10 keeps with a stale endpoint until it restarts.
    api = docker_client.api
    for label, value in data["owned"]:
        flt = {"label": f"{label}={value}"}
        assert api.containers(all=True, filters=flt) == [], (label, value)
        left = {n["Name"] for n in api.networks(filters=flt)}
        assert left <= set(data["stuck_networks"]), (label, value, left)
        if label.startswith("reconciler."):
            assert left == set(), (label, value, left)  # the reconciler's own networks always go
    if committed is not None:
        assert (REPO / "BENCHMARKS.md").read_bytes() == committed
