"""Scale (issue 6, acceptance 3): 300 sandboxes applied and every one routed by the
real Traefik, then ``destroy --all --volumes`` leaves nothing owned behind.

No timing assertions: how long this takes is a figure in BENCHMARKS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import requests

from helpers import run_cli, wait_until
from reconciler import labels as L

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/: the workload every figure uses
from bench.workload import spec_text  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.traefik]

N = 300


def enabled_file_routers(traefik) -> set[str]:  # noqa: ANN001 - helpers.TraefikHandle
    """Every router the file provider has enabled, through all pages of the API."""
    names: set[str] = set()
    page = 1
    while True:
        resp = requests.get(f"{traefik.api_url}/api/http/routers",
                            params={"per_page": 500, "page": page}, timeout=5)
        resp.raise_for_status()
        for router in resp.json():
            if router.get("provider") == "file" and router.get("status") == "enabled":
                names.add(router["name"].removesuffix("@file"))
        following = int(resp.headers.get("X-Next-Page") or 1)
        if following <= page:
            return names
        page = following


def owned(docker_client, instance: str) -> list[str]:  # noqa: ANN001
    flt = {"label": f"{L.INSTANCE}={instance}"}
    api = docker_client.api
    return ([f"container {c['Names'][0]}" for c in api.containers(all=True, filters=flt)]
            + [f"network {n['Name']}" for n in api.networks(filters=flt)]
            + [f"volume {v['Name']}" for v in (api.volumes(filters=flt).get("Volumes") or [])])


def test_300_sandboxes_are_all_routed_then_all_destroyed(tmp_path, instance, traefik, docker_client):
    specs = tmp_path / "specs"
    specs.mkdir()
    names = [f"s{i:03d}" for i in range(N)]
    for name in names:
        (specs / f"{name}.yaml").write_text(spec_text(name))
    env = {
        "RECONCILER_SPECS": str(specs),
        "RECONCILER_TRAEFIK_DIR": str(traefik.dynamic_dir),
        "RECONCILER_INSTANCE": instance,
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_WEB_PORT": str(traefik.web_port),
    }

    applied = run_cli(["apply", "--output", "json"], env=env, timeout=1800)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    report = json.loads(applied.stdout)
    assert len(report["routes"]) == N and report["not_ready"] == []

    running = docker_client.api.containers(filters={"label": L.selector(instance), "status": "running"})
    assert sorted(c["Labels"][L.SANDBOX] for c in running) == names

    expected = {f"rc-{instance}-{name}" for name in names}
    wait_until(lambda: expected <= enabled_file_routers(traefik), timeout=30,
               message=f"Traefik's API to list {N} enabled routers")
    hosts = {name: f"{L.default_hostname(instance, name)}.localhost" for name in names}
    not_ok = {name: status for name in names if (status := traefik.get(hosts[name]).status_code) != 200}
    assert not_ok == {}, f"{len(not_ok)} of {N} sandboxes not answering 200 through Traefik: {not_ok}"

    destroyed = run_cli(["destroy", "--all", "--volumes", "--output", "json"], env=env, timeout=1800)
    assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    assert sorted(json.loads(destroyed.stdout)["destroyed"]) == names
    assert owned(docker_client, instance) == []
    # And Traefik routes none of them any more.
    wait_until(lambda: not (expected & enabled_file_routers(traefik)), timeout=30,
               message="Traefik to drop every router")
    assert traefik.get(hosts[names[0]]).status_code == 404
    assert traefik.get(hosts[names[-1]]).status_code == 404
