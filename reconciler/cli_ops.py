"""CLI commands: new, exec, upload, download, logs, delete (agent operations). Parsing and output only; the work lives elsewhere."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .cli_loop import seconds_arg
from .errors import InvalidArgument, NotFound
from .settings import Settings

AddCommand = Callable[..., argparse.ArgumentParser]
LARGE_TRANSFER = 8 * 1024**2  # progress is shown on a terminal from this size on


def register(add: AddCommand) -> None:
    """Add this area's subcommands with ``add(name, func, help) -> parser``."""
    p = add("new", cmd_new, "write a new sandbox's spec file; --apply starts it, --wait also waits until it answers")
    p.add_argument("name")
    p.add_argument("--image", required=True, help="image reference, e.g. reconciler/sandbox:latest")
    p.add_argument("--port", type=int, help="the port Traefik routes to (no port, no URL)")
    p.add_argument("--ttl", help="lifetime, e.g. 30m or 2h (enforced by the watch loop)")
    p.add_argument("--upload", action="append", default=[], metavar="SRC:DEST",
                   help="copy SRC (a path inside the specs dir) to DEST before start; repeatable")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable; repeatable")
    p.add_argument("--workdir", help="working directory in the sandbox")
    p.add_argument("--no-egress", action="store_true",
                   help="an internal network: no connections to other networks or the internet (still routable)")
    p.add_argument("--pool", metavar="POOL",
                   help="claim a warm container of this pool (a spec of kind Pool) when one matches the spec")
    p.add_argument("--apply", action="store_true", help="start it now (unless a watch loop runs: it will)")
    p.add_argument("--wait", action="store_true", help="start it and wait until it answers; prints its URL")
    p.add_argument("--timeout", type=seconds_arg, metavar="DURATION", help="with --wait: how long (default 30s)")
    _command_after_dashes(p, "the command to run, after --; one argument with spaces runs under /bin/sh -c")

    p = add("exec", cmd_exec, "run a command in a sandbox, output streamed; exits with the command's exit code")
    p.add_argument("name")
    p.add_argument("--workdir", help="working directory for the command")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable; repeatable")
    p.add_argument("--user", help="run as this user (default: the sandbox's), e.g. 0 for root")
    p.add_argument("--timeout", type=seconds_arg, metavar="DURATION",
                   help="kill the command after this long (exit code 124), e.g. 30s")
    p.add_argument("--detach", action="store_true", help="start it in the background and return at once")
    p.add_argument("--wait", action="store_true",
                   help="with --detach: wait until the sandbox answers on its port and is routed; prints its URL")
    _command_after_dashes(p, "the command, after --")

    for name, func, text in (
        ("upload", cmd_upload, "copy a file or directory from this machine into a sandbox (like cp -r)"),
        ("download", cmd_download, "copy a file or directory out of a sandbox (like cp -r); never writes outside DEST"),
    ):
        p = add(name, func, text)
        p.add_argument("name")
        p.add_argument("src", metavar="SRC")
        p.add_argument("dest", metavar="DEST")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="show progress on stderr (default: on a terminal, for large transfers)")

    p = add("logs", cmd_logs, "print a sandbox's output (its main process, stdout and stderr)")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output until it stops")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")

    p = add("delete", cmd_delete, "remove a sandbox: its spec file, container, network and volumes")
    p.add_argument("name")


