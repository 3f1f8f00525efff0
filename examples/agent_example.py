#!/usr/bin/env python3
"""An agent's round trip with a sandbox, through the Python API.

It writes a small web app and its tests, gets a sandbox, uploads the code, runs
the tests there, starts the app in the background, calls it through its URL,
downloads a result the sandbox computed, and deletes the sandbox.

    python examples/agent_example.py [NAME]

Settings come from the RECONCILER_* environment variables (specs dir, instance,
Traefik dir, web port, state dir), as for the CLI. It needs Docker, the image
reconciler/sandbox:latest (scripts/build-images) and a Traefik serving the
routes (``reconcile up``). Exit code 0 when every step worked.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from reconciler.api import Sandbox

APP = '''\
from fastapi import FastAPI

app = FastAPI()


def add(a: int, b: int) -> int:
    return a + b


@app.get("/add")
def add_route(a: int, b: int):
    return {"sum": add(a, b)}
'''

TESTS = '''\
import unittest

from main import add


class AddTest(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(2, 3), 5)

    def test_negative(self):
        self.assertEqual(add(-2, 2), 0)
'''


def main(name: str) -> int:
    with tempfile.TemporaryDirectory(prefix="agent-") as tmp:
        return round_trip(name, Path(tmp))


def round_trip(name: str, work: Path) -> int:
    code = work / "app"
    code.mkdir()
    (code / "main.py").write_text(APP)
    (code / "test_main.py").write_text(TESTS)

    # A sandbox whose main process just waits: the agent starts the app itself.
    with Sandbox.create(name, image="reconciler/sandbox:latest", port=8000, ttl="30m",
                        command=["sleep", "infinity"], wait=False) as sb:
        print(f"sandbox {sb.name} is {sb.state}")

        done = sb.upload(code, "/srv/app")  # like cp -r: the directory becomes /srv/app
        print(f"uploaded {done.files} files to {done.target}")

        tests = sb.exec(["python3", "-m", "unittest", "-v"], workdir="/srv/app", timeout=60)
        print(tests.stderr.decode().strip())
        if tests.exit_code != 0:
            print(f"tests failed with exit code {tests.exit_code}", file=sys.stderr)
            return 1

        sb.exec_detached(["python3", "-m", "uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
                         workdir="/srv/app")
        url = sb.wait_ready(timeout=60)
        answer = sb.request("/add?a=20&b=22")
        print(f"GET {url}/add?a=20&b=22 -> {answer.status} {answer.text}")
        if answer.status != 200 or json.loads(answer.body) != {"sum": 42}:
            return 1

        sb.exec("python3 -c 'import json, main; print(json.dumps({\"sum\": main.add(40, 2)}))' > /srv/result.json",
                workdir="/srv/app")
        result = sb.download("/srv/result.json", work / "result.json")
        print(f"downloaded {result.target}: {(work / 'result.json').read_text().strip()}")
        if json.loads((work / "result.json").read_text()) != {"sum": 42}:
            return 1
    print(f"sandbox {name} deleted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "agent-demo"))
