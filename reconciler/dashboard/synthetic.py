"""A made-up fleet for timing and testing the read model without Docker.

``world(n)`` gives a :class:`Snapshot` of ``n`` sandboxes in a mix of states
(most ready; some starting, outdated, stopped, pending), built through
the real loader types and the real planner, so the table API's cost for ``n``
sandboxes can be measured on its own: see ``table_response_seconds``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..container_config import desired_sandbox
from ..loader import Desired, LoadedSpec
from ..observed import Observed, ObservedSandbox
from ..plan import compute_plan
from ..settings import Settings
from ..spec import SandboxSpec
from .readmodel import Snapshot
from .usage import Usage

IMAGE = "reconciler-test/busybox:latest"
IMAGE_ID = "sha256:" + "b" * 64


def loaded_spec(name: str, specs_dir: Path, ttl: int | None = 3600, port: int | None = 8080,
                env: dict[str, str] | None = None, image: str = IMAGE) -> LoadedSpec:
    body: dict[str, object] = {"image": image, "command": ["httpd", "-f", "-p", str(port or 8080)],
                               "env": env or {}}
    if port:
        body["port"] = port
    if ttl:
        body["ttl"] = f"{ttl}s"
    spec = SandboxSpec.model_validate(
        {"apiVersion": "reconciler/v1", "kind": "Sandbox", "metadata": {"name": name}, "spec": body}
    )
    return LoadedSpec(path=specs_dir / f"{name}.yaml", rel=f"{name}.yaml", spec=spec, uploads=())


def observed_sandbox(loaded: LoadedSpec, instance: str, created_at: int, state: str = "running",
                     index: int = 0, image_id: str = IMAGE_ID) -> ObservedSandbox:
    """The container the engine would report for ``loaded``, matching its config hash."""
    want = desired_sandbox(loaded, instance, image_id)
    status = "Up 5 minutes" if state == "running" else "Exited (1) 3 seconds ago"
    return ObservedSandbox(
        name=loaded.name,
        container_id=f"{index:012x}" + "c" * 52,
        container_name=want.container_name,
        state=state,
        labels=want.labels(created_at),
        image=loaded.spec.spec.image,
        image_id=image_id,
        status=status,
        exit_code=None if state == "running" else 1,
        created=float(created_at),
        ip=f"10.213.{index // 250}.{index % 250 + 2}" if state == "running" else None,
    )


def world(n: int, now: float | None = None, instance: str = "bench",
          specs_dir: Path = Path("/specs")) -> Snapshot:
    """A snapshot of ``n`` sandboxes: 60% ready, 10% each starting, outdated, stopped and pending."""
    now = time.time() if now is None else now
    settings = Settings(specs=specs_dir, instance=instance)
    specs: dict[str, LoadedSpec] = {}
    sandboxes: dict[str, ObservedSandbox] = {}
    ready: set[str] = set()
    usage: dict[str, Usage] = {}
    for i in range(n):
        name = f"sb-{i:04d}"
        loaded = loaded_spec(name, specs_dir, ttl=3600 + i)
        specs[name] = loaded
        kind = i % 10
        if kind == 9:
            continue  # pending: spec written, no container yet
        created = int(now) - 60 * (i % 50)
        if kind == 8:
            sandboxes[name] = observed_sandbox(loaded, instance, created, "exited", i)
            continue
        if kind == 7:  # outdated: the spec changed since the container was made
            older = loaded_spec(name, specs_dir, ttl=3600 + i, env={"V": "1"})
            sb = observed_sandbox(older, instance, created, "running", i)
        else:
            sb = observed_sandbox(loaded, instance, created, "running", i)
        sandboxes[name] = sb
        if kind != 6:
            ready.add(name)
        usage[sb.container_id] = Usage(cpu_percent=0.1 * (i % 30), memory_bytes=(2 + i % 7) * 1024 * 1024)
    desired = Desired(specs=specs)
    observed = Observed(instance=instance, sandboxes=sandboxes, images={IMAGE: IMAGE_ID})
    plan = compute_plan(desired, observed)
    return Snapshot(taken_at=now, settings=settings, desired=desired, observed=observed, plan=plan,
                    ready=frozenset(ready), usage=usage)


def table_response_seconds(n: int, repeat: int = 5) -> list[float]:
    """Wall time of building and serialising the page's ``/api/overview`` body for ``n`` sandboxes.

    The snapshot is built once (its cost is Docker's, measured elsewhere); what
    is timed is the dashboard's own work per refresh: rows, plan, JSON."""
    from .readmodel import overview

    snapshot = world(n)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        overview(snapshot).model_dump_json()
        samples.append(time.perf_counter() - started)
    return samples
