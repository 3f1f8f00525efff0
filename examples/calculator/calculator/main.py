"""Calculator web app: a FastAPI JSON API, SQLite history and a static UI.

Written for Debian bookworm's python3-fastapi (pydantic v1) as well as newer
releases: the request body is read as a plain dict and checked by ``calc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import calc
import store

STATIC_DIR = Path(__file__).resolve().parent / "static"

app = FastAPI(title="Calculator", version="1.0.0")
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def present(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it; SQLite REALs become ints where integral."""
    return {
        "a": calc.tidy(row["a"]),
        "op": row["op"],
        "b": calc.tidy(row["b"]),
        "result": calc.tidy(row["result"]),
        "id": row["id"],
        "created_at": row["created_at"],
    }


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness for the reconciler's health check."""
    return {"status": "ok"}


@app.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The calculator UI."""
    return FileResponse(STATIC_DIR / "index.html")


@app.post("/api/calculate")
def calculate(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Evaluate ``a op b``, store it in the history and return the stored entry.

    Malformed input is 422; a well-formed request with no result (division by
    zero, overflow) is 400.
    """
    missing = [key for key in ("a", "op", "b") if key not in body]
    if missing:
        raise HTTPException(422, f"missing field(s): {', '.join(missing)}; expected {{a, op, b}}")
    try:
        op = calc.normalize_op(body["op"])
        a = calc.as_number(body["a"], "a")
        b = calc.as_number(body["b"], "b")
    except calc.CalcError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        result = calc.evaluate(a, op, b)
    except calc.CalcError as exc:
        raise HTTPException(400, str(exc)) from None
    return present(store.add(a, op, b, result))


@app.get("/api/history")
def history(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    """Stored calculations, newest first."""
    return {"items": [present(row) for row in store.recent(limit)]}


@app.delete("/api/history")
def clear_history() -> dict[str, int]:
    """Forget every stored calculation."""
    return {"deleted": store.clear()}
