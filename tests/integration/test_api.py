"""The Python API (reconciler.api.Sandbox) against the real engine: the same
operations as the CLI, without a subprocess."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from ops_helpers import BUSYBOX, SERVE, make_place, place, private_place, sha256_of, write_random  # noqa: F401 - place is a fixture
from reconciler.api import Sandbox
from reconciler.lifecycle import route_published
from reconciler.errors import NotFound, UserError

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def shared(request, docker_client, tmp_path_factory):
    """One running sandbox "box" for the tests that only work inside it."""
    with private_place(request, docker_client, tmp_path_factory.mktemp("api")) as where:
        yield Sandbox.create("box", BUSYBOX, command=["sleep", "600"], settings=where.settings)


def test_create_writes_the_same_spec_as_reconcile_new(place) -> None:
    (place.specs / "site").mkdir()
    (place.specs / "site" / "index.html").write_text("hi\n")
    options = ["--image", BUSYBOX, "--port", "8000", "--ttl", "2h", "--env", "A=1", "--upload", "site:/www"]
    assert place.run("new", "by-cli", *options, "--", "httpd", "-f", "-p", "8000", "-h", "/www").returncode == 0
    sb = Sandbox.create("by-api", BUSYBOX, port=8000, ttl="2h", env={"A": "1"}, uploads=[("site", "/www")],
                        command=["httpd", "-f", "-p", "8000", "-h", "/www"], settings=place.settings, wait=True)
    assert (place.specs / "by-api.yaml").read_text().replace("by-api", "by-cli") == (place.specs / "by-cli.yaml").read_text()
    assert sb.state == "running"
    assert sb.url == place.run("url", "by-api").stdout.strip()
    assert sb.exec(["cat", "/www/index.html"]).stdout == b"hi\n"
    assert route_published(place.settings, "by-api")


def test_create_refuses_an_existing_name(place) -> None:
    Sandbox.create("one", BUSYBOX, command=["sleep", "600"], settings=place.settings, wait=False)
    with pytest.raises(UserError, match="already has a spec file"):
        Sandbox.create("one", BUSYBOX, settings=place.settings)


def test_exec_output_arrives_before_the_command_ends(shared) -> None:
    first = threading.Event()
    seen: list[tuple[str, bytes]] = []

    def on_output(stream: str, data: bytes) -> None:
        seen.append((stream, data))
        first.set()

    outcome: dict[str, object] = {}
    script = "echo one; echo two >&2; while [ ! -e /tmp/api-go ]; do sleep 0.05; done; echo three"
    worker = threading.Thread(target=lambda: outcome.update(r=shared.exec(["sh", "-c", script], on_output=on_output)))
    worker.start()
    try:
        assert first.wait(30), "no output while the command ran"
        assert worker.is_alive()  # the command is still waiting for /tmp/api-go
        shared.exec(["touch", "/tmp/api-go"])
    finally:
        worker.join(30)
    result = outcome["r"]
    assert result.exit_code == 0 and result.stdout == b"one\nthree\n" and result.stderr == b"two\n"
    assert ("stdout", b"three\n") in seen


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exec_exit_codes(shared, code: int) -> None:
    result = shared.exec(f"echo x; exit {code}")  # a string runs under /bin/sh -c
    assert (result.exit_code, result.stdout, result.timed_out) == (code, b"x\n", False)


def test_exec_timeout_kills_it(shared) -> None:
    result = shared.exec(["sh", "-c", "echo go; sleep 401 & sleep 402"], timeout="1s")
    assert (result.exit_code, result.timed_out, result.stdout) == (124, True, b"go\n")
    ps = shared.exec(["ps"]).stdout.decode()
    assert "sleep 401" not in ps and "sleep 402" not in ps


def test_exec_workdir_env_user(shared) -> None:
    result = shared.exec('echo "$(pwd):$X:$(id -u)"', workdir="/tmp", env={"X": "y"}, user="65534")
    assert result.stdout == b"/tmp:y:65534\n"


def test_binary_round_trip_and_100_mb_streamed(shared, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 99)
    shared.upload(blob, "/data/")
    shared.download("/data/blob.bin", tmp_path / "blob-back.bin")
    assert (tmp_path / "blob-back.bin").read_bytes() == blob.read_bytes()

    big = tmp_path / "big.bin"
    digest = write_random(big, 100 * 1024 * 1024)
    sent: list[tuple[int, int | None]] = []
    tracemalloc.start()
    try:
        up = shared.upload(big, "/data/big.bin", progress=lambda done, total: sent.append((done, total)))
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got: list[tuple[int, int | None]] = []
        shared.download("/data/big.bin", tmp_path / "big-back.bin", progress=lambda done, total: got.append((done, total)))
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (up.files, up.bytes, up.target) == (1, 100 * 1024 * 1024, "/data/big.bin")
    assert sent[-1] == (100 * 1024 * 1024, 100 * 1024 * 1024) and len(sent) >= 100
    assert got[-1] == (100 * 1024 * 1024, 100 * 1024 * 1024)
    # Streamed both ways: a whole 100 MB file in memory would show here.
    assert upload_peak < 16 * 1024 * 1024, upload_peak
    assert download_peak < 16 * 1024 * 1024, download_peak
    assert shared.exec(["sha256sum", "/data/big.bin"]).stdout.split()[0].decode() == digest
    assert sha256_of(tmp_path / "big-back.bin") == digest


def test_upload_belongs_to_the_sandbox_user(place, tmp_path: Path) -> None:
    (place.specs / "owned.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: owned}\nspec:\n"
        f"  image: {BUSYBOX}\n  command: [sleep, '600']\n  user: '1234:2345'\n"
    )
    assert place.run("apply", "--no-wait").returncode == 0
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("a")
    sb = Sandbox("owned", place.settings)
    sb.upload(tmp_path / "code", "/tmp/work/code")
    owners = sb.exec(["sh", "-c", "ls -lnd /tmp/work /tmp/work/code /tmp/work/code/a.py | awk '{print $3\":\"$4}'"])
    assert owners.stdout == b"1234:2345\n1234:2345\n1234:2345\n"
    assert sb.exec(["sh", "-c", "echo more >> /tmp/work/code/a.py"]).exit_code == 0  # it may change its files


def test_logs_and_follow(place) -> None:
    # A short life: a broken follow would end with the sandbox instead of hanging the suite.
    sb = Sandbox.create("talk", BUSYBOX, command=["sh", "-c", "echo hello-api; exec sleep 60"],
                        settings=place.settings)
    deadline = time.monotonic() + 15
    while "hello-api" not in sb.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.logs(tail=1) == "hello-api\n"
    follow = sb.follow_logs(tail=0)
    sb.exec(["sh", "-c", "echo followed > /proc/1/fd/1"])
    assert next(follow) == "followed\n"
    follow.close()


def test_detached_server_wait_ready_and_direct_url(place) -> None:
    import requests

    sb = Sandbox.create("dev", BUSYBOX, port=8000, command=["sleep", "600"], settings=place.settings, wait=False)
    assert not route_published(place.settings, "dev")
    sb.exec_detached(["sh", "-c", SERVE])
    assert sb.wait_ready(timeout=30) == sb.url
    assert route_published(place.settings, "dev")
    assert requests.get(sb.direct_url(8000) + "/", timeout=5).text == "hello\n"


def test_extend_pushes_the_expiry(place) -> None:
    sb = Sandbox.create("short", BUSYBOX, ttl="10m", command=["sleep", "600"], settings=place.settings)
    first = sb.extend("1h")
    assert first > time.time() + 3600  # 10m left, plus an hour
    assert sb.extend(60) == pytest.approx(first + 60, abs=1)
    forever = Sandbox.create("forever", BUSYBOX, command=["sleep", "600"], settings=place.settings)
    with pytest.raises(UserError, match="no ttl"):
        forever.extend("1h")


def test_list_get_delete_and_the_with_block(place, docker_client) -> None:
    with Sandbox.create("ctx", BUSYBOX, command=["sleep", "600"], settings=place.settings) as sb:
        Sandbox.create("stays", BUSYBOX, command=["sleep", "600"], settings=place.settings)
        assert [s.name for s in Sandbox.list(place.settings)] == ["ctx", "stays"]
        assert Sandbox.get("ctx", place.settings).observed().container_id == sb.observed().container_id
    assert not (place.specs / "ctx.yaml").exists()
    assert [s.name for s in Sandbox.list(place.settings)] == ["stays"]
    with pytest.raises(NotFound):
        Sandbox.get("ctx", place.settings)
    with pytest.raises(NotFound):
        Sandbox("ctx", place.settings).exec(["true"])
    deleted = Sandbox("stays", place.settings).delete()
    assert deleted.container and deleted.spec_files
    assert docker_client.api.containers(all=True, filters={"label": f"reconciler.instance={place.instance}"}) == []


def test_a_name_of_another_instance_is_not_found(place, tmp_path: Path) -> None:
    theirs = make_place(tmp_path / "theirs", place.instance + "o")
    try:
        Sandbox.create("twin", BUSYBOX, command=["sleep", "600"], settings=theirs.settings)
        ours = Sandbox("twin", place.settings)
        for call in (lambda: ours.exec(["true"]), lambda: ours.upload(__file__, "/tmp/"),
                     lambda: ours.download("/etc/hostname", tmp_path / "x"), lambda: ours.logs(), ours.delete):
            with pytest.raises(NotFound, match=f'no sandbox "twin"'):
                call()
        assert not (tmp_path / "x").exists()
        assert Sandbox("twin", theirs.settings).exec(["true"]).exit_code == 0
    finally:
        theirs.run("destroy", "--all", "--volumes")
