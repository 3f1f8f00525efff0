"""Issue 4's security list, the parts that need no engine: a spec can ask for no
host access of any kind (each attempt is a clear ``file:line:col`` error), and
names and paths given to the CLI or the Python API are refused before any Docker
call. "Before any Docker call" is proven by pointing DOCKER_HOST at nothing: a
command that reached for the engine would fail with exit 1, not usage (2)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.api import Sandbox
from reconciler.errors import InvalidArgument, NotFound
from reconciler.loader import load_specs

HEAD = "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata:\n  name: {name}\n{meta}spec:\n  image: reconciler-test/busybox:latest\n"

# Each: extra lines under spec: (or metadata), the (line, col) of the error, what it says.
ESCAPES = {
    "privileged": ("  privileged: true\n", "", (7, 3), "spec.privileged", "unknown field"),
    "host network": ("  network_mode: host\n", "", (7, 3), "spec.network_mode", "unknown field"),
    "host network, other spelling": ("  network: host\n", "", (7, 3), "spec.network", "unknown field"),
    "host pid": ("  pid: host\n", "", (7, 3), "spec.pid", "unknown field"),
    "host ipc": ("  ipc: host\n", "", (7, 3), "spec.ipc", "unknown field"),
    "devices": ("  devices: [/dev/sda]\n", "", (7, 3), "spec.devices", "unknown field"),
    "host path mount": ("  mounts: [{type: bind, source: /, target: /host}]\n", "", (7, 3), "spec.mounts", "unknown field"),
    "binds": ("  binds: ['/:/host']\n", "", (7, 3), "spec.binds", "unknown field"),
    "docker socket as a volume source": (
        "  volumes:\n    - name: sock\n      target: /var/run/docker.sock\n      source: /var/run/docker.sock\n",
        "", (10, 7), "spec.volumes[0].source", "unknown field"),
    "docker socket as a volume name": (
        "  volumes:\n    - name: /var/run/docker.sock\n      target: /var/run/docker.sock\n",
        "", (8, 7), "spec.volumes[0].name", "expected a name of a-z"),
    "host path as a volume type": (
        "  volumes:\n    - {name: data, target: /data, type: bind}\n", "", (8, 35), "spec.volumes[0].type", "unknown field"),
    "extra capability SYS_ADMIN": ("  capabilities: [SYS_ADMIN]\n", "", (7, 3), "spec.capabilities", "not allowed"),
    "extra capability NET_ADMIN": ("  capabilities: [NET_ADMIN]\n", "", (7, 3), "spec.capabilities", "not allowed"),
    "extra capability NET_RAW": ("  capabilities: [CAP_NET_RAW]\n", "", (7, 3), "spec.capabilities", "not allowed"),
    "all capabilities": ("  capabilities: [ALL]\n", "", (7, 3), "spec.capabilities", "not allowed"),
    "cap_add": ("  cap_add: [SYS_ADMIN]\n", "", (7, 3), "spec.cap_add", "unknown field"),
    "security options": ("  security_opt: ['seccomp=unconfined']\n", "", (7, 3), "spec.security_opt", "unknown field"),
    "reserved label prefix": ("", "  labels:\n    reconciler.managed: 'false'\n", (5, 3), "metadata.labels",
                              "prefix 'reconciler.' is reserved"),
    "reserved label instance": ("", "  labels: {reconciler.instance: other}\n", (5, 3), "metadata.labels",
                                "prefix 'reconciler.' is reserved"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_a_spec_cannot_ask_for_host_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, capsys) -> None:
    body, meta, (line, col), field, message = ESCAPES[case]
    monkeypatch.chdir(tmp_path)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "evil.yaml").write_text(HEAD.format(name="evil", meta=meta) + body)
    (specs / "fine.yaml").write_text(HEAD.format(name="fine", meta=""))
    desired = load_specs(specs)
    assert sorted(desired.specs) == ["fine"]  # the others still load
    [error] = desired.errors
    assert (error.path, error.line, error.col, error.field) == ("specs/evil.yaml", line, col, field)
    assert message in error.message
    # The same line from `reconcile validate`.
    assert cli.main(["validate", "--specs", "specs"]) == 1
    assert re.search(rf"^specs/evil\.yaml:{line}:{col}: {re.escape(field)}: .*{re.escape(message)}",
                     capsys.readouterr().out, re.M)


# --- the CLI and the API refuse bad names and paths before touching Docker ---------------------


@pytest.fixture
def no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Docker to reach, private dirs; returns the specs dir (with a file and a link out)."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.chdir(tmp_path)
    for var, value in (("SPECS", "specs"), ("STATE_DIR", "state"), ("TRAEFIK_DIR", "dyn"), ("INSTANCE", "tsec")):
        monkeypatch.setenv(f"RECONCILER_{var}", value)
    specs = tmp_path / "specs"
    (specs / "site").mkdir(parents=True)
    (specs / "site" / "index.html").write_text("hi")
    (tmp_path / "secret.txt").write_text("do not upload")
    os.symlink(tmp_path / "secret.txt", specs / "link-out")
    os.symlink(tmp_path, specs / "dir-out")
    return specs


USAGE = {
    "exec: bad name": ["exec", "Bad_Name", "--", "true"],
    "exec: name of another kind of container": ["exec", "rc-default-calc/..", "--", "true"],
    "exec: no command": ["exec", "calc"],
    "exec: command without --": ["exec", "calc", "ls"],
    "exec: --wait without --detach": ["exec", "calc", "--wait", "--", "true"],
    "exec: bad --env": ["exec", "calc", "--env", "NOEQUALS", "--", "true"],
    "exec: bad --timeout": ["exec", "calc", "--timeout", "soon", "--", "true"],
    "upload: relative DEST": ["upload", "calc", "secret.txt", "tmp/x"],
    "upload: DEST with ..": ["upload", "calc", "secret.txt", "/tmp/../etc/passwd"],
    "upload: bad name": ["upload", "calc-", "secret.txt", "/tmp/x"],
    "download: relative SRC": ["download", "calc", "etc/passwd", "out"],
    "download: SRC with ..": ["download", "calc", "/app/../../etc/shadow", "out"],
    "download: SRC /": ["download", "calc", "/", "out"],
    "logs: bad name": ["logs", "UPPER"],
    "logs: negative tail": ["logs", "calc", "--tail", "-3"],
    "delete: bad name": ["delete", "a" * 41],
    "url: bad name": ["url", "9lives"],
    "url: bad port": ["url", "calc", "--port", "70000"],
    "new: bad name": ["new", "Calc", "--image", "x:1"],
    "new: upload source with ..": ["new", "calc", "--image", "x:1", "--upload", "../secret.txt:/s"],
    "new: absolute upload source": ["new", "calc", "--image", "x:1", "--upload", "/etc/passwd:/s"],
    "new: upload source through a symlink out": ["new", "calc", "--image", "x:1", "--upload", "link-out:/s"],
    "new: upload source under a symlinked dir": ["new", "calc", "--image", "x:1", "--upload", "dir-out/secret.txt:/s"],
    "new: upload DEST with ..": ["new", "calc", "--image", "x:1", "--upload", "site:/www/../etc"],
    "new: upload without DEST": ["new", "calc", "--image", "x:1", "--upload", "site"],
    "new: bad ttl": ["new", "calc", "--image", "x:1", "--ttl", "forever"],
    "new: bad env key": ["new", "calc", "--image", "x:1", "--env", "1X=y"],
    "new: bad port": ["new", "calc", "--image", "x:1", "--port", "0"],
}


def run_main(argv: list[str]) -> int:
    """``cli.main``'s exit code, also when argparse exits on its own (usage errors)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("case", sorted(USAGE))