def _command_after_dashes(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Everything after the first ``--`` is the command, options included.

    argparse cannot mix options with a trailing ``nargs='*'`` positional
    (python/cpython#59317), so the tail is split off before it parses."""
    parser.add_argument("command", nargs="*", metavar="-- COMMAND", help=help_text)
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):  # noqa: ANN001, ANN202 - argparse's signature
        args = list(sys.argv[1:] if args is None else args)
        head, tail = (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
        namespace, extras = parse_known(head, namespace)
        if namespace.command:
            parser.error(f"put the command after --, e.g. -- {' '.join(namespace.command)}")
        namespace.command = tail
        return namespace, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _pairs(values: list[str], sep: str, flag: str, shape: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        key, found, rest = value.partition(sep)
        if not found or not key or (sep == ":" and not rest):
            raise InvalidArgument(f"{flag}: expected {shape}, got {value!r}")
        out.append((key, rest))
    return out


def _emit(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- new / delete -----------------------------------------------------------------------


def cmd_new(args: argparse.Namespace, settings: Settings) -> int:
    from .lifecycle import create
    from .ops import valid_name
    from .spec_writer import NewSandbox

    valid_name(args.name)
    command: list[str] | str | None = list(args.command) or None
    if command and len(command) == 1 and any(ch.isspace() for ch in command[0]):
        command = command[0]  # one quoted shell line
    new = NewSandbox(
        name=args.name,
        image=args.image,
        port=args.port,
        ttl=args.ttl,
        command=command,
        env=dict(_pairs(args.env, "=", "--env", "K=V")),
        uploads=tuple(_pairs(args.upload, ":", "--upload", "SRC:DEST")),
        workdir=args.workdir,
        egress=not args.no_egress,
        pool=args.pool,
    )
    created = create(settings, new, apply=args.apply, wait=args.wait, timeout=args.timeout)
    if args.output == "json":
        _emit(created.to_json())
        return 0
    _say(f"wrote {created.spec_file}")
    if created.watch_loop and (args.apply or args.wait):
        _say("a watch loop runs for this instance: it starts the sandbox")
    elif created.applied:
        _say(f"started {created.name}" + (" and it answers" if created.ready else ""))
    elif not created.watch_loop:
        _say("not started: run `reconcile apply`, or pass --apply")
    if created.url:
        print(created.url)
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from .lifecycle import delete

    deleted = delete(settings, args.name)
    if args.output == "json":
        _emit(deleted.to_json())
        return 0
    parts = [f"spec {', '.join(deleted.spec_files)}" if deleted.spec_files else "no spec file"]
    parts.append("container" if deleted.container else "no container")
    if deleted.volumes:
        parts.append(f"volumes {', '.join(deleted.volumes)}")
    print(f"deleted {deleted.name} ({'; '.join(parts)})")
    return 0


# --- exec ---------------------------------------------------------------------------------


def cmd_exec(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import make_engine
    from .controller import Context
    from .lifecycle import wait_ready
    from .ops import find, run, start_detached, valid_name

    valid_name(args.name)
    env = dict(_pairs(args.env, "=", "--env", "K=V"))
    if not args.command:
        raise InvalidArgument("no command given: put it after --, e.g. reconcile exec NAME -- ls -la")
    if args.wait and not args.detach:
        raise InvalidArgument("--wait goes with --detach (a plain exec always waits for its command)")
    engine = make_engine(settings)
    have = find(engine, args.name)
    if args.detach:
        exec_id = start_detached(engine, have, args.command, workdir=args.workdir, env=env, user=args.user)
        url = None
        if args.wait:
            wait_ready(Context(settings=settings, engine=engine), args.name, args.timeout)
            url = settings.url_for(have.hostname) if have.hostname else None
        if args.output == "json":
            _emit({"exec_id": exec_id, "detached": True, "url": url})
        else:
            _say(f"started in the background (exec {exec_id[:12]})")
            if url:
                print(url)
        return 0

    as_json = args.output == "json"

    def stream(name: str, data: bytes) -> None:
        out = sys.stderr if name == "stderr" else sys.stdout
        out.buffer.write(data)
        out.flush()

    result = run(engine, have, args.command, workdir=args.workdir, env=env, user=args.user,
                 timeout=args.timeout, on_output=None if as_json else stream, capture=as_json)
    if as_json:
        _emit({
            "exit_code": result.exit_code,
            "stdout": result.stdout.decode("utf-8", errors="replace"),
            "stderr": result.stderr.decode("utf-8", errors="replace"),
            "duration_s": round(result.duration_s, 3),
            "timed_out": result.timed_out,
        })
    elif result.timed_out:
        _say(f"reconcile: timed out after {args.timeout:g}s; the command was killed (exit code {result.exit_code})")
    return result.exit_code


# --- upload / download -----------------------------------------------------------------------


def _progress(label: str, force: bool | None) -> tuple[Callable[[int, int | None], None] | None, Callable[[], None]]:
    """A progress callback drawing one line on stderr, and what ends that line."""
    if force is False or (force is None and not sys.stderr.isatty()):
        return None, lambda: None
    shown = {"any": False, "at": 0.0}

    def show(done: int, total: int | None) -> None:
        if force is None and (total or done) < LARGE_TRANSFER:
            return
        now = time.monotonic()
        if now - shown["at"] < 0.1 and done != total:
            return
        shown["any"], shown["at"] = True, now
        text = f"{label}: {done / 1e6:.1f} MB"
        if total:
            text += f" of {total / 1e6:.1f} MB ({100 * done // total}%)"
        sys.stderr.write("\r" + text)
        sys.stderr.flush()

    def end() -> None:
        if shown["any"]:
            sys.stderr.write("\n")
            sys.stderr.flush()

    return show, end


def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import make_engine
    from .ops import container_path, find, upload, valid_name

    valid_name(args.name)
    container_path(args.dest, "DEST")
    src = Path(args.src)
    if not os.path.lexists(src):
        raise NotFound(f"{args.src} does not exist on this machine")
    engine = make_engine(settings)
    progress, end = _progress("upload", args.progress)
    try:
        done = upload(engine, find(engine, args.name), src, args.dest, progress)
    finally:
        end()
    return _report(args, done, f"{args.name}:{done.target}")


def cmd_download(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import make_engine
    from .ops import container_path, download, find, valid_name

    valid_name(args.name)
    src = container_path(args.src, "SRC", allow_root=False)
    engine = make_engine(settings)
    progress, end = _progress("download", args.progress)
    try:
        done = download(engine, find(engine, args.name), src, args.dest, progress)
    finally:
        end()
    return _report(args, done, done.target)


def _report(args: argparse.Namespace, done, where: str) -> int:  # noqa: ANN001 - ops.Transfer
    if args.output == "json":
        _emit(done.to_json())
        return 0
    print(f"{done.source} -> {where} ({done.files} file(s), {done.bytes} bytes)")
    for path in done.skipped:
        _say(f"  skipped {path} (not a file, directory or symlink)")
    return 0


# --- logs ------------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import make_engine
    from .ops import find, logs, valid_name

    valid_name(args.name)
    if args.tail is not None and args.tail < 0:
        raise InvalidArgument(f"--tail: expected 0 or more lines, got {args.tail}")
    engine = make_engine(settings)
    chunks = logs(engine, find(engine, args.name), tail=args.tail, follow=args.follow)
    if args.output == "json" and not args.follow:
        _emit({"name": args.name, "logs": b"".join(chunks).decode("utf-8", errors="replace")})
        return 0
    for chunk in chunks:
        if args.output == "json":  # one JSON object per chunk, as it comes
            print(json.dumps({"name": args.name, "text": chunk.decode("utf-8", errors="replace")}), flush=True)
        else:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    return 0
