"""The plain Docker engine: the only module that imports ``docker``.

Observation is one label-filtered list call per kind (containers, networks,
volumes) plus one image list: never a per-container inspect. Nothing is
pulled: a missing image is a permanent error for that sandbox.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from . import labels as L
from . import pools
from .container_config import DesiredSandbox
from .engine import EngineError, EngineEvent, ExecState, PathStat
from .observed import MemberNetwork, Observed, ObservedMember, ObservedNetwork, ObservedSandbox, ObservedVolume
from .uploads import build_tar

if TYPE_CHECKING:
    from .claims import ClaimBook

# Docker's default address pools hold ~30 bridge networks; a sandbox fleet
# needs one network each, so sandboxes get small subnets from their own pool.
DEFAULT_SUBNET_POOL = "10.213.0.0/16"
SUBNET_PREFIX = 28
LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
# What the watch loop reacts to: anything that can make a container differ from its spec.
WATCHED_ACTIONS = ("create", "start", "die", "oom", "kill", "stop", "destroy", "pause", "unpause")


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
        claims: ClaimBook | None = None,
    ) -> None:
        self.instance = instance
        self.client = client or connect()
        self.api = self.client.api
        self.subnet_pool = ipaddress.ip_network(subnet_pool)
        self._network_lock = threading.Lock()
        self._lister = ThreadPoolExecutor(max_workers=4, thread_name_prefix="observe")
        # Warm pools: where claims are recorded (None: members can be made, not claimed).
        self.claims = claims
        self._image_config: dict[str, tuple[list[str] | None, list[str] | None]] = {}

    # --- observe -------------------------------------------------------------

    def observe(self, images: Iterable[str] = ()) -> Observed:
        filters = {"label": L.selector(self.instance)}
        try:
            # The four lists at once: the daemon answers them in parallel (300
            # sandboxes: ~45 ms one after the other, ~30 ms together).
            listed = [
                self._lister.submit(self.api.containers, all=True, filters=filters),
                self._lister.submit(self.api.networks, filters=filters),
                self._lister.submit(self.api.volumes, filters=filters),
                self._lister.submit(self._resolve_images, images),
            ]
            containers, networks, volumes, image_ids = (f.result() for f in listed)
            volumes = (volumes or {}).get("Volumes") or []
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot list Docker objects: {exc}") from exc

        sandboxes: dict[str, ObservedSandbox] = {}
        strays: list[ObservedSandbox] = []
        member_boxes: list[ObservedSandbox] = []
        for raw in sorted(containers, key=lambda c: c.get("Created", 0)):
            labels = raw.get("Labels") or {}
            if not L.is_owned(labels, self.instance):
                continue  # belt and braces: the filter already did this
            kind = labels.get(L.KIND, "sandbox")
            if kind == "pool-member":
                member_boxes.append(self._to_sandbox(raw, labels, pools.member_network(self.instance, labels)))
                continue
            observed = self._to_sandbox(raw, labels)
            if kind != "sandbox":
                continue  # other kinds are another module's business
            if not observed.name or observed.name in sandboxes:
                strays.append(observed)
            else:
                sandboxes[observed.name] = observed
        members = self._present_members(member_boxes, sandboxes, strays)
        nets = {}
        member_nets = {}
        for raw in networks:
            labels = raw.get("Labels") or {}
            if L.is_owned(labels, self.instance) and labels.get(L.KIND) == "pool-member":
                member_nets[raw["Name"]] = MemberNetwork(
                    raw["Name"], raw["Id"], labels.get(L.POOL, ""), docker_time(raw.get("Created", ""))
                )
            elif L.is_owned(labels, self.instance):
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
            members=tuple(members),
            member_networks=member_nets,
            pool_support=True,
        )

    def _present_members(
        self, boxes: list[ObservedSandbox], sandboxes: dict[str, ObservedSandbox], strays: list[ObservedSandbox]
    ) -> list[ObservedMember]:
        """Claimed members join ``sandboxes`` as the sandbox they became; the idle ones are returned."""
        if not boxes:
            return []
        claims = self.claims.read() if self.claims is not None else {}
        idle = []
        for box in boxes:
            sandbox = L.claimed_sandbox(self.instance, box.container_name)
            if sandbox is None:
                labels = box.labels
                idle.append(ObservedMember(
                    pool=labels.get(L.POOL, ""), member=labels.get(L.MEMBER, ""), container_id=box.container_id,
                    container_name=box.container_name, state=box.state, labels=labels, image_id=box.image_id,
                    ip=box.ip,
                ))
                continue
            shown = pools.present_claimed(box, sandbox, claims.get(sandbox))
            if sandbox in sandboxes:
                strays.append(shown)
            else:
                sandboxes[sandbox] = shown
        if self.claims is not None:
            alive = {box.container_id for box in boxes}
            stale = {c.sandbox: c.container_id for c in claims.values() if c.container_id not in alive}
            if stale:
                self.claims.prune(stale)
        return idle

    def _to_sandbox(self, raw: dict[str, Any], labels: dict[str, str], network: str | None = None) -> ObservedSandbox:
        own_net = network or L.network_name(self.instance, labels.get(L.SANDBOX, ""))
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
        self._wait_network_released(want.network_name)
        mounts = []
        for vol in spec.volumes:
            name = want.volume_name(vol.name)
            self._ensure_volume(name, want.name)
            mounts.append(Mount(target=vol.target, source=name, type="volume"))
        host_config, networking = self._hardened(spec.resources, want.capabilities, want.network_name, mounts)
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

    def _hardened(self, resources: Any, capabilities: list[str], network: str, mounts: list[Mount]) -> tuple[Any, Any]:
        """Host and networking config every container gets: init, limits, hardening, its own network."""
        memory = resources.memory
        host_config = self.api.create_host_config(
            init=True,
            mem_limit=memory,
            memswap_limit=memory,  # equal to the memory limit: no swap
            nano_cpus=int(resources.cpus * 1e9),
            pids_limit=resources.pids,
            cap_drop=["ALL"],
            cap_add=capabilities,
            security_opt=["no-new-privileges:true"],
            privileged=False,
            network_mode=network,
            mounts=mounts,
            log_config=LOG_CONFIG,
            ipc_mode="private",
        )
        networking = self.api.create_networking_config({network: self.api.create_endpoint_config()})
        return host_config, networking

    # --- warm pools (pools.py) ------------------------------------------------

    def create_member(self, pool: pools.DesiredPool, created_at: int) -> str:
        """Create and start one idle member of ``pool``, on a network of its own; returns its container id."""
        member = secrets.token_hex(3)
        name = pool.member_name(member)
        spec = pool.spec
        labels = pool.labels(member, created_at)
        net_labels = {k: labels[k] for k in (L.KIND, L.POOL, L.MEMBER)}
        with self._network_lock:
            self._create_network(name, None, not spec.egress, net_labels)
        host_config, networking = self._hardened(spec.resources, pool.capabilities, name, [])
        container_id = None
        try:
            container_id = self.api.create_container(
                image=pool.image_id, entrypoint=["/bin/sh", "-c"], command=[pools.IDLE_SCRIPT],
                hostname=f"{pool.name}-{member}", environment=dict(spec.env), working_dir=spec.workdir,
                labels=labels, name=name, host_config=host_config, networking_config=networking, detach=True,
                stdin_open=True,  # the claim writes the command there
            )["Id"]
            self.api.put_archive(container_id, "/", _claim_dir_tar())
            self.api.start(container_id)
        except (APIError, DockerException) as exc:
            if container_id is not None:
                self._force_remove(container_id)
            self.remove_network(name)
            permanent = isinstance(exc, ImageNotFound)
            raise EngineError(f"cannot start a member of pool {pool.name}: {_explain(exc)}", permanent=permanent) from exc
        return container_id

    def remove_member(self, member: ObservedMember) -> None:
        """Remove an idle member and its network."""
        if not L.is_owned(dict(member.labels), self.instance):
            raise EngineError(f"refusing to remove {member.container_name}: not owned", permanent=True)
        self._force_remove(member.container_id)
        self.remove_network(member.container_name)

    def claim(self, member: ObservedMember, want: DesiredSandbox, created_at: int) -> str:
        """Turn idle ``member`` into sandbox ``want``: record, rename, upload, start its command.

        Crash-safe by order: the record comes first and is complete last; a member
        renamed without a complete record is shown as an interrupted create and
        replaced (pools.present_claimed). On an error the member is removed."""
        if self.claims is None:
            raise EngineError("claims need a state store (this engine has none)", permanent=True)
        spec = want.spec
        cid = member.container_id
        self.claims.begin(want.name, cid, want.labels(created_at))
        try:
            self._rename(cid, want.container_name)
            if want.loaded.uploads:
                self.api.put_archive(cid, "/", build_tar(want.loaded.uploads))
            entrypoint, cmd = self._entrypoint_and_cmd(member.image_id)
            argv = pools.command_argv(spec.command, entrypoint, cmd)
            if not argv:
                raise EngineError(f'image "{spec.image}" has no command and the spec gives none', permanent=True)
            self._write_stdin(cid, pools.encode_line(pools.claim_script(argv)))
        except (APIError, DockerException, OSError, EngineError) as exc:
            self._force_remove(cid)
            self.remove_network(member.container_name)
            self.claims.forget(want.name, cid)
            if isinstance(exc, EngineError):
                raise
            raise EngineError(f"cannot claim {member.container_name} for {want.name}: {_explain(exc)}") from exc
        self.claims.finish(want.name, cid)
        return cid

    def _write_stdin(self, container_id: str, data: bytes) -> None:
        """Write to a running container's stdin (an attach: dockerd copies it into the pipe, no process starts)."""
        sock = self.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(data)
        finally:
            for step in (lambda: raw.shutdown(socket.SHUT_WR), sock.close):
                try:
                    step()
                except OSError:
                    pass

    def _rename(self, container_id: str, name: str) -> None:
        for attempt in range(2):
            try:
                self.api.rename(container_id, name)
                return
            except APIError as exc:
                if exc.status_code == 409 and attempt == 0 and self._clear_name(name):
                    continue  # a leftover container of ours holds the name
                raise

    def _entrypoint_and_cmd(self, image_id: str) -> tuple[list[str] | None, list[str] | None]:
        hit = self._image_config.get(image_id)
        if hit is None:
            config = (self.api.inspect_image(image_id).get("Config") or {})
            hit = self._image_config[image_id] = (config.get("Entrypoint"), config.get("Cmd"))
        return hit

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
        if have.state != "paused":
            self._wait_network_released(
                pools.member_network(self.instance, have.labels) or L.network_name(self.instance, have.name)
            )
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
        member_net = pools.member_network(self.instance, have.labels)
        if member_net:  # a claimed pool member: its network was made for it, it goes with it
            self.remove_network(member_net)
            if self.claims is not None:
                self.claims.forget(have.name, have.container_id)
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

    def _wait_network_released(self, name: str, timeout: float = 10.0) -> None:
        """Wait until no endpoint is left on the sandbox's own network.

        Docker 20.10 (Debian's engine) deadlocks its whole network controller
        when a container joins a network while an endpoint of that same network
        is still being released (moby#46661, fixed only in 20.10.27): exactly
        what a restart right after a crash, or a recreate right after a removal,
        does. The network is the sandbox's alone, so "no endpoints" means the
        old container's release has finished."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.api.inspect_network(name)
            except NotFound:
                return
            except APIError:
                return  # not ours to diagnose here: create/start reports it
            if not info.get("Containers") or time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def _ensure_network(self, want: DesiredSandbox) -> None:
        internal = not want.spec.egress
        with self._network_lock:
            try:
                info = self.api.inspect_network(want.network_name)
            except NotFound:
                info = None
            except APIError as exc:
                if "ambiguous" not in str(exc):
                    raise EngineError(f"cannot inspect network {want.network_name}: {_explain(exc)}") from exc
                info = self._dedupe_network(want.network_name)
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

    def _dedupe_network(self, name: str) -> dict[str, Any] | None:
        """Two networks of one name: a create that a killed reconciler had already sent
        raced the next one's (Docker 20.10's duplicate check is best effort). Keep one
        of ours, the one in use if any, and remove our empty others."""
        same = [n for n in self.api.networks(names=[name]) if n.get("Name") == name]
        ours = [n for n in same if L.is_owned(n.get("Labels"), self.instance)]
        if len(ours) < len(same):
            raise EngineError(f'a network named "{name}" exists and is not owned by this instance', permanent=True)
        ours.sort(key=lambda n: (not n.get("Containers"), n.get("Created", "")))
        for extra in ours[1:]:
            try:
                self.api.remove_network(extra["Id"])
            except APIError:
                pass  # in use after all: the next pass sees it again
        return self.api.inspect_network(ours[0]["Id"]) if ours else None

    def _create_network(
        self, name: str, sandbox: str | None, internal: bool, extra: dict[str, str] | None = None
    ) -> None:
        labels = {**L.owner_labels(self.instance), **({L.SANDBOX: sandbox} if sandbox else {}), **(extra or {})}
        used = self._used_subnets()
        for subnet in free_subnets(self.subnet_pool, SUBNET_PREFIX, used):
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
                    continue  # taken by someone else (another instance, another tool): try the next
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

    def exec_create(
        self, have: ObservedSandbox, cmd: list[str], workdir: str | None = None,
        env: dict[str, str] | None = None, user: str | None = None,
    ) -> str:
        try:
            created = self.api.exec_create(
                have.container_id, cmd, stdout=True, stderr=True, stdin=False, tty=False,
                environment=env or None, workdir=workdir, user=user or "",
            )
        except NotFound as exc:
            raise EngineError(f"sandbox {have.name} is gone", permanent=True) from exc
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot run a command in {have.name}: {_explain(exc)}", permanent=True) from exc
        return created["Id"]

    def exec_attach(self, exec_id: str) -> DockerExecStream:
        try:
            sock = self.api.exec_start(exec_id, socket=True)
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot start the command: {_explain(exc)}") from exc
        # The client's read timeout would cut off a command that is quiet for a minute.
        self.api._disable_socket_timeout(sock)
        return DockerExecStream(sock)

    def exec_detach(self, exec_id: str) -> None:
        try:
            self.api.exec_start(exec_id, detach=True)
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot start the command: {_explain(exc)}") from exc

    def exec_inspect(self, exec_id: str) -> ExecState:
        try:
            info = self.api.exec_inspect(exec_id)
        except (APIError, DockerException) as exc:
            raise EngineError(f"cannot inspect the command: {_explain(exc)}") from exc
        return ExecState(running=bool(info.get("Running")), exit_code=info.get("ExitCode"))

    def stat_path(self, have: ObservedSandbox, path: str) -> PathStat | None:
        # HEAD on the archive endpoint: the stat header without the archive.
        url = self.api._url("/containers/{0}/archive", have.container_id)
        try:
            res = self.api.head(url, params={"path": path})
        except (DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot look at {path} in {have.name}: {exc}") from exc
        if res.status_code == 404:
            return None
        header = res.headers.get("X-Docker-Container-Path-Stat")
        if res.status_code < 400 and header:
            return _path_stat(docker.utils.decode_json_header(header))
        # A HEAD answer has no body: ask again with GET for the engine's explanation.
        try:
            chunks, _ = self.api.get_archive(have.container_id, path)
            chunks.close()
        except NotFound:
            return None
        except (APIError, DockerException, requests.RequestException) as exc:
            if "not a directory" in str(exc):
                return None  # a parent is a file: no such path
            raise EngineError(f"cannot look at {path} in {have.name}: {_explain(exc)}") from exc
        raise EngineError(f"cannot look at {path} in {have.name}: HTTP {res.status_code}")

    def put_archive(self, have: ObservedSandbox, path: str, data: Iterable[bytes]) -> None:
        try:
            self.api.put_archive(have.container_id, path, data)
        except NotFound as exc:
            raise EngineError(f"cannot copy into {have.name}: {_explain(exc)}", permanent=True) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot copy into {have.name}: {_explain(exc)}") from exc

    def get_archive(self, have: ObservedSandbox, path: str) -> tuple[Iterator[bytes], PathStat]:
        try:
            chunks, stat = self.api.get_archive(have.container_id, path, chunk_size=1 << 16)
        except NotFound as exc:
            raise EngineError(f"no {path} in {have.name}", permanent=True) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot copy from {have.name}: {_explain(exc)}") from exc
        return _guarded(chunks, f"copying from {have.name}"), _path_stat(stat or {})

    def events(self, since: float | None = None) -> DockerEventStream:
        """Events of this instance's containers; ``since`` replays from that time
        (after a daemon restart the stream ends and must be reopened)."""
        filters = {"type": "container", "label": L.selector(self.instance), "event": list(WATCHED_ACTIONS)}
        try:
            # The API takes "seconds.nanoseconds"; events at ``since`` itself may come twice.
            raw = self.api.events(
                since=f"{since:.9f}" if since is not None else None, filters=filters, decode=True
            )
        except (DockerException, OSError, requests.RequestException) as exc:
            raise EngineError(f"cannot follow Docker events: {exc}") from exc
        return DockerEventStream(raw)


class DockerEventStream:
    """Container events of one instance, as ``EngineEvent`` values."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __iter__(self) -> Iterator[EngineEvent]:
        try:
            for item in self._raw:
                event = _to_event(item)
                if event is not None:
                    yield event
        except (DockerException, OSError, ValueError, requests.RequestException):
            return  # the daemon went away or the stream was closed: the caller reconnects

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:  # noqa: BLE001 - closing a dead stream must not fail the caller
            pass


