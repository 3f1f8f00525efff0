"""The dashboard's writes: extend a TTL, recreate a sandbox, delete a sandbox.

Two ways to carry them out, chosen by whether a watch loop converges this
instance (in this process under ``reconcile up``, or another process holding
the loop's lock):

- with a loop, the dashboard only makes the one change the loop cannot infer
  (remove the container, remove the spec file, move the expiry) and the loop,
  woken by the Docker or file event, does the rest: routes, waits, recreates.
  Two writers of the Traefik file or two creators of one container would race.
- alone, it converges that one sandbox itself, as ``reconcile apply`` would.

Each write is noted in the events log ("requested" events; ``extend`` logs
its own "extended").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from ..controller import Context, apply_once, make_plan, publish_routes
from ..errors import NotFound, UserError
from ..probe import ready_set
from ..spec_writer import spec_files_for

ExtendFn = Callable[[str, int], float | None]  # (name, seconds) -> new expiry (unix seconds)


class ActionError(UserError):
    """A write the dashboard refuses, with the HTTP status that says why."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ActionResult(BaseModel):
    ok: bool
    name: str
    action: str
    message: str
    expires_at: float | None = None


@dataclass
class Actions:
    ctx: Context
    extend_ttl: ExtendFn | None  # None: no state store to keep lifetimes in
    loop_running: Callable[[], bool]  # True: a watch loop converges this instance
    note: Callable[[str, str], None] = lambda name, message: None  # into the events log

    # --- extend ----------------------------------------------------------------

    def extend(self, name: str, seconds: int) -> ActionResult:
        if self.extend_ttl is None:
            raise ActionError("extending a TTL needs the watch loop's state store, which this build lacks", 501)
        try:
            expires_at = self.extend_ttl(name, seconds)
        except NotFound as exc:
            raise ActionError(str(exc), 404) from exc
        except UserError as exc:
            raise ActionError(str(exc), 409) from exc
        except ValueError as exc:  # "no ttl: nothing to extend"
            raise ActionError(f"{name}: {exc}", 409) from exc
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)) if expires_at else "later"
        return ActionResult(ok=True, name=name, action="extend", message=f"{name} now expires at {when}",
                            expires_at=expires_at)

    # --- recreate ----------------------------------------------------------------

    def recreate(self, name: str) -> ActionResult:
        """Remove the container; a pass creates it anew (same lifetime, same volumes)."""
        _, observed, plan = make_plan(self.ctx, only={name})
        have = observed.sandboxes.get(name)
        if plan.desired.get(name) is None:
            if have is None:
                raise ActionError(f'no sandbox "{name}" in instance "{self.ctx.settings.instance}"', 404)
            raise ActionError(f"{name}: cannot recreate: its spec is invalid, expired or its image is missing "
                              "(see the plan)", 409)
        loop = self.loop_running()
        if have is not None:
            if not loop:
                # Route off first: Traefik never forwards to a stopping sandbox.
                others = ready_set(sb for sb in observed.sandboxes.values() if sb.name != name)
                publish_routes(self.ctx, observed, others)
            self.ctx.engine.remove(have, remove_network=False, remove_volumes=False)
        self.note(name, "recreate requested from the dashboard")
        if loop:
            return ActionResult(ok=True, name=name, action="recreate",
                                message=f"{name}: container removed; the watch loop creates it anew")
        result = apply_once(self.ctx, only={name})
        failures = [r.error or "" for r in result.results if not r.ok]
        if failures:
            raise ActionError(f"{name}: recreate failed: {'; '.join(failures)}", 500)
        return ActionResult(ok=True, name=name, action="recreate", message=f"{name}: recreated")

    # --- delete ---------------------------------------------------------------------

    def delete(self, name: str) -> ActionResult:
        """Remove the spec file(s) naming ``name``, then the sandbox with its network and volumes."""
        settings = self.ctx.settings
        if not self.loop_running():
            from ..api import delete  # the same delete as `reconcile delete`

            try:
                delete(settings, name)
            except NotFound as exc:
                raise ActionError(str(exc), 404) from exc
            except UserError as exc:
                raise ActionError(str(exc), 500) from exc
            self.note(name, "deleted from the dashboard")
            return ActionResult(ok=True, name=name, action="delete", message=f"{name}: deleted")
        files = spec_files_for(settings.specs, name)
        if not files and name not in self.ctx.engine.observe().sandboxes:
            raise ActionError(f'no sandbox "{name}" in instance "{settings.instance}"', 404)
        for path in files:
            _remove_spec_file(path, settings.specs)
        self.note(name, "delete requested from the dashboard")
        # Without a spec the loop's next pass destroys it (route first, volumes too).
        return ActionResult(ok=True, name=name, action="delete",
                            message=f"{name}: spec file removed; the watch loop destroys the sandbox")


def _remove_spec_file(path: Path, specs_dir: Path) -> None:
    """Remove a spec file, only if it really lies in the specs directory."""
    resolved = path.resolve()
    if not resolved.is_relative_to(specs_dir.resolve()):
        raise ActionError(f"{path}: not inside the specs directory {specs_dir}; refusing to remove it", 409)
    try:
        resolved.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ActionError(f"cannot remove {path}: {exc}", 500) from exc
