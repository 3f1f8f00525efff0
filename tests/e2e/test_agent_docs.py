"""docs/agents.md runs as written, and so does examples/agent_example.py: every
fenced ``sh`` and ``python`` block of the guide, in order, in a fresh directory,
against the real engine and a real Traefik (the URLs are curled through it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ops_helpers import make_place

pytestmark = [pytest.mark.docker, pytest.mark.traefik]

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "agents.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```$", re.M | re.S)
OPS_COMMANDS = ("new", "exec", "upload", "download", "logs", "url", "extend", "delete")


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(GUIDE.read_text())


def test_the_guide_shows_every_agent_command() -> None:
    shell = "\n".join(code for lang, code in blocks() if lang == "sh")
    for command in OPS_COMMANDS:
        assert re.search(rf"(^|\$\(|\| )reconcile {command} ", shell, re.M), f"docs/agents.md never runs `reconcile {command}`"
    for flag in ("--wait", "--detach", "--timeout", "--port", "--tail", "-o json", "-f"):
        assert flag in shell, flag


def run_block(lang: str, code: str, place) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    return subprocess.run(argv, cwd=place.root, env={**os.environ, **place.env}, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)


def test_every_block_of_the_guide_runs(tmp_path, instance, traefik, docker_client) -> None:
    place = make_place(tmp_path, instance, traefik)
    place.specs.rmdir()  # the guide makes it itself
    transcript = []
    for number, (lang, code) in enumerate(blocks(), 1):
        result = run_block(lang, code, place)
        transcript.append(f"--- block {number} ({lang}) exit {result.returncode}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, "\n".join(transcript)
    text = "\n".join(transcript)
    for expected in (
        '{"sum":5}',                       # curl through Traefik, right after new --wait
        "exit code: 3", '"exit_code": 3',  # exit codes and JSON
        "exit code: 124",                  # the timeout
        "hi from /tmp",                    # --workdir and --env
        "Ran 1 test", "OK",                # the uploaded tests
        "200",                             # the detached server on another port
        '{"service":"calc"}',              # the dev server behind --detach --wait
        '{"answer": 42}', "identical",     # download, and bytes that round-trip
        "0 hello from the sandbox",        # the Python API
    ):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    # Everything it made, it removed.
    assert list(place.specs.glob("*.yaml")) == []
    assert docker_client.api.containers(all=True, filters={"label": f"reconciler.instance={instance}"}) == []


def test_the_agent_example_runs(tmp_path, instance, traefik, docker_client) -> None:
    place = make_place(tmp_path, instance, traefik)
    result = subprocess.run([sys.executable, str(REPO / "examples" / "agent_example.py"), "agent"],
                            cwd=place.root, env={**os.environ, **place.env}, capture_output=True, text=True,
                            timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "uploaded 2 files to /srv/app" in out and "Ran 2 tests" in out
    assert re.search(r"GET http://qa-[0-9a-f]{12}\.localhost:\d+/add\?a=20&b=22 -> 200 \{\"sum\":42\}", out), out
    assert 'result.json: {"sum": 42}' in out and "sandbox agent deleted" in out
    assert list(place.specs.glob("*.yaml")) == []
    assert docker_client.api.containers(all=True, filters={"label": f"reconciler.instance={instance}"}) == []
