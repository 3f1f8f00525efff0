"""The dashboard's web app: the page, its JSON API (with OpenAPI) and ``/metrics``.

FastAPI, because the API's models are pydantic already (one definition gives
validation, the JSON and the OpenAPI document), and it runs in-process on
uvicorn next to the watch loop. Swagger's UI is left out: it loads its scripts
from a CDN, and this machine may be offline; ``/api/openapi.json`` is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..engine import EngineError
from ..errors import UserError
from ..metrics import CONTENT_TYPE, Metrics
from . import auth
from .actions import ActionError, ActionResult
from .readmodel import EventView, Overview, PlanView, SandboxRow, Snapshot, overview, plan_view, sandbox_rows
from .store import StoreReader

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_EXTEND_SECONDS = 30 * 24 * 3600
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class Snapshots(Protocol):
    def get(self) -> Snapshot: ...

    def invalidate(self) -> None: ...


class Writes(Protocol):
    def extend(self, name: str, seconds: int) -> ActionResult: ...

    def recreate(self, name: str) -> ActionResult: ...

    def delete(self, name: str) -> ActionResult: ...


@dataclass
class Dashboard:
    """What the app serves from: built by :func:`reconciler.dashboard.server.build_dashboard`."""

    snapshots: Snapshots  # snapshot.SnapshotSource
    store: StoreReader
    actions: Writes  # actions.Actions
    metrics: Metrics
    token: str
    hosts: frozenset[str]
    before_scrape: Callable[[], None] = lambda: None  # bring event-fed counters up to date


class ExtendRequest(BaseModel):
    seconds: int = Field(gt=0, le=MAX_EXTEND_SECONDS, description="push the expiry this many seconds further")


class Problem(BaseModel):
    detail: str


def create_app(dash: Dashboard) -> FastAPI:
    """The ASGI app over ``dash``; every request passes :func:`auth.decide` first."""
    app = FastAPI(
        title="reconciler dashboard",
        version="1",
        description="Sandboxes at a glance. Reads are open on loopback; every write needs the admin "
        "token in `Authorization: Bearer <token>` (or `X-Reconciler-Token`).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.client.host if request.client else None
        decision = auth.decide(request.method, headers, peer, dash.token, dash.hosts, request.url.path)
        if not decision.allowed:
            response: Response = JSONResponse({"detail": decision.reason}, status_code=decision.status)
            if decision.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="reconciler"'
        else:
            response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/") or request.url.path == "/metrics":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(EngineError)
    async def engine_down(request: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse({"detail": f"the container engine did not answer: {exc}"}, status_code=503)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)  # e.g. the state store cannot be read

    @app.exception_handler(ActionError)
    async def action_failed(request: Request, exc: ActionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/overview", response_model=Overview, tags=["read"])
    def get_overview() -> Overview:
        """The table, counts by state, the current plan and the pools: what the page polls."""
        return overview(dash.snapshots.get())

    @app.get("/api/sandboxes", response_model=list[SandboxRow], tags=["read"])
    def get_sandboxes() -> list[SandboxRow]:
        return sandbox_rows(dash.snapshots.get())

    @app.get("/api/sandboxes/{name}", response_model=SandboxRow, responses={404: {"model": Problem}},
             tags=["read"])
    def get_sandbox(name: str) -> Any:
        for row in sandbox_rows(dash.snapshots.get()):
            if row.name == name:
                return row
        return JSONResponse({"detail": f'no sandbox "{name}"'}, status_code=404)

    @app.get("/api/plan", response_model=PlanView, tags=["read"])
    def get_plan() -> PlanView:
        """What an apply would change now (the same planner `reconcile plan` runs)."""
        return plan_view(dash.snapshots.get().plan)

    @app.get("/api/events", response_model=list[EventView], tags=["read"])
    def get_events(after: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=1000)) -> list[EventView]:
        """The events log, oldest first; poll with ``after`` = the last id seen."""
        return dash.store.events(after=after, limit=limit)

    def written(result: ActionResult) -> ActionResult:
        dash.snapshots.invalidate()  # the next read observes what the write changed
        return result

    write_responses: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem},
    }

    @app.post("/api/sandboxes/{name}/extend", response_model=ActionResult, responses=write_responses,
              tags=["write"])
    def extend(name: str, body: ExtendRequest) -> ActionResult:
        """Push the sandbox's TTL expiry ``seconds`` further (from now, if it already passed)."""
        return written(dash.actions.extend(name, body.seconds))

    @app.post("/api/sandboxes/{name}/recreate", response_model=ActionResult, responses=write_responses,
              tags=["write"])
    def recreate(name: str) -> ActionResult:
        """Replace the container with a fresh one from the same spec (volumes and lifetime kept)."""
        return written(dash.actions.recreate(name))

    @app.delete("/api/sandboxes/{name}", response_model=ActionResult, responses=write_responses,
                tags=["write"])
    def delete(name: str) -> ActionResult:
        """Delete the sandbox: its spec file, container, network and volumes."""
        return written(dash.actions.delete(name))

    @app.get("/metrics", tags=["read"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}})
    def metrics() -> Response:
        dash.before_scrape()
        return Response(dash.metrics.exposition(), media_type=CONTENT_TYPE)

    return app