def test_cli_refuses_bad_names_and_paths_before_docker(no_engine: Path, case: str, capsys) -> None:
    code = run_main(USAGE[case])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Docker" not in err and "docker" not in err.lower().replace("--", "")
    assert sorted(os.listdir(no_engine)) == ["dir-out", "link-out", "site"]  # no spec written


def test_a_missing_upload_source_is_not_found_before_docker(no_engine: Path, capsys) -> None:
    assert cli.main(["upload", "calc", "no-such-file", "/tmp/"]) == 3
    assert "no-such-file does not exist" in capsys.readouterr().err


def test_a_valid_command_does_reach_for_the_engine(no_engine: Path, capsys) -> None:
    # The control: with nothing wrong in the arguments, the missing engine is what fails.
    assert cli.main(["exec", "calc", "--", "true"]) == 1
    assert "cannot reach the Docker engine" in capsys.readouterr().err


def test_new_without_apply_writes_a_spec_and_needs_no_engine(no_engine: Path, capsys) -> None:
    assert cli.main(["new", "calc", "--image", "x:1", "--upload", "site:/www", "--port", "80"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("http://qa-") and "not started" in err
    assert load_specs(no_engine).specs["calc"].spec.spec.uploads[0].source == "site"


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda: Sandbox("Bad"), InvalidArgument),
        (lambda: Sandbox("calc").upload("secret.txt", "relative"), InvalidArgument),
        (lambda: Sandbox("calc").upload("secret.txt", "/a/../b"), InvalidArgument),
        (lambda: Sandbox("calc").download("/a/../../etc", "out"), InvalidArgument),
        (lambda: Sandbox("calc").download("etc/passwd", "out"), InvalidArgument),
        (lambda: Sandbox.create("calc", "x:1", uploads=[("../secret.txt", "/s")], wait=False), InvalidArgument),
        (lambda: Sandbox.create("calc", "x:1", uploads=[("link-out", "/s")], wait=False), InvalidArgument),
        (lambda: Sandbox.create("calc", "x:1", uploads=[("/etc/passwd", "/s")], wait=False), InvalidArgument),
        (lambda: Sandbox.create("calc", "x:1", ttl="soon", wait=False), InvalidArgument),
        (lambda: Sandbox("calc").extend("soon"), InvalidArgument),
    ],
)
def test_api_refuses_bad_names_and_paths_before_docker(no_engine: Path, call, kind) -> None:
    with pytest.raises(kind) as caught:
        call()
    assert "Docker" not in str(caught.value)
    assert sorted(os.listdir(no_engine)) == ["dir-out", "link-out", "site"]


def test_api_missing_upload_source_is_not_found(no_engine: Path, tmp_path: Path) -> None:
    # The engine is reached only after the host side checks out; here the sandbox
    # lookup would fail first, so check the host side through ops directly.
    from reconciler.ops import upload

    with pytest.raises(NotFound, match="does not exist"):
        upload(None, None, tmp_path / "nope", "/tmp/")  # type: ignore[arg-type]


def test_new_leaves_the_apply_to_a_running_watch_loop(no_engine: Path, capsys) -> None:
    # A watch holds the lock: `new --apply` writes the spec and touches no engine
    # (DOCKER_HOST points at nothing), because the loop will apply it.
    import json

    from reconciler.lock import hold_watch_lock
    from reconciler.settings import Settings

    settings = Settings(specs=Path("specs"), state_dir=Path("state"), instance="tsec", traefik_dir=Path("dyn"))
    with hold_watch_lock(settings):
        assert cli.main(["new", "calc", "--image", "x:1", "--apply", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["applied"], report["watch_loop"]) == (False, True)
    assert (no_engine / "calc.yaml").exists()
