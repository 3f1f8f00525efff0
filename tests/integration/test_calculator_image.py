"""The calculator example running in a real reconciler/sandbox:latest container.

The app is copied in with put_archive and started with the command, workdir
and env of examples/calculator/calculator.yaml, on an internal network (no
way out of the machine) whose container IP the host reaches directly.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from ruamel.yaml import YAML

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calculator"
APP_DIR = EXAMPLE / "calculator"
SPEC = YAML(typ="safe").load((EXAMPLE / "calculator.yaml").read_text())["spec"]
IMAGE = SPEC["image"]
PORT = SPEC["port"]
STARTUP_TIMEOUT = 60.0


def _optional_fixture(request: pytest.FixtureRequest, name: str) -> Any:
    # tests/conftest.py provides these where it exists; the test also runs alone.
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        return None


def _app_tar() -> bytes:
    """The app dir as a tar whose members sit under app/, as put_archive to / wants."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name or info.name.endswith((".pyc", ".db")):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(APP_DIR, arcname=SPEC["workdir"].lstrip("/"), filter=keep)
    return buf.getvalue()


def _wait_healthy(container: Any, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            logs = container.logs().decode(errors="replace")
            pytest.fail(f"calculator container exited ({container.attrs['State']}):\n{logs}")
        try:
            resp = requests.get(f"{url}{SPEC['health']['path']}", timeout=2)
            if resp.status_code == 200:
                return
            last = resp.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.3)
    logs = container.logs().decode(errors="replace")
    pytest.fail(f"calculator not healthy after {STARTUP_TIMEOUT}s (last: {last}):\n{logs}")


@pytest.fixture
def calc(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """(base URL, container) of a fresh calculator app in the sandbox image."""
    client = _optional_fixture(request, "docker_client")
    if client is None:
        try:
            client = docker.from_env()
            client.ping()
        except docker.errors.DockerException as exc:
            problem = str(exc)
        else:
            problem = ""
        if problem:
            pytest.fail(f"the calculator image test needs a Docker engine: {problem}")
    instance = _optional_fixture(request, "instance") or f"calcdev-{uuid.uuid4().hex[:8]}"
    try:
        client.images.get(IMAGE)
        have_image = True
    except docker.errors.ImageNotFound:
        have_image = False
    if not have_image:
        pytest.fail(f"image {IMAGE} is missing: run scripts/build-images first")

    network = client.networks.create(f"{instance}-calc-net", driver="bridge", internal=True)
    container = None
    try:
        container = client.containers.create(
            IMAGE,
            command=SPEC["command"],
            working_dir=SPEC["workdir"],
            environment=SPEC["env"],
            name=f"{instance}-calc",
            network=network.name,
            detach=True,
        )
        assert container.put_archive("/", _app_tar()), "put_archive of the app failed"
        container.start()
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        assert ip, f"container has no IP on {network.name}"
        url = f"http://{ip}:{PORT}"
        _wait_healthy(container, url)
        yield url, container
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        try:
            network.remove()
        except docker.errors.NotFound:
            pass


def _calculate(url: str, a: float, op: str, b: float) -> requests.Response:
    return requests.post(f"{url}/api/calculate", json={"a": a, "op": op, "b": b}, timeout=5)


def test_calculate_history_and_clear(calc: tuple[str, Any]) -> None:
    url, container = calc
    assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok"}

    first = _calculate(url, 5, "+", 3)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["a"], body["op"], body["b"], body["result"]) == (5, "+", 3, 8)
    assert isinstance(body["result"], int) and body["id"] and body["created_at"]

    second = _calculate(url, 10, "×", 6)
    assert second.status_code == 200, second.text
    assert second.json()["result"] == 60

    items = requests.get(f"{url}/api/history", timeout=5).json()["items"]
    assert [(i["a"], i["op"], i["b"], i["result"]) for i in items] == [(10, "*", 6, 60), (5, "+", 3, 8)]
    assert items[0]["id"] > items[1]["id"]

    zero = _calculate(url, 1, "/", 0)
    assert zero.status_code == 400, zero.text
    assert "zero" in zero.json()["detail"]
    assert len(requests.get(f"{url}/api/history", timeout=5).json()["items"]) == 2

    # The history lives where the spec's CALC_DB points, i.e. on the data volume.
    stream, stat = container.get_archive(SPEC["env"]["CALC_DB"])
    assert stat["size"] > 0

    cleared = requests.delete(f"{url}/api/history", timeout=5)
    assert cleared.status_code == 200 and cleared.json() == {"deleted": 2}
    assert requests.get(f"{url}/api/history", timeout=5).json() == {"items": []}


def test_bad_input_and_ui(calc: tuple[str, Any]) -> None:
    url, _ = calc
    for payload in ({"a": 1, "op": "%", "b": 2}, {"a": "one", "op": "+", "b": 2}, {"a": 1}, [1, 2]):
        resp = requests.post(f"{url}/api/calculate", json=payload, timeout=5)
        assert resp.status_code == 422, (payload, resp.text)
        assert resp.json()["detail"]
    assert _calculate(url, 0.1, "+", 0.2).json()["result"] == 0.3

    page = requests.get(f"{url}/", timeout=5)
    assert page.status_code == 200 and 'id="display"' in page.text and 'data-key="="' in page.text
    for asset in ("static/app.js", "static/style.css"):
        assert requests.get(f"{url}/{asset}", timeout=5).status_code == 200, asset
