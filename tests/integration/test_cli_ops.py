"""The agent commands against the real engine: new, exec, upload, download, logs,
url --port, delete, and "not found" for every name that is not a sandbox of
this instance."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import requests

from helpers import wait_until
from ops_helpers import (  # noqa: F401 - place is a fixture
    BUSYBOX, SERVE, make_place, place, private_place, read_line, sha256_of, write_random,
)
import reconciler.labels as L
from reconciler.traefik import dynamic_filename

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def box(request, docker_client, tmp_path_factory):
    """One plain sandbox "box" shared by the tests that only run things in it."""
    with private_place(request, docker_client, tmp_path_factory.mktemp("box")) as shared:
        shared.new("box", port=None, command="sleep 600")
        yield shared


def container_of(docker_client, instance: str, name: str) -> dict:
    found = docker_client.api.containers(all=True, filters={"label": [f"{L.INSTANCE}={instance}", f"{L.SANDBOX}={name}"]})
    assert len(found) == 1, found
    return docker_client.api.inspect_container(found[0]["Id"])


# --- new ------------------------------------------------------------------------------


def test_new_wait_writes_a_spec_starts_it_and_prints_its_url(place, docker_client) -> None:
    url = place.new("web", "--ttl", "2h", "--env", "GREETING=hi")
    assert url == place.run("url", "web").stdout.strip()
    assert url.startswith("http://qa-") and url.endswith(".localhost")
    text = (place.specs / "web.yaml").read_text()
    assert "  ttl: 2h\n" in text and "GREETING: hi" in text
    info = container_of(docker_client, place.instance, "web")
    assert info["State"]["Running"] and "GREETING=hi" in info["Config"]["Env"]
    # Routed: the route is in this instance's Traefik file.
    routes = (place.traefik_dir / dynamic_filename(place.instance)).read_text()
    assert f"rc-{place.instance}-web" in routes
    ip = info["NetworkSettings"]["Networks"][f"rc-{place.instance}-web"]["IPAddress"]
    assert requests.get(f"http://{ip}:8000/", timeout=5).text == "hello\n"


def test_new_refuses_a_name_that_has_a_spec(place) -> None:
    place.new("web")
    before = (place.specs / "web.yaml").read_text()
    again = place.run("new", "web", "--image", BUSYBOX, "--apply", "--", "sleep", "1")
    assert again.returncode == 1
    assert "already has a spec file" in again.stderr
    assert (place.specs / "web.yaml").read_text() == before


def test_new_without_apply_only_writes_and_apply_starts_it(place) -> None:
    made = place.run("new", "later", "--image", BUSYBOX, "-o", "json", "--", "sleep", "300")
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    assert report["applied"] is False and report["url"] is None and report["watch_loop"] is False
    assert place.run("exec", "later", "--", "true").returncode == 3  # no container yet
    assert place.run("new", "now", "--image", BUSYBOX, "--apply", "--", "sleep", "300").returncode == 0
    assert place.run("exec", "now", "--", "true").returncode == 0


def test_new_uploads_come_from_the_specs_dir(place) -> None:
    (place.specs / "site").mkdir()
    (place.specs / "site" / "index.html").write_text("from the specs dir\n")
    place.new("web", "--upload", "site:/www", command="exec httpd -f -p 8000 -h /www")
    shown = place.run("exec", "web", "--", "cat", "/www/index.html")
    assert shown.stdout == "from the specs dir\n"


def test_new_wait_fails_at_once_when_the_command_exits(place) -> None:
    result = place.run("new", "dies", "--image", BUSYBOX, "--port", "8000", "--wait", "--timeout", "60s",
                       "--", "sh", "-c", "echo boom; exit 7")
    assert result.returncode == 1
    assert "exited with code 7" in result.stderr and "boom" in result.stderr


# --- exec -----------------------------------------------------------------------------------


def test_exec_streams_output_before_the_command_ends(box) -> None:
    place = box
    proc = place.popen("exec", "box", "--", "sh", "-c",
                       "echo first; echo early-err >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second")
    try:
        assert read_line(proc.stdout) == b"first\n"
        assert read_line(proc.stderr) == b"early-err\n"
        assert proc.poll() is None  # still running: the lines came live
        assert place.run("exec", "box", "--", "touch", "/tmp/go").returncode == 0
        assert read_line(proc.stdout) == b"second\n"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exec_exits_with_the_commands_exit_code(box, code: int) -> None:
    place = box
    text = place.cli("exec", "box", "--", "sh", "-c", f"echo out; echo err >&2; exit {code}")
    assert (text.returncode, text.stdout, text.stderr) == (code, "out\n", "err\n")
    as_json = place.run("exec", "box", "-o", "json", "--", "sh", "-c", f"echo out; echo err >&2; exit {code}")
    assert as_json.returncode == code
    report = json.loads(as_json.stdout)
    assert (report["exit_code"], report["stdout"], report["stderr"], report["timed_out"]) == (code, "out\n", "err\n", False)
    assert report["duration_s"] >= 0


def test_exec_timeout_kills_the_command_and_its_children(box) -> None:
    place = box
    result = place.run("exec", "box", "--timeout", "1s", "--", "sh", "-c", "echo started; sleep 301 & sleep 302; echo never")
    assert result.returncode == 124
    assert result.stdout == "started\n" and "timed out after 1s" in result.stderr
    ps = place.run("exec", "box", "--", "ps").stdout
    assert "sleep 301" not in ps and "sleep 302" not in ps and "sleep 600" in ps
    as_json = json.loads(place.run("exec", "box", "-o", "json", "--timeout", "0.5", "--", "sleep", "303").stdout)
    assert (as_json["exit_code"], as_json["timed_out"]) == (124, True)


def test_exec_workdir_env_and_user(box) -> None:
    place = box
    result = place.run("exec", "box", "--workdir", "/tmp", "--env", "A=one", "--env", "B=two words",
                       "--user", "65534", "--", "sh", "-c", 'echo "$(pwd) $A $B $(id -u)"')
    assert result.stdout == "/tmp one two words 65534\n"


def test_exec_missing_program_reports_126(box) -> None:
    place = box
    result = place.run("exec", "box", "--", "no-such-program")
    assert result.returncode == 126 and "no-such-program" in result.stdout + result.stderr


def test_exec_detach_returns_while_the_process_runs(box) -> None:
    place = box
    started = place.run("exec", "box", "--detach", "-o", "json", "--", "sh", "-c", "sleep 304; echo done > /tmp/flag")
    assert started.returncode == 0 and json.loads(started.stdout)["detached"] is True
    assert "sleep 304" in place.run("exec", "box", "--", "ps").stdout
    assert place.run("exec", "box", "--", "cat", "/tmp/flag").returncode == 1  # not finished: it was not waited for


def test_exec_detach_wait_serves_the_sandbox_port_and_routes_it(place) -> None:
    assert place.run("new", "dev", "--image", BUSYBOX, "--port", "8000", "--apply", "--", "sleep", "600").returncode == 0
    served = place.run("exec", "dev", "--detach", "--wait", "--", "sh", "-c", SERVE)
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == place.run("url", "dev").stdout.strip()
    routes = (place.traefik_dir / dynamic_filename(place.instance)).read_text()
    assert f"rc-{place.instance}-dev" in routes


def test_exec_in_a_stopped_sandbox_says_so(place, docker_client) -> None:
    place.new("box", port=None, command="sleep 600")
    docker_client.api.stop(container_of(docker_client, place.instance, "box")["Id"], timeout=1)
    result = place.run("exec", "box", "--", "true")
    assert result.returncode == 1 and "is exited" in result.stderr


# --- upload / download --------------------------------------------------------------------------


def test_binary_file_round_trips_byte_for_byte(box, tmp_path: Path) -> None:
    place = box
    blob = tmp_path / "all-bytes.bin"
    blob.write_bytes(bytes(range(256)) * 257 + b"\x00\r\n\x1a\xff")
    up = place.run("upload", "box", str(blob), "/data/in/")
    assert up.returncode == 0, up.stderr
    assert "/data/in/all-bytes.bin" in up.stdout
    digest = place.run("exec", "box", "--", "sha256sum", "/data/in/all-bytes.bin").stdout.split()[0]
    assert digest == sha256_of(blob)
    down = place.run("download", "box", "-o", "json", "/data/in/all-bytes.bin", str(tmp_path / "back.bin"))
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout) == {"source": "/data/in/all-bytes.bin", "target": str(tmp_path / "back.bin"),
                                       "files": 1, "bytes": blob.stat().st_size, "skipped": []}
    assert (tmp_path / "back.bin").read_bytes() == blob.read_bytes()


def test_directory_round_trips_with_modes_and_links(box, tmp_path: Path) -> None:
    place = box
    src = tmp_path / "proj"
    (src / "pkg" / "empty-dir").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o755)
    (src / "empty").write_bytes(b"")
    os.symlink("pkg/mod.py", src / "alias.py")
    assert place.run("upload", "box", str(src), "/tmp").returncode == 0  # /tmp exists: into it
    assert place.run("exec", "box", "--", "/tmp/proj/run.sh").stdout == "ran\n"
    out = tmp_path / "out"
    out.mkdir()
    assert place.run("download", "box", "/tmp/proj", str(out)).returncode == 0
    got = out / "proj"
    assert (got / "pkg" / "mod.py").read_text() == "X = 1\n" and (got / "empty").read_bytes() == b""
    assert os.readlink(got / "alias.py") == "pkg/mod.py" and (got / "pkg" / "empty-dir").is_dir()
    assert os.stat(got / "run.sh").st_mode & 0o777 == 0o755


def test_100_mb_upload_and_download(box, tmp_path: Path) -> None:
    place = box
    big = tmp_path / "big.bin"
    digest = write_random(big, 100 * 1024 * 1024)
    up = place.run("upload", "box", "--progress", str(big), "/data/big.bin")
    assert up.returncode == 0, up.stderr
    assert "upload: 104.9 MB of 104.9 MB (100%)" in up.stderr
    assert place.run("exec", "box", "--", "sha256sum", "/data/big.bin").stdout.split()[0] == digest
    big.unlink()  # the download must not find the original
    down = place.run("download", "box", "--progress", "/data/big.bin", str(tmp_path / "again.bin"))
    assert down.returncode == 0, down.stderr
    assert "download: 104.9 MB of 104.9 MB (100%)" in down.stderr
    assert sha256_of(tmp_path / "again.bin") == digest


def test_upload_follows_cp_rules(box, tmp_path: Path) -> None:
    place = box
    f = tmp_path / "f.txt"
    f.write_text("f")
    assert place.run("upload", "box", str(f), "/tmp/new/deeper/renamed.txt").returncode == 0  # parents made
    assert place.run("exec", "box", "--", "cat", "/tmp/new/deeper/renamed.txt").stdout == "f"
    assert place.run("exec", "box", "--", "ls", "-ld", "/tmp").stdout.startswith("drwxrwxrwt")  # untouched
    onto_dir = place.run("upload", "box", str(tmp_path), "/tmp/new/deeper/renamed.txt")
    assert onto_dir.returncode == 1 and "not a directory" in onto_dir.stderr
    below_file = place.run("upload", "box", str(f), "/tmp/new/deeper/renamed.txt/x")
    assert below_file.returncode == 1 and "is not a directory" in below_file.stderr
    json_report = json.loads(place.run("upload", "box", "-o", "json", str(f), "/tmp/").stdout)
    assert json_report == {"source": str(f), "target": "/tmp/f.txt", "files": 1, "bytes": 1, "skipped": []}


def test_download_of_a_missing_path_is_not_found(box, tmp_path: Path) -> None:
    place = box
    result = place.run("download", "box", "/no/such/path", str(tmp_path / "x"))
    assert result.returncode == 3 and "does not exist" in result.stderr
    assert not (tmp_path / "x").exists()


# --- logs / url / delete -------------------------------------------------------------------------


def test_logs_tail(place) -> None:
    # stderr first, and the rest only once it is logged: the two streams are
    # copied separately, so their relative order is not otherwise defined.
    place.new("talk", port=None, command="echo to-stderr >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                                         "for i in 1 2 3 4 5; do echo line$i; done; exec sleep 600")
    wait_until(lambda: "to-stderr" in place.run("logs", "talk").stdout, 15, message="stderr in the logs")
    place.run("exec", "talk", "--", "touch", "/tmp/go")
    wait_until(lambda: "line5" in place.run("logs", "talk").stdout, 15, message="line5 in the logs")
    assert place.run("logs", "talk").stdout == "to-stderr\nline1\nline2\nline3\nline4\nline5\n"
    assert place.run("logs", "talk", "--tail", "2").stdout == "line4\nline5\n"
    as_json = json.loads(place.run("logs", "talk", "-o", "json", "--tail", "1").stdout)
    assert as_json == {"name": "talk", "logs": "line5\n"}


def test_logs_follow_streams_new_output(place) -> None:
    place.new("talk", port=None, command="echo hello-log; exec sleep 600")
    proc = place.popen("logs", "talk", "-f")
    try:
        assert read_line(proc.stdout) == b"hello-log\n"
        # Written to the main process's stdout by another process: it shows in the logs.
        assert place.run("exec", "talk", "--", "sh", "-c", "echo later-line > /proc/1/fd/1").returncode == 0
        assert read_line(proc.stdout) == b"later-line\n"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130


def test_url_port_is_the_direct_address(place) -> None:
    place.new("web")
    direct = place.run("url", "web", "--port", "8000")
    assert direct.returncode == 0
    assert direct.stdout.startswith("http://10.") and direct.stdout.strip().endswith(":8000")
    assert requests.get(direct.stdout.strip() + "/", timeout=5).text == "hello\n"
    report = json.loads(place.run("url", "web", "--port", "9000", "-o", "json").stdout)
    assert report["direct"] is True and report["url"].endswith(":9000")


def test_delete_removes_spec_container_network_and_volumes(place, docker_client) -> None:
    (place.specs / "keep.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: keep}\nspec:\n"
        f"  image: {BUSYBOX}\n  command: [sleep, '600']\n  volumes: [{{name: data, target: /data}}]\n"
    )
    assert place.run("apply", "--no-wait").returncode == 0
    place.new("other", port=None, command="sleep 600")
    volume = f"rc-{place.instance}-keep-data"
    assert docker_client.api.inspect_volume(volume)
    deleted = place.run("delete", "keep", "-o", "json")
    assert deleted.returncode == 0, deleted.stderr
    report = json.loads(deleted.stdout)
    assert (report["name"], report["container"], report["volumes"]) == ("keep", True, [volume])
    assert [Path(f).resolve() for f in report["spec_files"]] == [(place.specs / "keep.yaml").resolve()]
    assert not (place.specs / "keep.yaml").exists()
    label = [f"{L.INSTANCE}={place.instance}", f"{L.SANDBOX}=keep"]
    assert docker_client.api.containers(all=True, filters={"label": label}) == []
    assert docker_client.api.networks(filters={"label": label}) == []
    assert (docker_client.api.volumes(filters={"label": label}).get("Volumes") or []) == []
    assert place.run("exec", "other", "--", "true").returncode == 0  # the neighbour is untouched
    assert place.run("delete", "keep").returncode == 3


def test_delete_of_a_sandbox_whose_spec_is_invalid(place) -> None:
    place.new("box", port=None, command="sleep 600")
    (place.specs / "box.yaml").write_text((place.specs / "box.yaml").read_text() + "  bogus: 1\n")
    assert place.run("delete", "box").returncode == 0
    assert not (place.specs / "box.yaml").exists()
    assert place.run("exec", "box", "--", "true").returncode == 3


# --- only this instance's sandboxes ------------------------------------------------------------------

COMMANDS_ON = {
    "exec": lambda n, tmp: ["exec", n, "--", "true"],
    "exec --detach": lambda n, tmp: ["exec", n, "--detach", "--", "true"],
    "upload": lambda n, tmp: ["upload", n, str(tmp / "f.txt"), "/tmp/"],
    "download": lambda n, tmp: ["download", n, "/etc/hostname", str(tmp / "got")],
    "logs": lambda n, tmp: ["logs", n],
    "url --port": lambda n, tmp: ["url", n, "--port", "80"],
    "delete": lambda n, tmp: ["delete", n],
}


def test_a_name_that_is_not_a_sandbox_of_this_instance_is_not_found(place, docker_client, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    other = place.instance + "o"
    theirs = make_place(tmp_path / "theirs", other)
    ghost = None
    try:
        # Another instance's sandbox "twin", and an unlabelled container named as ours would be.
        theirs.new("twin", port=None, command="sleep 600")
        ghost = docker_client.api.create_container(BUSYBOX, ["sleep", "600"], name=f"rc-{place.instance}-ghost")["Id"]
        docker_client.api.start(ghost)
        for what, args in COMMANDS_ON.items():
            for name in ("twin", "ghost", "nobody"):
                result = place.run(*args(name, tmp_path))
                assert result.returncode == 3, (what, name, result.stderr)
                assert f'no sandbox "{name}" in instance "{place.instance}"' in result.stderr
        assert not (tmp_path / "got").exists()
        assert docker_client.api.inspect_container(ghost)["State"]["Running"]
        assert theirs.run("exec", "twin", "--", "true").returncode == 0
    finally:
        if ghost:
            docker_client.api.remove_container(ghost, force=True)
        theirs.run("destroy", "--all", "--volumes")
