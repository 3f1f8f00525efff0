"""The README's quickstart, run as a new user would: its marked shell blocks, in order.

``<!-- quickstart: background -->`` marks the first terminal (``make up``, left
running), ``<!-- quickstart -->`` the commands of the second, and
``<!-- quickstart: after-stop -->`` what comes after Ctrl-C in the first. The
commands run from the repository root exactly as written, with three changes
so that they never touch the checkout's own state or a real user's ports: the
``RECONCILER_*`` variables point the specs, Traefik and state directories to
temporary ones (the specs one is a copy of ``specs/``) and set this test's
instance; ports 8080/8081 become free ones (and the dashboard's too); and a bare ``specs/`` in a command
becomes that temporary specs directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest
import requests

from helpers import free_port, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.traefik]

from up_stack import REPO, pids_named  # noqa: E402

SETUP_TIMEOUT = 600  # make up runs scripts/setup first: seconds when all is there, minutes on a fresh machine


def quickstart_blocks() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = re.search(r"^## Quickstart.*?(?=^## )", readme, re.S | re.M).group(0)
    return re.findall(r"<!-- quickstart(?:: ([\w-]+))? -->\n```sh\n(.*?)```", quick, re.S)


def localize(block: str, web_port: int, api_port: int, specs: str) -> str:
    block = re.sub(r"(?<=:)8080\b", str(web_port), block)
    block = re.sub(r"(?<=:)8081\b", str(api_port), block)
    return re.sub(r"(?<![\w./-])specs/", specs + "/", block)


def traefiks_on(web_port: int) -> list[int]:
    """Traefik processes whose web entrypoint is on ``web_port``."""
    flag = f"--entrypoints.web.address=127.0.0.1:{web_port}".encode()
    found = []
    for pid in pids_named("traefik"):
        try:
            if flag in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0"):
                found.append(pid)
        except OSError:
            pass
    return found


def test_quickstart(tmp_path, instance, docker_client):
    blocks = quickstart_blocks()
    kinds = [kind for kind, _ in blocks]
    assert kinds[0] == "background" and kinds.count("background") == 1 and "" in kinds, kinds
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    web_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "RECONCILER_SPECS": str(specs),
        "RECONCILER_TRAEFIK_DIR": str(tmp_path / "dynamic"),
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_INSTANCE": instance,
        "RECONCILER_WEB_PORT": str(web_port),
        "RECONCILER_API_PORT": str(api_port),
        "RECONCILER_DASHBOARD_PORT": "0",
    }

    def run(block: str) -> str:
        script = localize(block, web_port, api_port, str(specs))
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        assert done.returncode == 0, f"$ {script}\n{done.stdout}\n{done.stderr}\n--- make up ---\n{log.read_text()}"
        return done.stdout

    log = tmp_path / "make-up.out"
    with open(log, "wb") as out:
        first = subprocess.Popen(["bash", "-c", localize(blocks[0][1], web_port, api_port, str(specs))],
                                 cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    outputs = []
    try:
        # What the README tells the user to wait for.
        wait_until(lambda: first.poll() is None and "ready  hello" in log.read_text(errors="replace")
                   or first.poll() is not None, timeout=SETUP_TIMEOUT, interval=0.2, message="make up")
        assert first.poll() is None, log.read_text()
        assert f"http://hello.localhost:{web_port}" in log.read_text()
        for kind, block in blocks[1:]:
            if kind == "":
                outputs.append(run(block))
    finally:
        # Ctrl-C in the first terminal: SIGINT to its foreground process group.
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGINT)
        try:
            first.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        left = traefiks_on(web_port)
        for pid in left:  # never leave one behind, even when failing
            os.killpg(pid, signal.SIGKILL)
        assert not left, f"make up left Traefik {left} running\n{log.read_text()}"

    text = "\n".join(outputs)
    assert "<h1>Hello from a sandbox</h1>" in text
    assert '"result":8' in text.replace(" ", "")
    assert "Stopped Traefik and the loop" in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{api_port}/ping", timeout=1)
    owned = {"label": f"reconciler.instance={instance}"}
    # Ctrl-C left the sandbox running; the calculator was removed with its spec.
    names = sorted(c.labels["reconciler.sandbox"] for c in docker_client.containers.list(filters=owned))
    assert names == ["hello"], names

    for kind, block in blocks:
        if kind == "after-stop":
            run(block)
    assert docker_client.containers.list(all=True, filters=owned) == []
