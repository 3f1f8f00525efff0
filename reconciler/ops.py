"""Agent operations inside one sandbox: exec, upload, download, logs.

Built on the engine's primitives (exec create/attach/inspect, archive get/put).
Every function takes a sandbox found by ``find``: one of this instance's,
looked up by its label, never by a container name, so no name given by a user
can reach a container the reconciler does not own.

Timeouts: a command with a timeout runs under ``/bin/sh -c 'echo $$; exec "$@"'``,
which tells us its PID in the container before it becomes the command. When the
time is up a second exec kills that PID's process group (Docker makes every exec'd
process a session and group leader, so this takes its children too) and the
result says ``timed_out`` with exit code 124, as ``timeout(1)`` does.
"""

from __future__ import annotations

import os
import posixpath
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import TypeAdapter, ValidationError

from . import archive
from .engine import Engine, EngineError, ExecResult, PathStat
from .errors import InvalidArgument, NotFound, UserError
from .observed import ObservedSandbox
from .spec import ContainerPath, check_name

TIMEOUT_EXIT = 124  # what timeout(1) exits with
KILL_GRACE = 2.0  # seconds the output may take to end once the process group is killed
_PID_SHIM = ["/bin/sh", "-c", 'echo "$$"; exec "$@"', "reconcile-exec"]

StreamName = Literal["stdout", "stderr"]
OnOutput = Callable[[StreamName, bytes], None]


# --- finding a sandbox --------------------------------------------------------------


def valid_name(name: str) -> str:
    """``name`` when it is a sandbox name, else InvalidArgument (before any engine call)."""
    try:
        return check_name(name)
    except Exception as exc:  # PydanticCustomError: its message says what was expected
        raise InvalidArgument(f'"{name}" is not a sandbox name: {exc}') from exc


_CONTAINER_PATH = TypeAdapter(ContainerPath)


def container_path(path: str, what: str = "path in the sandbox", allow_root: bool = True) -> str:
    """An absolute container path without ``..``, normalised; else InvalidArgument."""
    try:
        normalized = _CONTAINER_PATH.validate_python(path)
    except ValidationError as exc:
        raise InvalidArgument(f"{what}: {exc.errors()[0]['msg']}") from exc
    if normalized == "/" and not allow_root:
        raise InvalidArgument(f"{what}: name a path below /")
    return normalized


def find(engine: Engine, name: str) -> ObservedSandbox:
    """This instance's sandbox ``name``, or NotFound."""
    have = engine.observe().sandboxes.get(valid_name(name))
    if have is None:
        raise NotFound(f'no sandbox "{name}" in instance "{engine.instance}"')
    return have


def require_running(have: ObservedSandbox) -> None:
    if not have.running:
        raise UserError(f'sandbox "{have.name}" is {have.state or "not running"}; `reconcile apply` starts it')


def direct_url(have: ObservedSandbox, port: int) -> str:
    """``http://<container ip>:<port>``: reachable from this machine only, not through Traefik."""
    require_running(have)
    if not have.ip:
        raise UserError(f'sandbox "{have.name}" has no address on its network')
    if have.route_port is not None:  # swarm: only the spec port is published, on the node's address
        if port != have.port:
            raise UserError(f'sandbox "{have.name}" runs on swarm node {have.node}: only its spec port '
                            f"{have.port} is reachable from here, at {have.ip}:{have.route_port}")
        port = have.route_port
    return f"http://{have.ip}:{port}"


# --- exec --------------------------------------------------------------------------


class _Output:
    """Reads an exec's stream on its own thread: hands chunks on as they arrive,
    keeps them when asked, and takes the PID line off the front when there is one."""

    def __init__(self, on_output: OnOutput | None, capture: bool, expect_pid: bool) -> None:
        self.on_output = on_output
        self.capture = capture
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.pid: int | None = None
        self._pid_line: bytearray | None = bytearray() if expect_pid else None
        self.pid_seen = threading.Event()

    def pump(self, stream) -> None:  # noqa: ANN001 - engine.ExecStream
        for stream_id, data in stream:
            if stream_id == 1 and self._pid_line is not None:
                data = self._take_pid(data)
                if not data:
                    continue
            self._deliver("stderr" if stream_id == 2 else "stdout", data)
        self.pid_seen.set()

    def _take_pid(self, data: bytes) -> bytes:
        assert self._pid_line is not None
        head, newline, rest = data.partition(b"\n")
        self._pid_line.extend(head)
        if not newline:
            return b""
        text = self._pid_line.decode(errors="replace").strip()
        self.pid = int(text) if text.isdigit() else None
        self._pid_line = None
        self.pid_seen.set()
        return rest

    def _deliver(self, name: StreamName, data: bytes) -> None:
        if self.capture:
            (self.stderr if name == "stderr" else self.stdout).extend(data)
        if self.on_output:
            self.on_output(name, data)