def _to_event(item: Any) -> EngineEvent | None:
    if not isinstance(item, dict) or item.get("Type", "container") != "container":
        return None
    actor = item.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    action = str(item.get("Action") or item.get("status") or "")
    container_id = str(actor.get("ID") or item.get("id") or "")
    if not action or not container_id:
        return None
    nanos = item.get("timeNano")
    when = nanos / 1e9 if isinstance(nanos, int) else float(item.get("time") or time.time())
    code = attrs.get("exitCode")
    return EngineEvent(
        action=action.split(":", 1)[0],  # "exec_start: sh" style actions keep only their verb
        container_id=container_id,
        sandbox=attrs.get(L.SANDBOX),
        time=when,
        exit_code=int(code) if isinstance(code, str) and code.lstrip("-").isdigit() else None,
        signal=attrs.get("signal"),
    )


def free_subnets(
    pool: ipaddress.IPv4Network | ipaddress.IPv6Network,
    prefix: int,
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> Iterator[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The ``/prefix`` subnets of ``pool`` that overlap nothing in ``used``, lowest first.

    One sweep over sorted address ranges: testing each candidate against every
    used network cost 60 ms of CPU for the 301st sandbox network (O(n^2) over a
    fleet), under the lock that serialises network creation."""
    size = 1 << (pool.max_prefixlen - prefix)
    first, last = int(pool.network_address), int(pool.broadcast_address)
    taken = sorted(
        (int(u.network_address), int(u.broadcast_address))
        for u in used
        if u.version == pool.version and int(u.broadcast_address) >= first and int(u.network_address) <= last
    )
    i, reach = 0, -1  # reach: the highest address covered by a taken range that starts at or below lo
    for lo in range(first, last + 1, size):
        hi = lo + size - 1
        while i < len(taken) and taken[i][0] <= hi:
            reach = max(reach, taken[i][1])
            i += 1
        if reach >= lo:
            continue  # a taken range starting at or below hi reaches into this subnet
        yield ipaddress.ip_network((lo, prefix))


def _claim_dir_tar() -> bytes:
    """A tar of the directory a member's idle shell saves the claimed command in,
    writable whatever user the image runs as (it is the sandbox's own filesystem)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(pools.CLAIM_DIR.lstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o777
        tar.addfile(info)
    return buf.getvalue()


def docker_time(stamp: Any) -> float:
    """Unix seconds of a Docker timestamp (``2026-01-01T10:00:00.123456789Z``); 0.0 if unreadable."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", stamp if isinstance(stamp, str) else "")
    if not match:
        return 0.0
    whole = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp()
    return whole + float(match.group(2) or 0)


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc)


class DockerExecStream:
    """The multiplexed output of an attached exec, read off its raw socket."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        from docker.utils.socket import frames_iter

        try:
            for stream_id, data in frames_iter(self._sock, tty=False):
                if data:
                    yield stream_id, data
        except (OSError, ValueError):
            return  # closed from another thread (a timeout) or the daemon went away

    def close(self) -> None:
        # shutdown() wakes a reader blocked in recv(); close() alone would not.
        raw = getattr(self._sock, "_sock", self._sock)
        for step in (lambda: raw.shutdown(socket.SHUT_RDWR), self._sock.close):
            try:
                step()
            except OSError:
                pass


def _path_stat(raw: dict[str, Any]) -> PathStat:
    return PathStat(
        name=str(raw.get("name") or ""),
        size=int(raw.get("size") or 0),
        mode=int(raw.get("mode") or 0),
        link_target=str(raw.get("linkTarget") or ""),
    )


def _guarded(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    try:
        yield from chunks
    except (DockerException, requests.RequestException, OSError) as exc:
        raise EngineError(f"{what}: {exc}") from exc
