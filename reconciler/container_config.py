"""The container a spec asks for, and the config hash that decides recreates.

Like docker-compose's ``config-hash`` label: sha256 of canonical JSON of every
field that needs a new container, plus the resolved image id (a rebuilt
``:latest`` recreates) and the uploaded files' digests (an edited upload
recreates). ``ttl`` and ``health`` are not in it: they change no container.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import labels as L
from .loader import LoadedSpec
from .spec import BASE_CAPABILITIES


@dataclass(frozen=True)
class DesiredSandbox:
    """Everything the executor needs to create one sandbox; built purely from the spec."""

    name: str
    loaded: LoadedSpec
    instance: str
    image_id: str
    hostname: str
    config: dict[str, Any]
    config_hash: str

    @property
    def spec(self):  # noqa: ANN201 - SandboxBody
        return self.loaded.spec.spec

    @property
    def container_name(self) -> str:
        return L.container_name(self.instance, self.name)

    @property
    def network_name(self) -> str:
        return L.network_name(self.instance, self.name)

    def volume_name(self, volume: str) -> str:
        return L.volume_name(self.instance, self.name, volume)

    @property
    def capabilities(self) -> list[str]:
        return sorted(set(BASE_CAPABILITIES) | set(self.spec.capabilities))

    def labels(self, created_at: int) -> dict[str, str]:
        """Container labels: ownership, identity, routing, hash and user labels."""
        spec = self.spec
        out = {
            **L.owner_labels(self.instance),
            L.KIND: "sandbox",
            L.SANDBOX: self.name,
            L.CONFIG_HASH: self.config_hash,
            L.CONFIG: canonical_json(self.config),
            L.SPEC_FILE: self.loaded.rel,
            L.HOSTNAME: self.hostname,
            L.CREATED_AT: str(created_at),
        }
        if spec.port is not None:
            out[L.PORT] = str(spec.port)
        if spec.health is not None:
            out[L.HEALTH_PATH] = spec.health.path
        if spec.ttl is not None:
            out[L.TTL] = str(spec.ttl)
        for key, value in self.loaded.spec.metadata.labels.items():
            out[L.USER_PREFIX + key] = value
        return out


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def recreate_fields(loaded: LoadedSpec, hostname: str) -> dict[str, Any]:
    """The fields whose change needs a new container, in a stable JSON shape."""
    spec = loaded.spec.spec
    fields = {
        "image": spec.image,
        "command": spec.command,
        "workdir": spec.workdir,
        "env": dict(sorted(spec.env.items())),
        "uploads": [{"target": u.target, "digest": u.digest} for u in loaded.uploads],
        "volumes": [{"name": v.name, "target": v.target} for v in spec.volumes],
        "port": spec.port,
        "hostname": hostname,
        "resources": {
            "memory": spec.resources.memory,
            "cpus": spec.resources.cpus,
            "pids": spec.resources.pids,
        },
        "user": spec.user,
        "egress": spec.egress,
        "capabilities": list(spec.capabilities),
        "labels": dict(sorted(loaded.spec.metadata.labels.items())),
    }
    if spec.placement is not None and spec.placement.constraints:
        # Only when set, so specs without it keep their hash. The docker engine
        # ignores placement, but a changed placement must move a swarm sandbox.
        fields["placement"] = list(spec.placement.constraints)
    return fields


def config_hash(fields: dict[str, Any], image_id: str) -> str:
    payload = canonical_json({"fields": fields, "image_id": image_id})
    return hashlib.sha256(payload.encode()).hexdigest()


def desired_sandbox(loaded: LoadedSpec, instance: str, image_id: str) -> DesiredSandbox:
    """The container ``loaded`` asks for, with its hash (``image_id`` from the engine)."""
    key = ("desired", instance, image_id)
    hit = loaded.memo.get(key)  # the same spec version on every resync: hash it once
    if hit is not None:
        return hit
    name = loaded.name
    hostname = loaded.spec.spec.hostname or L.default_hostname(instance, name)
    fields = recreate_fields(loaded, hostname)
    want = loaded.memo[key] = DesiredSandbox(
        name=name,
        loaded=loaded,
        instance=instance,
        image_id=image_id,
        hostname=hostname,
        config=fields,
        config_hash=config_hash(fields, image_id),
    )
    return want


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Which top-level spec fields differ, for the plan's ``-/+`` cause."""
    if not old:
        return []
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]
