"""The ``reconcile`` command line: argument parsing and output only.

Exit codes everywhere: 0 ok, 1 failure, 2 usage, 3 not found
(``plan --detailed-exitcode``: 0 no changes, 1 error, 2 changes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import NotFound, UserError
from .settings import GLOBAL_OPTIONS, Settings, env_default

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


class Usage(UserError):
    exit_code = EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"reconcile: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


# --- plumbing ----------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    values = {name: getattr(args, name) for name in GLOBAL_OPTIONS}
    try:
        return Settings(**{k: v for k, v in values.items() if v is not None})
    except Exception as exc:  # pydantic ValidationError: say which option
        errors = getattr(exc, "errors", None)
        if errors:
            first = errors()[0]
            option = "--" + str(first["loc"][0]).replace("_", "-")
            raise Usage(f"{option}: {first['msg'].removeprefix('Value error, ')}") from exc
        raise Usage(str(exc)) from exc


def context_for(settings: Settings):  # noqa: ANN201 - controller.Context
    from .controller import Context

    return Context(settings=settings, engine=make_engine(settings))


def make_engine(settings: Settings):  # noqa: ANN201 - engine.Engine
    if settings.engine == "swarm":
        from .swarm_engine import SwarmEngine, node_hosts_from_env

        return SwarmEngine(settings.instance, node_hosts=node_hosts_from_env())
    from .claims import ClaimBook
    from .docker_engine import DockerEngine

    return DockerEngine(settings.instance, claims=ClaimBook.for_settings(settings))


def warn_ignored_placement(settings: Settings, desired: Any) -> None:
    """On stderr, one line per spec with a placement the docker engine ignores."""
    if settings.engine == "swarm":
        return
    for loaded in sorted(desired.specs.values(), key=lambda d: d.rel):
        placement = loaded.spec.spec.placement
        if placement is not None and placement.constraints:
            print(f"warning: {loaded.rel}: spec.placement is ignored by the docker engine "
                  "(it applies with --engine swarm)", file=sys.stderr)


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def _ts(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- commands ------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from .loader import load_specs

    desired = load_specs(settings.specs)
    if args.output == "json":
        emit_json({"valid": sorted(desired.specs), "errors": [e.to_json() for e in desired.errors]})
    else:
        for error in desired.errors:
            print(error)
        if not desired.errors:
            print(f"{len(desired.specs)} spec(s) valid.")
    return EXIT_FAIL if desired.errors else EXIT_OK


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from .controller import make_plan
    from .plan import render_json, render_text

    desired, _, plan = make_plan(context_for(settings))
    warn_ignored_placement(settings, desired)
    if args.output == "json":
        emit_json(render_json(plan))
    else:
        sys.stdout.write(render_text(plan))
    if plan.problems:
        return EXIT_FAIL
    if args.detailed_exitcode and plan.has_changes:
        return 2
    return EXIT_OK


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from .controller import apply_once
    from .execute import ChangeResult
    from .plan import SYMBOLS

    from .lock import watch_running

    if watch_running(settings) and not args.force:
        # Two controllers converging one instance would fight over its containers.
        raise UserError(
            f'a watch loop manages instance "{settings.instance}" and applies every change itself; '
            "see what it is doing with `reconcile plan` / `reconcile status`, or pass --force"
        )
    ctx = context_for(settings)
    show_progress = args.output == "text" and sys.stderr.isatty()

    def progress(result: ChangeResult) -> None:
        if show_progress:
            mark = "ok" if result.ok else "FAILED"
            sym = SYMBOLS[result.change.action]
            print(f"{sym:>3} {result.change.name}: {mark} ({result.seconds:.2f}s)", file=sys.stderr)

    result = apply_once(ctx, on_result=progress, wait=not args.no_wait)
    warn_ignored_placement(settings, result.desired)
    if args.output == "json":
        emit_json(
            {
                "ok": result.ok,
                "results": [r.to_json() for r in result.results],
                "errors": [str(p) for p in result.plan.problems],
                "kept": list(result.plan.kept),
                "not_ready": list(result.not_ready),
                "routes": [{"name": r.name, "host": r.host, "url": r.url} for r in result.routes],
                "pools": [{**r.change.to_json(), "ok": r.ok, "error": r.error} for r in result.pool_results],
            }
        )
        return EXIT_OK if result.ok else EXIT_FAIL
    for problem in result.plan.problems:
        print(f"error: {problem}")
    for name in result.plan.kept:
        print(f"  ! {name}: left as it is (spec invalid or image missing)")
    for r in result.results:
        sym = SYMBOLS[r.change.action]
        if r.ok:
            print(f"{sym:>3} {r.change.name} ({r.change.cause}): done")
        else:
            print(f"{sym:>3} {r.change.name}: FAILED: {r.error}")
    for name in result.not_ready:
        print(f"  ! {name}: started but did not answer on its port within {settings.ready_timeout:g}s")
    from .pool_worker import pool_events

    for event in pool_events(result.pool_results, time.time()):
        print(f"  {'!' if event.kind == 'error' else '*'} pool {event.name}: {event.message}")
    ok_count = sum(r.ok for r in result.results)
    if not result.results and not result.pool_results:
        print("No changes. Sandboxes match the specs.")
    else:
        print(f"Apply: {ok_count} of {len(result.results)} change(s) done.")
    return EXIT_OK if result.ok else EXIT_FAIL


def status_rows(settings: Settings) -> list[dict[str, Any]]:
    from .controller import make_plan
    from .labels import POOL, default_hostname

    from .lifetime import describe
    from .state import read_statuses

    ctx = context_for(settings)
    desired, observed, plan = make_plan(ctx)
    statuses, now = read_statuses(settings), time.time()
    rows = []
    names = sorted(set(desired.specs) | set(observed.sandboxes) | set(desired.protected_names))
    for name in names:
        have = observed.sandboxes.get(name)
        loaded = desired.specs.get(name)
        hostname = (have.hostname if have else None) or (
            (loaded.spec.spec.hostname or default_hostname(settings.instance, name)) if loaded else None
        )
        status = statuses.get(name)
        if have is None:
            state = ("expired" if name in plan.expired else "absent") if loaded else "invalid"
        elif status is not None and status.summary in ("CrashLoop", "NotAnswering", "Failed"):
            state = f"{have.state} ({status.summary})"
        elif have.state == "restarting" and have.status:
            state = f"restarting ({have.status})"  # swarm: what the task waits for, e.g. "pending: no suitable node"
        elif name in plan.kept:
            state = f"{have.state} (spec invalid)" if name in desired.protected_names or not loaded else have.state
        elif any(c.name == name and c.action == "recreate" for c in plan.changes):
            state = f"{have.state} (outdated)"
        else:
            state = have.state
        life = plan.lifetimes.get(name)
        created = life.born_at if life else (have.created_at if have else None)
        rows.append(
            {
                "kind": "sandbox",
                "name": name,
                "state": state,
                "url": settings.url_for(hostname) if hostname else None,
                "container_id": have.container_id[:12] if have else None,
                "created": _ts(created) if created else None,
                "expires": _ts(life.expires_at) if life and life.expires_at else None,
                "time_left": describe(life, now),  # "in 4m12s" / "expired <when>"
                "spec": loaded.rel if loaded else (have.spec_file if have else None),
                "status": status.to_json() if status else None,
                "node": have.node if have else None,  # swarm: where the task runs
                "pool": have.labels.get(POOL) if have else None,  # claimed from this warm pool
            }
        )
    rows.extend({"kind": "pool", **size.to_json()} for size in plan.pools)  # idle, claimed, target
    return rows


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = status_rows(settings)
    if args.output == "json":
        emit_json(rows)
        return EXIT_OK
    pools = [r for r in rows if r["kind"] == "pool"]
    rows = [r for r in rows if r["kind"] == "sandbox"]
    headers = ["NAME", "STATE", "URL", "CONTAINER", "CREATED", "EXPIRES"]
    table = [[r["name"], r["state"], r["url"] or "-", r["container_id"] or "-", r["created"] or "-", r["time_left"] or "-"] for r in rows]
    if any(r["node"] for r in rows):  # only swarm sandboxes have a node
        headers.append("NODE")
        for row, r in zip(table, rows):
            row.append(r["node"] or "-")
    print_table(headers, table)
    if pools:
        print()
        print_table(["POOL", "IDLE", "CLAIMED", "TARGET"],
                    [[p["name"], p["idle"], p["claimed"], "-" if p["target"] is None else p["target"]] for p in pools])
    return EXIT_OK


def print_table(headers: list[str], table: list[list[Any]]) -> None:
    widths = [max(len(h), *(len(str(row[i])) for row in table)) if table else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _check_names(names: Sequence[str]) -> None:
    from .spec import check_name

    for name in names:
        try:
            check_name(name)
        except Exception as exc:
            raise Usage(f'"{name}" is not a sandbox name: {exc}') from exc


def cmd_url(args: argparse.Namespace, settings: Settings) -> int:
    from .labels import default_hostname
    from .loader import load_specs

    _check_names([args.name])
    if args.port is not None:
        # Another port of the sandbox: its container address, from this machine only (no route).
        from .ops import direct_url, find

        if not 1 <= args.port <= 65535:
            raise Usage(f"--port: expected 1 to 65535, got {args.port}")
        url = direct_url(find(make_engine(settings), args.name), args.port)
        if args.output == "json":
            emit_json({"name": args.name, "url": url, "port": args.port, "direct": True})
        else:
            print(url)
        return EXIT_OK
    desired = load_specs(settings.specs)
    loaded = desired.specs.get(args.name)
    hostname = None
    if loaded is not None:
        hostname = loaded.spec.spec.hostname or default_hostname(settings.instance, args.name)
    else:
        observed = make_engine(settings).observe()
        have = observed.sandboxes.get(args.name)
        hostname = have.hostname if have else None
    if hostname is None:
        raise NotFound(f'no sandbox "{args.name}" in instance "{settings.instance}"')
    url = settings.url_for(hostname)
    if args.output == "json":
        emit_json({"name": args.name, "url": url, "hostname": f"{hostname}.{settings.domain}"})
    else:
        print(url)
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace, settings: Settings) -> int:
    from .controller import destroy_sandboxes

    if not args.all and not args.names:
        raise Usage("name one or more sandboxes, or pass --all")
    _check_names(args.names)
    missing, results = destroy_sandboxes(context_for(settings), None if args.all else args.names, args.volumes)
    if missing:
        raise NotFound(f'no sandbox {", ".join(missing)} in instance "{settings.instance}"')
    failures = [f"{r.change.name}: {r.error}" for r in results if not r.ok]
    destroyed = [r.change.name for r in results if r.ok]
    if args.output == "json":
        emit_json({"destroyed": destroyed, "errors": failures})
    else:
        for name in destroyed:
            print(f"  - {name}: destroyed")
        for failure in failures:
            print(f"error: {failure}")
    return EXIT_FAIL if failures else EXIT_OK


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from .spec import json_schema

    emit_json(json_schema(args.kind))
    return EXIT_OK


# --- parser ----------------------------------------------------------------------

Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    # Global options go before or after the command (`reconcile --engine swarm plan`
    # and `reconcile plan --engine swarm`). The command's copies default to
    # SUPPRESS, so a value given before the command is not reset by them.
    common = argparse.ArgumentParser(add_help=False)
    parser = _Parser(prog="reconcile", description="Declarative sandboxes: specs in, Docker and Traefik converged.")
    for name, (env, _default, help_text) in GLOBAL_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        common.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=f"{help_text} (${env})")
        parser.add_argument(flag, dest=name, default=None, help=argparse.SUPPRESS)
    common.add_argument("--output", "-o", choices=["text", "json"], default=argparse.SUPPRESS)
    parser.add_argument("--output", "-o", choices=["text", "json"], default="text", help=argparse.SUPPRESS)

    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("validate", cmd_validate, "check every spec file; one error line each")
    p = add("plan", cmd_plan, "show what apply would change")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 1 error, 2 changes")
    p = add("apply", cmd_apply, "converge once: create, recreate, start and destroy sandboxes")
    p.add_argument("--no-wait", action="store_true", help="do not wait for started sandboxes to answer")
    p.add_argument("--force", action="store_true", help="apply even while a watch loop runs for this instance")
    add("status", cmd_status, "one row per sandbox")
    p = add("url", cmd_url, "print a sandbox's URL")
    p.add_argument("name")
    p.add_argument("--port", type=int, help="any port of the sandbox: its direct address http://<container ip>:PORT, "
                   "reachable from this machine only, not through Traefik")
    p = add("destroy", cmd_destroy, "remove sandboxes (containers and networks); spec files stay")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true", help="every sandbox of this instance")
    p.add_argument("--volumes", action="store_true", help="remove the sandboxes' volumes too")
    p = add("schema", cmd_schema, "print the JSON Schema of a spec file")
    p.add_argument("--kind", choices=("sandbox", "pool"), default="sandbox",
                   help="which kind of spec file (default sandbox; docs/pool.schema.json is --kind pool)")
    # Each area registers its own commands, so the parser reads as the product.
    from . import cli_dashboard, cli_loop, cli_ops, cli_up

    for module in (cli_loop, cli_ops, cli_up, cli_dashboard):
        module.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in GLOBAL_OPTIONS:
        if getattr(args, name) is None:
            setattr(args, name, env_default(name))
    try:
        settings = settings_from(args)
        return args.func(args, settings)
    except UserError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `reconcile schema | head`: the reader left; say nothing more.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # EngineError and friends: one line, not a traceback
        from .engine import EngineError

        if isinstance(exc, EngineError):
            print(f"reconcile: {exc}", file=sys.stderr)
            return EXIT_FAIL
        raise


if __name__ == "__main__":
    raise SystemExit(main())
