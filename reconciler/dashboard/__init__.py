"""The web dashboard: one table of sandboxes, the events log, the plan, actions, ``/metrics``.

Modules: ``readmodel`` (snapshot -> JSON, pure), ``snapshot`` (taking one,
cached), ``usage`` (CPU/memory from cgroup files), ``store`` (what the state
store contributes), ``auth`` (who may read and write), ``actions`` (extend,
recreate, delete), ``app`` (FastAPI routes), ``server`` (uvicorn in a thread,
the Traefik route). The web framework is imported only when serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import DashboardServer


def serve_in_thread(*args: Any, **kwargs: Any) -> DashboardServer:
    """See :func:`reconciler.dashboard.server.serve_in_thread`."""
    from .server import serve_in_thread as serve

    return serve(*args, **kwargs)