def run(
    engine: Engine,
    have: ObservedSandbox,
    cmd: list[str],
    workdir: str | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
    timeout: float | None = None,
    on_output: OnOutput | None = None,
    capture: bool = True,
) -> ExecResult:
    """Run ``cmd`` in the sandbox and wait for it; output goes to ``on_output`` as it arrives.

    ``capture=False`` keeps nothing (a command may print gigabytes)."""
    if not cmd:
        raise InvalidArgument("no command given (put it after --)")
    require_running(have)
    started = time.monotonic()
    deadline = started + timeout if timeout else None
    argv = [*_PID_SHIM, *cmd] if timeout else list(cmd)
    exec_id = engine.exec_create(have, argv, workdir=workdir, env=env, user=user)
    stream = engine.exec_attach(exec_id)
    output = _Output(on_output, capture, expect_pid=bool(timeout))
    reader = threading.Thread(target=output.pump, args=(stream,), name="exec-output", daemon=True)
    reader.start()
    try:
        exit_code = _wait(engine, exec_id, reader, deadline)
        if exit_code is None:  # the deadline passed
            output.pid_seen.wait(KILL_GRACE)
            _kill_group(engine, have, output.pid)
            reader.join(KILL_GRACE)
    finally:
        # Ends a stream still held open (by a process that closed nothing), and
        # frees the connection in every case, Ctrl-C included.
        stream.close()
        reader.join(KILL_GRACE)
    timed_out = exit_code is None
    return ExecResult(
        exit_code=TIMEOUT_EXIT if timed_out else exit_code,
        stdout=bytes(output.stdout),
        stderr=bytes(output.stderr),
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
    )


def _wait(engine: Engine, exec_id: str, reader: threading.Thread, deadline: float | None) -> int | None:
    """The exit code once the output has ended and the process is gone; None at the deadline."""
    while reader.is_alive():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        reader.join(0.2 if left is None else min(0.2, left))
    pause = 0.01
    while True:
        state = engine.exec_inspect(exec_id)
        if not state.running:
            return state.exit_code if state.exit_code is not None else -1
        # Output closed but the process lives on (it closed stdout and stderr).
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _kill_group(engine: Engine, have: ObservedSandbox, pid: int | None) -> None:
    if pid is None:
        return  # it never got as far as printing its PID: nothing of it runs
    script = f"kill -KILL -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true"
    killer = engine.exec_create(have, ["/bin/sh", "-c", script], user="0")
    for _ in engine.exec_attach(killer):
        pass


def start_detached(
    engine: Engine,
    have: ObservedSandbox,
    cmd: list[str],
    workdir: str | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> str:
    """Start ``cmd`` in the background and return its exec id at once (its output is
    discarded: redirect it to a file inside the command to keep it)."""
    if not cmd:
        raise InvalidArgument("no command given (put it after --)")
    require_running(have)
    exec_id = engine.exec_create(have, list(cmd), workdir=workdir, env=env, user=user)
    engine.exec_detach(exec_id)
    return exec_id


# --- upload / download --------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """What an upload or download did: where it went, how many files and bytes."""

    source: str
    target: str
    files: int
    bytes: int
    skipped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "target": self.target, "files": self.files, "bytes": self.bytes,
                "skipped": list(self.skipped)}


def _stat_following(engine: Engine, have: ObservedSandbox, path: str) -> tuple[str, PathStat | None]:
    """The stat of ``path``; a symlink is followed once (the archive API says where to)."""
    st = engine.stat_path(have, path)
    if st is not None and st.is_symlink and st.link_target:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), st.link_target))
        return resolved, engine.stat_path(have, resolved)
    return path, st


def _owner(engine: Engine, have: ObservedSandbox) -> tuple[int, int]:
    """The uid/gid uploads belong to: the sandbox's user, so it can change what it was given."""
    user = (have.config or {}).get("user")
    if not user:
        return 0, 0
    uid, _, gid = str(user).partition(":")
    if uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    if not have.running:
        return 0, 0
    ids = []
    for flag in ("-u", "-g"):
        result = run(engine, have, ["id", flag])
        text = result.stdout.decode(errors="replace").strip()
        if result.exit_code != 0 or not text.isdigit():
            return 0, 0
        ids.append(int(text))
    return ids[0], ids[1]


