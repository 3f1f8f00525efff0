"""The plain Docker engine: the only module that imports ``docker``.

Observation is one label-filtered list call per kind (containers, networks,
volumes) plus one image list: never a per-container inspect. Nothing is
pulled: a missing image is a permanent error for that sandbox.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any, Iterable, Iterator

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from . import labels as L
from .container_config import DesiredSandbox
from .engine import EngineError
from .observed import Observed, ObservedNetwork, ObservedSandbox, ObservedVolume
from .uploads import build_tar

# Docker's default address pools hold ~30 bridge networks; a sandbox fleet
# needs one network each, so sandboxes get small subnets from their own pool.
DEFAULT_SUBNET_POOL = "10.213.0.0/16"
SUBNET_PREFIX = 28
LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}


def connect(timeout: int = 60, pool_size: int = 32) -> docker.DockerClient:
    """A client from the environment (DOCKER_HOST or the CLI context), or a clear error."""
    try:
        client = docker.from_env(timeout=timeout, max_pool_size=pool_size)
        client.api.ping()
        return client
    except DockerException as exc:
        raise EngineError(f"cannot reach the Docker engine: {exc}", permanent=True) from exc


def _exit_code(status: str) -> int | None:
    # The list API has no exit code field; its Status says "Exited (137) 3 seconds ago".
    if status.startswith("Exited (") and ")" in status:
        raw = status[len("Exited (") : status.index(")")]
        return int(raw) if raw.lstrip("-").isdigit() else None
    return None


def normalize_image(ref: str) -> list[str]:
    """The spellings under which the engine may list ``ref``."""
    names = [ref]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in ref:
        names.append(ref + ":latest")
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        for name in list(names):
            if name.startswith(prefix):
                names.append(name[len(prefix) :])
    return names


class DockerEngine:
    """Engine over one Docker daemon, scoped to one reconciler instance."""

    def __init__(
        self,
        instance: str,
        client: docker.DockerClient | None = None,
        subnet_pool: str = DEFAULT_SUBNET_POOL,
    ) -> None:
        self.instance = instance
        self.client = client or connect()
        self.api = self.client.api
        self.subnet_pool = ipaddress.ip_network(subnet_pool)
        self._network_lock = threading.Lock()

    # --- observe -------------------------------------------------------------

    def observe(self, images: Iterable[str] = ()) -> Observed:
        filters = {"label": L.selector(self.instance)}
        try:
            containers = self.api.containers(all=True, filters=filters)
            networks = self.api.networks(filters=filters)
            volumes = (self.api.volumes(filters=filters) or {}).get("Volumes") or []
            image_ids = self._resolve_images(images)
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot list Docker objects: {exc}") from exc

        sandboxes: dict[str, ObservedSandbox] = {}
        strays: list[ObservedSandbox] = []
        for raw in sorted(containers, key=lambda c: c.get("Created", 0)):
            labels = raw.get("Labels") or {}
            if not L.is_owned(labels, self.instance):
                continue  # belt and braces: the filter already did this
            observed = self._to_sandbox(raw, labels)
            if labels.get(L.KIND, "sandbox") != "sandbox":
                continue  # pool members and others are another module's business
            if not observed.name or observed.name in sandboxes:
                strays.append(observed)
            else:
                sandboxes[observed.name] = observed
        nets = {}
        for raw in networks:
            labels = raw.get("Labels") or {}
            if L.is_owned(labels, self.instance):
                nets[raw["Name"]] = ObservedNetwork(
                    name=raw["Name"],
                    network_id=raw["Id"],
                    sandbox=labels.get(L.SANDBOX),
                    internal=bool(raw.get("Internal")),
                )
        vols = {}
        for raw in volumes:
            labels = raw.get("Labels") or {}
            if L.is_owned(labels, self.instance):
                vols[raw["Name"]] = ObservedVolume(name=raw["Name"], sandbox=labels.get(L.SANDBOX))
        return Observed(
            instance=self.instance,
            sandboxes=sandboxes,
            strays=tuple(strays),
            networks=nets,
            volumes=vols,
            images=image_ids,
        )

    def _to_sandbox(self, raw: dict[str, Any], labels: dict[str, str]) -> ObservedSandbox:
        own_net = L.network_name(self.instance, labels.get(L.SANDBOX, ""))
        nets = (raw.get("NetworkSettings") or {}).get("Networks") or {}
        ip = (nets.get(own_net) or {}).get("IPAddress") or None
        names = raw.get("Names") or ["/"]
        status = raw.get("Status", "")
        return ObservedSandbox(
            name=labels.get(L.SANDBOX, ""),
            container_id=raw["Id"],
            container_name=names[0].lstrip("/"),
            state=raw.get("State", ""),
            labels=labels,
            image=raw.get("Image", ""),
            image_id=raw.get("ImageID", ""),
            status=status,
            exit_code=_exit_code(status),
            created=float(raw.get("Created", 0)),
            ip=ip,
        )

    def _resolve_images(self, refs: Iterable[str]) -> dict[str, str]:
        wanted = set(refs)
        if not wanted:
            return {}
        by_tag: dict[str, str] = {}
        for image in self.api.images():
            for tag in image.get("RepoTags") or []:
                by_tag[tag] = image["Id"]
            by_tag[image["Id"]] = image["Id"]
        out = {}
        for ref in wanted:
            for name in normalize_image(ref):
                if name in by_tag:
                    out[ref] = by_tag[name]
                    break
        return out

    # --- create / start / remove --------------------------------------------

    def create(self, want: DesiredSandbox, created_at: int) -> str:
        spec = want.spec
        self._ensure_network(want)
        mounts = []
        for vol in spec.volumes:
            name = want.volume_name(vol.name)
            self._ensure_volume(name, want.name)
            mounts.append(Mount(target=vol.target, source=name, type="volume"))
        memory = spec.resources.memory
        host_config = self.api.create_host_config(
            init=True,
            mem_limit=memory,
            memswap_limit=memory,  # equal to the memory limit: no swap
            nano_cpus=int(spec.resources.cpus * 1e9),
            pids_limit=spec.resources.pids,
            cap_drop=["ALL"],
            cap_add=want.capabilities,
            security_opt=["no-new-privileges:true"],
            privileged=False,
            network_mode=want.network_name,
            mounts=mounts,
            log_config=LOG_CONFIG,
            ipc_mode="private",
        )
        networking = self.api.create_networking_config(
            {want.network_name: self.api.create_endpoint_config()}
        )
        command = spec.command
        if isinstance(command, str):
            command = ["/bin/sh", "-c", command]
        kwargs: dict[str, Any] = dict(
            image=want.image_id,
            command=command,
            hostname=want.hostname,
            user=spec.user,
            environment=dict(spec.env),
            working_dir=spec.workdir,
            labels=want.labels(created_at),
            name=want.container_name,
            host_config=host_config,
            networking_config=networking,
            detach=True,
        )
        container_id = self._create_container(kwargs, want)
        try:
            if want.loaded.uploads:
                self.api.put_archive(container_id, "/", build_tar(want.loaded.uploads))
            self.api.start(container_id)
        except (APIError, DockerException) as exc:
            # A half-made sandbox (no files, never started) is worse than none.
            self._force_remove(container_id)
            raise EngineError(f"cannot start {want.name}: {_explain(exc)}") from exc
        return container_id

    def _create_container(self, kwargs: dict[str, Any], want: DesiredSandbox) -> str:
        for attempt in range(2):
            try:
                return self.api.create_container(**kwargs)["Id"]
            except ImageNotFound as exc:
                raise EngineError(f'image "{want.spec.image}" is not present on the engine', permanent=True) from exc
            except APIError as exc:
                if exc.status_code == 409 and attempt == 0 and self._clear_name(want.container_name):
                    continue
                permanent = exc.status_code is not None and 400 <= exc.status_code < 500
                raise EngineError(f"cannot create {want.name}: {_explain(exc)}", permanent=permanent) from exc
        raise AssertionError("unreachable")

    def _clear_name(self, name: str) -> bool:
        """Remove a leftover container holding our name, only if this instance owns it."""
        try:
            info = self.api.inspect_container(name)
        except NotFound:
            return True
        labels = (info.get("Config") or {}).get("Labels") or {}
        if not L.is_owned(labels, self.instance):
            raise EngineError(
                f'a container named "{name}" exists and is not owned by instance '
                f'"{self.instance}"; rename or remove it yourself',
                permanent=True,
            )
        self._force_remove(info["Id"])
        return True

    def _force_remove(self, container_id: str, volumes: bool = False) -> None:
        try:
            self.api.remove_container(container_id, force=True, v=volumes)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise EngineError(f"cannot remove container: {_explain(exc)}") from exc

    def start(self, have: ObservedSandbox) -> None:
        try:
            if have.state == "paused":
                self.api.unpause(have.container_id)
            else:
                self.api.start(have.container_id)
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot start {have.name}: {_explain(exc)}") from exc

    def remove(self, have: ObservedSandbox, remove_network: bool, remove_volumes: bool) -> None:
        if not L.is_owned(dict(have.labels), self.instance):
            raise EngineError(f"refusing to remove {have.container_name}: not owned", permanent=True)
        self._force_remove(have.container_id)
        if remove_network and have.name:
            self.remove_network(L.network_name(self.instance, have.name))
        if remove_volumes and have.name:
            filters = {"label": [*L.selector(self.instance), f"{L.SANDBOX}={have.name}"]}
            for vol in (self.api.volumes(filters=filters) or {}).get("Volumes") or []:
                self.remove_volume(vol["Name"])

    def remove_network(self, name: str) -> None:
        try:
            info = self.api.inspect_network(name)
        except NotFound:
            return
        if not L.is_owned(info.get("Labels"), self.instance):
            return
        for attempt in range(20):
            try:
                self.api.remove_network(info["Id"])
                return
            except NotFound:
                return
            except APIError as exc:
                # "has active endpoints" right after a container removal: wait it out.
                if "active endpoints" in str(exc) and attempt < 19:
                    time.sleep(0.05)
                    continue
                raise EngineError(f"cannot remove network {name}: {_explain(exc)}") from exc

    def remove_volume(self, name: str) -> None:
        try:
            info = self.api.inspect_volume(name)
        except NotFound:
            return
        if not L.is_owned(info.get("Labels"), self.instance):
            return
        try:
            self.api.remove_volume(name, force=True)
        except NotFound:
            pass
        except APIError as exc:
            raise EngineError(f"cannot remove volume {name}: {_explain(exc)}") from exc

    # --- networks and volumes -------------------------------------------------

    def _ensure_network(self, want: DesiredSandbox) -> None:
        internal = not want.spec.egress
        with self._network_lock:
            try:
                info = self.api.inspect_network(want.network_name)
            except NotFound:
                info = None
            if info is not None:
                if not L.is_owned(info.get("Labels"), self.instance):
                    raise EngineError(
                        f'a network named "{want.network_name}" exists and is not owned by this instance',
                        permanent=True,
                    )
                if bool(info.get("Internal")) == internal:
                    return
                self.remove_network(want.network_name)  # egress changed
            self._create_network(want.network_name, want.name, internal)

    def _create_network(self, name: str, sandbox: str, internal: bool) -> None:
        labels = {**L.owner_labels(self.instance), L.SANDBOX: sandbox}
        used = self._used_subnets()
        for subnet in self.subnet_pool.subnets(new_prefix=SUBNET_PREFIX):
            if any(subnet.overlaps(u) for u in used):
                continue
            hosts = subnet.hosts()
            gateway = str(next(hosts))
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)]
            )
            try:
                self.api.create_network(
                    name, driver="bridge", internal=internal, labels=labels, ipam=ipam, check_duplicate=True
                )
                return
            except APIError as exc:
                if "overlaps" in str(exc) or "Pool overlaps" in str(exc):
                    used.append(subnet)  # taken by someone else (another instance, another tool)
                    continue
                raise EngineError(f"cannot create network {name}: {_explain(exc)}") from exc
        raise EngineError(f"no free /{SUBNET_PREFIX} subnet left in {self.subnet_pool}", permanent=True)

    def _used_subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        used = []
        for net in self.api.networks():
            for cfg in ((net.get("IPAM") or {}).get("Config")) or []:
                if cfg.get("Subnet"):
                    try:
                        used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
                    except ValueError:
                        pass
        return used

    def _ensure_volume(self, name: str, sandbox: str) -> None:
        try:
            info = self.api.inspect_volume(name)
            if not L.is_owned(info.get("Labels"), self.instance):
                raise EngineError(f'a volume named "{name}" exists and is not owned by this instance', permanent=True)
            return
        except NotFound:
            pass
        self.api.create_volume(name, labels={**L.owner_labels(self.instance), L.SANDBOX: sandbox})

    # --- agent operations -------------------------------------------------------

    def logs(self, have: ObservedSandbox, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
        return self.api.logs(
            have.container_id, stream=True, follow=follow, tail=tail if tail is not None else "all"
        )


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc)