def upload(
    engine: Engine,
    have: ObservedSandbox,
    src: Path,
    dest: str,
    progress: archive.Progress | None = None,
) -> Transfer:
    """Copy the host file or directory ``src`` into the sandbox, as ``cp -r`` would:
    into ``dest`` when that is an existing directory or ends with ``/``, else to
    ``dest`` itself (missing parent directories are created). Streamed: no size
    limit but disk."""
    into = dest.endswith("/")
    dest = container_path(dest, "DEST")
    if not os.path.lexists(src):
        raise NotFound(f"{src} does not exist on this machine")
    name = Path(os.path.abspath(src)).name
    if not name:
        raise InvalidArgument("SRC: name a file or directory, not /")
    entries, skipped = archive.scan_source(src)
    src_is_dir = entries[0].kind == "dir"

    _, dest_stat = _stat_following(engine, have, dest)
    if into and dest_stat is not None and not dest_stat.is_dir:
        raise UserError(f"{dest} in {have.name} is not a directory")
    into = into or (dest_stat is not None and dest_stat.is_dir)
    target = posixpath.join(dest, name) if into else dest
    if target == "/":
        raise InvalidArgument("DEST: name a path below /, or an existing directory to copy into")
    target_stat = dest_stat if target == dest else engine.stat_path(have, target)
    if target_stat is not None and target_stat.is_dir != src_is_dir:
        kind = "a directory" if target_stat.is_dir else "not a directory"
        raise UserError(f"{target} in {have.name} is {kind}; {src} cannot replace it")

    # put_archive needs an existing directory to extract in: the deepest existing ancestor.
    missing: list[str] = []
    base = posixpath.dirname(target)
    while True:
        st = engine.stat_path(have, base)
        if st is not None:
            if not st.is_dir and not st.is_symlink:
                raise UserError(f"{base} in {have.name} is not a directory")
            break
        missing.insert(0, posixpath.basename(base))
        base = posixpath.dirname(base)
    parents = ["/".join(missing[: i + 1]) for i in range(len(missing))]
    top = "/".join([*missing, posixpath.basename(target)])
    stream = archive.tar_stream(
        entries, top, parents, owner=_owner(engine, have),
        include_top_dir=not (target_stat is not None and target_stat.is_dir), progress=progress,
    )
    engine.put_archive(have, base, stream)
    files = [e for e in entries if e.kind == "file"]
    return Transfer(str(src), target, len(files), sum(e.size for e in files), tuple(skipped))


def download(
    engine: Engine,
    have: ObservedSandbox,
    src: str,
    dest: str | Path,
    progress: archive.Progress | None = None,
) -> Transfer:
    """Copy ``src`` out of the sandbox to the host, as ``cp -r`` would: into ``dest``
    when that is an existing directory or a string ending with ``/``, else to
    ``dest`` itself. The archive is checked entry by entry (see archive.extract):
    nothing lands outside the target."""
    into = isinstance(dest, str) and dest.endswith(("/", os.sep))
    dest = Path(dest)
    src = container_path(src, "SRC", allow_root=False)
    fetch, st = _stat_following(engine, have, src)
    if st is None:
        raise NotFound(f"{src} does not exist in sandbox {have.name}")
    target = dest / posixpath.basename(src) if into or dest.is_dir() else dest
    chunks, archive_stat = engine.get_archive(have, fetch)
    total = None if st.is_dir else st.size
    done = archive.extract(chunks, archive_stat.name or posixpath.basename(fetch), target, progress, total)
    return Transfer(src, str(done.target), done.files, done.bytes)


# --- logs --------------------------------------------------------------------------


def logs(engine: Engine, have: ObservedSandbox, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
    """The sandbox's output (stdout and stderr as written); ``follow`` waits for more
    until the sandbox stops."""
    if tail is not None and tail < 0:
        raise InvalidArgument(f"--tail: expected 0 or more lines, got {tail}")
    try:
        # Opened now, not at the first next(): a follower sees everything from this call on.
        chunks = engine.logs(have, tail=tail, follow=follow)
    except EngineError:
        raise
    except Exception as exc:  # the engine client's own errors, e.g. the container went away
        raise EngineError(f"cannot read the logs of {have.name}: {exc}") from exc
    return _guarded_logs(chunks, have.name)


def _guarded_logs(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    try:
        yield from chunks
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - as above, while streaming
        raise EngineError(f"cannot read the logs of {name}: {exc}") from exc
