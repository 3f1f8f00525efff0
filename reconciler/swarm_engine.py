"""The Docker Swarm engine: each sandbox is a one-replica service, scheduled by
Swarm itself. With ``docker_engine`` one of the two modules that import ``docker``.

What a sandbox becomes (all labelled with the instance's ownership labels):

- a service ``rc-<instance>-<sandbox>``: one replica, ``endpoint_mode: dnsrr``
  and its port published in host mode on whichever node runs the task (no VIP:
  that needs IPVS; no ingress mesh), limits and a memory reservation, restart
  policy ``any`` after 1 s, placement constraints from the spec;
- a network of its own (internal when ``egress: false``): a swarm-scoped
  *bridge*, made locally (from the node's default address pool) on the node
  that runs the task. Not an overlay: a sandbox is one task and needs no cross-node
  traffic, and joining an overlay (its gossip "bulk sync") left about 1 in 10
  replacement tasks in "preparing" for 30 s here; a bridge also starts a task in
  0.6 s instead of 1.4 s;
- one swarm config per uploaded file (content-addressed, immutable, mounted
  read-only at its target on whichever node runs the task).

Observation is one label-filtered list of services, one task list for them, the
node list, the swarm-scoped networks and the manager's images. A sandbox is
``running`` only while a task desired and reported running sits on a ready node;
its ``ip`` is that node's address and ``route_port`` the published port, so the
router and the probe reach it with no overlay traffic at all.

Agent operations: logs come from the manager (service logs). exec, upload and
download need the engine of the node running the task: the manager's own, or
one named in ``RECONCILER_SWARM_NODES``; they are delegated to a ``DockerEngine``
on that node's client.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent import futures
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from . import labels as L
from .container_config import DesiredSandbox
from .docker_engine import LOG_CONFIG, DockerEngine, connect, docker_time, normalize_image
from .engine import EngineError, EngineEvent, ExecState, PathStat
from .observed import Observed, ObservedNetwork, ObservedSandbox, ObservedVolume

# swarmkit refuses config data of 1000 KiB or more ("must be larger than 0 and
# less than 1024000 bytes", measured on Engine 20.10; Docker's docs say 500 KB).
MAX_CONFIG_BYTES = 1000 * 1024 - 1
RESTART_DELAY_NS = 1_000_000_000  # also delays a task rescheduled off a failed node
STOP_GRACE_NS = 10_000_000_000
TASK_KIND = "swarm-task"  # the kind label on task containers: never read as a plain sandbox
POLL_INTERVAL = 0.5  # seconds between two looks of the event stream
VOLUME_LIST_S = 2.0  # how long observe waits for a node's volume list
NODES_ENV = "RECONCILER_SWARM_NODES"
_LIVE_DESIRED = ("running", "ready")  # a task that is (or is about to be) the sandbox
_NS = 1_000_000_000


def node_hosts_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``RECONCILER_SWARM_NODES=host1=tcp://10.0.0.5:2376,host2=unix:///...``:
    where the engine of each node (by hostname) answers, for exec/upload/download."""
    raw = (environ if environ is not None else os.environ).get(NODES_ENV, "")
    out = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, url = item.partition("=")
        if not sep or not host or not url:
            raise EngineError(f'{NODES_ENV}: expected "hostname=docker-url" items separated by ",", got "{item}"',
                              permanent=True)
        out[host.strip()] = url.strip()
    return out


class SwarmEngine:
    """Engine over a Docker Swarm (``DOCKER_HOST`` = a manager), scoped to one instance."""

    def __init__(
        self,
        instance: str,
        client: docker.DockerClient | None = None,
        node_hosts: Mapping[str, str] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.instance = instance
        self.client = client or connect()
        self.api = self.client.api
        self.node_hosts = dict(node_hosts or {})
        self.poll_interval = poll_interval
        try:
            swarm = (self.api.info() or {}).get("Swarm") or {}
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot reach the swarm manager: {exc}", permanent=True) from exc
        if not swarm.get("ControlAvailable"):
            raise EngineError(
                "the engine at DOCKER_HOST is not a swarm manager (docker info: Swarm "
                f"{swarm.get('LocalNodeState') or 'inactive'}); point DOCKER_HOST at a manager "
                "or run `docker swarm init`",
                permanent=True,
            )
        self.own_node_id = str(swarm.get("NodeID") or "")
        # The manager node's own daemon: image lookup, and exec on the tasks it runs.
        self._manager = DockerEngine(instance, client=self.client)
        # Configs and services change together under this lock, so a sweep of
        # unreferenced configs never removes one a create is about to use.
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()  # the two maps below
        self._node_engines: dict[str, DockerEngine] = {}
        self._exec_engines: dict[str, DockerEngine] = {}
        self._lister = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="swarm-volumes")

    # --- observe -------------------------------------------------------------

    def observe(self, images: Iterable[str] = ()) -> Observed:
        filters = {"label": L.selector(self.instance)}
        try:
            services, tasks = self._services_and_tasks()
            nodes = {n["ID"]: n for n in self.api.nodes()}
            networks = self.api.networks(filters={**filters, "scope": "swarm"})
            image_ids = self._manager._resolve_images(images)  # the same lookup as on one machine
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot list swarm objects: {_explain(exc)}") from exc

        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        sandboxes: dict[str, ObservedSandbox] = {}
        strays: list[ObservedSandbox] = []
        for svc in sorted(services, key=lambda s: s.get("CreatedAt", "")):
            labels = (svc.get("Spec") or {}).get("Labels") or {}
            if not L.is_owned(labels, self.instance) or labels.get(L.KIND, "sandbox") != "sandbox":
                continue
            observed = _to_sandbox(svc, by_service.get(svc["ID"], []), nodes)
            if not observed.name or observed.name in sandboxes:
                strays.append(observed)
            else:
                sandboxes[observed.name] = observed
        nets = {
            raw["Name"]: ObservedNetwork(
                name=raw["Name"], network_id=raw["Id"], sandbox=(raw.get("Labels") or {}).get(L.SANDBOX),
                internal=bool(raw.get("Internal")),
            )
            for raw in networks
            if raw.get("Scope") == "swarm" and L.is_owned(raw.get("Labels"), self.instance)
        }
        return Observed(
            instance=self.instance,
            sandboxes=sandboxes,
            strays=tuple(strays),
            networks=nets,
            volumes=self._volumes(nodes),
            images=image_ids,
        )

    def _services_and_tasks(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        for _attempt in range(3):
            services = self.api.services(filters={"label": L.selector(self.instance)})
            if not services:
                return [], []
            try:
                return services, self.api.tasks(filters={"service": [s["ID"] for s in services]})
            except NotFound:
                continue  # a service went away between the two calls: look again
        raise EngineError("services kept changing while listing their tasks; try again")

    def _volumes(self, nodes: Mapping[str, dict[str, Any]]) -> dict[str, ObservedVolume]:
        """Named volumes live on the node that ran the task: listed from every reachable
        ready node at once. A node that does not answer within VOLUME_LIST_S is left out
        of this look (its volumes are seen when it answers again): a hung node must not
        hold up the pass that reroutes its sandboxes."""
        filters = {"label": L.selector(self.instance)}
        listings = [self._lister.submit(engine.api.volumes, filters=filters) for engine in self._reachable_engines(nodes)]
        done, _late = futures.wait(listings, timeout=VOLUME_LIST_S)
        out: dict[str, ObservedVolume] = {}
        for listing in done:
            try:
                raw = (listing.result() or {}).get("Volumes") or []
            except (APIError, DockerException, requests.RequestException):
                continue  # a node going away
            for vol in raw:
                labels = vol.get("Labels") or {}
                if L.is_owned(labels, self.instance):
                    out[vol["Name"]] = ObservedVolume(name=vol["Name"], sandbox=labels.get(L.SANDBOX))
        return out

    # --- create / start / remove ------------------------------------------------

    def create(self, want: DesiredSandbox, created_at: int) -> str:
        spec = want.spec
        if not spec.egress and spec.port is not None:
            raise EngineError(
                f"{want.name}: egress: false with a port cannot be routed on swarm (an internal "
                "network publishes no ports); set egress: true, drop the port, or use --engine docker",
                permanent=True,
            )
        files = upload_files(want)
        image = self._service_image(want)
        with self._lock:
            network_id = self._ensure_network(want)
            configs = [self._ensure_config(want.name, target, data, mode) for target, data, mode in files]
            template = self._task_template(want, image, network_id, configs)
            service_id = self._create_service(want, template, want.labels(created_at))
            self._sweep_configs()
        return service_id

    def _task_template(
        self, want: DesiredSandbox, image: str, network_id: str, configs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        spec = want.spec
        container: dict[str, Any] = {
            "Image": image,
            "Labels": {**L.owner_labels(self.instance), L.KIND: TASK_KIND, L.SANDBOX: want.name},
            "Hostname": want.hostname,
            "Env": [f"{k}={v}" for k, v in spec.env.items()],
            "Init": True,
            "CapabilityDrop": ["ALL"],
            "CapabilityAdd": want.capabilities,
            "StopGracePeriod": STOP_GRACE_NS,
            "Configs": configs,
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": want.volume_name(vol.name),
                    "Target": vol.target,
                    "VolumeOptions": {"Labels": {**L.owner_labels(self.instance), L.SANDBOX: want.name}},
                }
                for vol in spec.volumes
            ],
        }
        if spec.command is not None:
            # Args replaces the image's CMD and keeps its ENTRYPOINT, as the plain engine's command does.
            container["Args"] = ["/bin/sh", "-c", spec.command] if isinstance(spec.command, str) else list(spec.command)
        if spec.workdir:
            container["Dir"] = spec.workdir
        if spec.user:
            container["User"] = spec.user
        memory = spec.resources.memory
        return {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {"NanoCPUs": int(spec.resources.cpus * 1e9), "MemoryBytes": memory, "Pids": spec.resources.pids},
                # Memory cannot be squeezed back, CPU can: the scheduler keeps a quarter
                # of each memory limit free per sandbox and packs CPU freely.
                "Reservations": {"MemoryBytes": memory // 4},
            },
            "RestartPolicy": {"Condition": "any", "Delay": RESTART_DELAY_NS, "MaxAttempts": 0},
            "Placement": {"Constraints": list(spec.placement.constraints) if spec.placement else []},
            "Networks": [{"Target": network_id}],
            "LogDriver": {"Name": LOG_CONFIG["Type"], "Options": dict(LOG_CONFIG["Config"])},
        }

    def _service_image(self, want: DesiredSandbox) -> str:
        """A pinned reference every node resolves the same way: ``repo@digest`` when the
        image came from a registry (a node without it pulls exactly that), else its id
        (no pull is tried: load the image on every node)."""
        if "@" in want.spec.image:
            return want.spec.image
        try:
            info = self.api.inspect_image(want.image_id)
        except NotFound as exc:
            raise EngineError(f'image "{want.spec.image}" is not present on the manager', permanent=True) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot inspect image {want.spec.image}: {_explain(exc)}") from exc
        repos = {name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
                 for name in normalize_image(want.spec.image)}
        for digest in info.get("RepoDigests") or []:
            if digest.split("@", 1)[0] in repos:
                return digest
        return want.image_id

    def _create_service(self, want: DesiredSandbox, template: dict[str, Any], labels: dict[str, str]) -> str:
        port = want.spec.port
        endpoint: dict[str, Any] = {"Mode": "dnsrr"}
        if port is not None:
            endpoint["Ports"] = [{"Protocol": "tcp", "TargetPort": port, "PublishMode": "host"}]
        for attempt in range(2):
            try:
                created = self.api.create_service(
                    template, name=want.container_name, labels=labels,
                    mode={"Replicated": {"Replicas": 1}}, endpoint_spec=endpoint,
                )
                return created["ID"]
            except APIError as exc:
                if exc.status_code == 409 and attempt == 0 and self._clear_service(want.container_name):
                    continue
                permanent = exc.status_code is not None and 400 <= exc.status_code < 500
                raise EngineError(f"cannot create {want.name}: {_explain(exc)}", permanent=permanent) from exc
            except (DockerException, requests.RequestException) as exc:
                raise EngineError(f"cannot create {want.name}: {exc}") from exc
        raise AssertionError("unreachable")

    def _clear_service(self, name: str) -> bool:
        """Remove a leftover service holding our name, only if this instance owns it."""
        try:
            info = self.api.inspect_service(name)
        except NotFound:
            return True
        if not L.is_owned((info.get("Spec") or {}).get("Labels"), self.instance):
            raise EngineError(
                f'a service named "{name}" exists and is not owned by instance "{self.instance}"; '
                "rename or remove it yourself",
                permanent=True,
            )
        self._remove_service(info["ID"])
        return True

    def _remove_service(self, service_id: str) -> None:
        try:
            self.api.remove_service(service_id)
        except NotFound:
            pass
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot remove service: {_explain(exc)}") from exc

    def start(self, have: ObservedSandbox) -> None:
        """Back to one replica when scaled to zero, else a forced update (a fresh task)."""
        try:
            info = self.api.inspect_service(have.container_id)
            spec = info["Spec"]
            replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
            force = int((spec.get("TaskTemplate") or {}).get("ForceUpdate") or 0)
            self.api.update_service(
                have.container_id, info["Version"]["Index"],
                task_template=None if replicas == 0 else {"ForceUpdate": force + 1},
                mode={"Replicated": {"Replicas": 1}},
                fetch_current_spec=True,
            )
        except NotFound as exc:
            raise EngineError(f"sandbox {have.name} is gone", permanent=True) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot start {have.name}: {_explain(exc)}") from exc

    def remove(self, have: ObservedSandbox, remove_network: bool, remove_volumes: bool) -> None:
        if not L.is_owned(dict(have.labels), self.instance):
            raise EngineError(f"refusing to remove {have.container_name}: not owned", permanent=True)
        with self._lock:
            self._remove_service(have.container_id)
            self._sweep_configs()
        if remove_network and have.name:
            self.remove_network(L.network_name(self.instance, have.name))
        if remove_volumes and have.name:
            self._remove_sandbox_volumes(have.name)

    def remove_network(self, name: str) -> None:
        try:
            info = self.api.inspect_network(name)
        except NotFound:
            return
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot look at network {name}: {_explain(exc)}") from exc
        if not L.is_owned(info.get("Labels"), self.instance) or info.get("Scope") != "swarm":
            return
        for attempt in range(40):
            try:
                self.api.remove_network(info["Id"])
                break
            except NotFound:
                break
            except APIError as exc:
                if "not found" in str(exc.explanation or ""):
                    break  # gone meanwhile (swarm says so with a 500)
                # A removed service's tasks may still hold it for a moment.
                if ("in use" in str(exc) or "active endpoints" in str(exc)) and attempt < 39:
                    time.sleep(0.1)
                    continue
                raise EngineError(f"cannot remove network {name}: {_explain(exc)}") from exc
        self._wait_network_gone(name, info["Id"])

    def _wait_network_gone(self, name: str, network_id: str, timeout: float = 20.0) -> None:
        """Until the manager lists it no more: its own copy stays while a task of the
        removed service still stops on the manager node (measured: about 3.5 s), and
        a plan made meanwhile would call it an orphan."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api.inspect_network(network_id)
            except NotFound:
                return
            except (APIError, DockerException, requests.RequestException) as exc:
                raise EngineError(f"cannot look at network {name}: {_explain(exc)}") from exc
            if time.monotonic() > deadline:
                raise EngineError(f"network {name} is still held by a stopping task after {timeout:g}s")
            time.sleep(0.1)

    def remove_volume(self, name: str) -> None:
        for engine in self._reachable_engines():
            engine.remove_volume(name)

    def _remove_sandbox_volumes(self, sandbox: str, wait: float = 10.0) -> None:
        """Remove a destroyed sandbox's volumes on every reachable node; a task still
        stopping holds its volume, so "in use" is retried for ``wait`` seconds."""
        filters = {"label": [*L.selector(self.instance), f"{L.SANDBOX}={sandbox}"]}
        deadline = time.monotonic() + wait
        for engine in self._reachable_engines():
            try:
                names = [v["Name"] for v in (engine.api.volumes(filters=filters) or {}).get("Volumes") or []]
            except (APIError, DockerException, requests.RequestException):
                continue
            for name in names:
                while True:
                    try:
                        engine.remove_volume(name)
                        break
                    except EngineError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)

    # --- networks and configs -----------------------------------------------------

    def _ensure_network(self, want: DesiredSandbox) -> str:
        """The sandbox's own network: a swarm-scoped bridge, which each node that runs
        the task makes locally from its own default address pool (swarm keeps no
        IPAM for local drivers: a subnet given here would be dropped)."""
        internal = not want.spec.egress
        try:
            info = self.api.inspect_network(want.network_name)
        except NotFound:
            info = None
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot look at network {want.network_name}: {_explain(exc)}") from exc
        if info is not None:
            if not L.is_owned(info.get("Labels"), self.instance):
                raise EngineError(
                    f'a network named "{want.network_name}" exists and is not owned by this instance',
                    permanent=True,
                )
            if bool(info.get("Internal")) == internal and info.get("Scope") == "swarm":
                return str(info["Id"])
            self.remove_network(want.network_name)  # egress changed
        labels = {**L.owner_labels(self.instance), L.SANDBOX: want.name}
        try:
            created = self.api.create_network(
                want.network_name, driver="bridge", scope="swarm", internal=internal, labels=labels,
                check_duplicate=True,
            )
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot create network {want.network_name}: {_explain(exc)}") from exc
        return str(created["Id"])

    def _ensure_config(self, sandbox: str, target: str, data: bytes, mode: int) -> dict[str, Any]:
        """The config holding ``data`` (made if missing), as a mount of ``target``."""
        digest = hashlib.sha256(data).hexdigest()
        # Per sandbox, so a sandbox's configs go with it; named by content, so an
        # unchanged file keeps its config across recreates. At most 56 characters (limit 64).
        name = f"{L.NAME_PREFIX}-{self.instance}-" + hashlib.sha256(f"{sandbox}\0{digest}".encode()).hexdigest()[:32]
        labels = {**L.owner_labels(self.instance), L.KIND: "upload", L.SANDBOX: sandbox, L.PREFIX + "sha256": digest}
        config_id = None
        try:
            config_id = self.api.create_config(name, data, labels=labels)["ID"]
        except APIError as exc:
            if exc.status_code != 409:
                raise EngineError(f"cannot store upload {target} of {sandbox}: {_explain(exc)}") from exc
        except (DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot store upload {target} of {sandbox}: {exc}") from exc
        if config_id is None:  # it exists: ours, by name and labels?
            info = self.api.inspect_config(name)
            if not L.is_owned((info.get("Spec") or {}).get("Labels"), self.instance):
                raise EngineError(f'a config named "{name}" exists and is not owned by this instance', permanent=True)
            config_id = info["ID"]
        return {
            "ConfigID": config_id,
            "ConfigName": name,
            "File": {"Name": target, "UID": "0", "GID": "0", "Mode": mode},
        }

    def _sweep_configs(self) -> None:
        """Remove this instance's configs that no service uses (under ``_lock``)."""
        try:
            configs = self.api.configs(filters={"label": L.selector(self.instance)})
            used = {
                ref.get("ConfigID")
                for svc in self.api.services(filters={"label": L.selector(self.instance)})
                for ref in (((svc.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Configs") or []
            }
        except (APIError, DockerException, requests.RequestException):
            return  # the next create or remove sweeps
        for cfg in configs:
            if cfg["ID"] in used or not L.is_owned((cfg.get("Spec") or {}).get("Labels"), self.instance):
                continue
            try:
                self.api.remove_config(cfg["ID"])
            except (APIError, DockerException, requests.RequestException):
                pass  # in use after all (a service made meanwhile elsewhere): kept

    # --- agent operations ---------------------------------------------------------

    def logs(self, have: ObservedSandbox, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
        try:
            return self.api.service_logs(
                have.container_id, stdout=True, stderr=True, follow=follow,
                tail=tail if tail is not None else "all", is_tty=False,
            )
        except NotFound as exc:
            raise EngineError(f"sandbox {have.name} is gone", permanent=True) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot read the logs of {have.name}: {_explain(exc)}") from exc

    def exec_create(
        self, have: ObservedSandbox, cmd: list[str], workdir: str | None = None,
        env: dict[str, str] | None = None, user: str | None = None,
    ) -> str:
        engine, container = self._task_container(have)
        exec_id = engine.exec_create(container, cmd, workdir=workdir, env=env, user=user)
        with self._cache_lock:
            self._exec_engines[exec_id] = engine
        return exec_id

    def exec_attach(self, exec_id: str):  # noqa: ANN201 - docker_engine.DockerExecStream
        return self._exec_engine(exec_id).exec_attach(exec_id)

    def exec_detach(self, exec_id: str) -> None:
        self._exec_engine(exec_id).exec_detach(exec_id)

    def exec_inspect(self, exec_id: str) -> ExecState:
        return self._exec_engine(exec_id).exec_inspect(exec_id)

    def stat_path(self, have: ObservedSandbox, path: str) -> PathStat | None:
        engine, container = self._task_container(have)
        return engine.stat_path(container, path)

    def put_archive(self, have: ObservedSandbox, path: str, data: Iterable[bytes]) -> None:
        engine, container = self._task_container(have)
        engine.put_archive(container, path, data)

    def get_archive(self, have: ObservedSandbox, path: str) -> tuple[Iterator[bytes], PathStat]:
        engine, container = self._task_container(have)
        return engine.get_archive(container, path)

    def _exec_engine(self, exec_id: str) -> DockerEngine:
        with self._cache_lock:
            engine = self._exec_engines.get(exec_id)
        if engine is None:
            raise EngineError(f"unknown exec {exec_id[:12]}: it was not created by this engine", permanent=True)
        return engine

    def _task_container(self, have: ObservedSandbox) -> tuple[DockerEngine, ObservedSandbox]:
        """The engine of the node running ``have``'s task, and ``have`` as that task's container."""
        try:
            tasks = self.api.tasks(filters={"service": have.container_id, "desired-state": "running"})
        except NotFound as exc:
            raise EngineError(f"sandbox {have.name} is gone", permanent=True) from exc
        except (APIError, DockerException, requests.RequestException) as exc:
            raise EngineError(f"cannot find the task of {have.name}: {_explain(exc)}") from exc
        task = next((t for t in tasks if (t.get("Status") or {}).get("State") == "running"), None)
        container_id = ((task or {}).get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")
        if task is None or not container_id:
            raise EngineError(f'sandbox "{have.name}" has no running task', permanent=True)
        engine = self._node_engine(task.get("NodeID", ""))
        return engine, replace(have, container_id=container_id, container_name=container_id[:12])

    def _node_engine(self, node_id: str) -> DockerEngine:
        """A plain engine on the node's own daemon (the manager's, or one from RECONCILER_SWARM_NODES)."""
        with self._cache_lock:
            cached = self._node_engines.get(node_id)
        if cached is not None:
            return cached
        if node_id == self.own_node_id:
            engine = self._manager
        else:
            try:
                hostname = ((self.api.inspect_node(node_id).get("Description") or {}).get("Hostname")) or node_id
            except (APIError, DockerException, requests.RequestException) as exc:
                raise EngineError(f"cannot look at node {node_id[:12]}: {_explain(exc)}") from exc
            url = self.node_hosts.get(hostname)
            if url is None:
                raise EngineError(
                    f'the task runs on node "{hostname}", whose engine is not reachable from here; '
                    f"add {hostname}=<docker url> to {NODES_ENV} (logs work without it)",
                    permanent=True,
                )
            try:
                engine = DockerEngine(self.instance, client=docker.DockerClient(base_url=url, timeout=60))
            except DockerException as exc:
                raise EngineError(f"cannot reach the engine of node {hostname} at {url}: {exc}") from exc
        with self._cache_lock:
            return self._node_engines.setdefault(node_id, engine)

    def _reachable_engines(self, nodes: Mapping[str, dict[str, Any]] | None = None) -> list[DockerEngine]:
        """The manager's engine and those of the ready nodes named in RECONCILER_SWARM_NODES."""
        if nodes is None:
            try:
                nodes = {n["ID"]: n for n in self.api.nodes()}
            except (APIError, DockerException, requests.RequestException):
                nodes = {}
        out = [self._node_engine(self.own_node_id)] if self.own_node_id else []
        for node_id, node in nodes.items():
            hostname = (node.get("Description") or {}).get("Hostname")
            if node_id == self.own_node_id or hostname not in self.node_hosts:
                continue
            if (node.get("Status") or {}).get("State") != "ready":
                continue
            try:
                out.append(self._node_engine(node_id))
            except EngineError:
                continue
        return out

    # --- events -------------------------------------------------------------------

    def events(self, since: float | None = None) -> SwarmEventStream:
        """Changes of this instance's sandboxes, as the plain engine's container
        events: Swarm reports no task events, so the stream polls (every
        ``poll_interval`` seconds) and reports what changed between two looks.
        ``since`` is not replayed: a reopened stream starts from a fresh look, and
        the watch loop runs a pass after every reconnect anyway."""
        return SwarmEventStream(self, self.poll_interval)

    def _snapshot(self) -> dict[str, _TaskView]:
        """Per sandbox service: what its events are computed from."""
        services, tasks = self._services_and_tasks()
        nodes = {n["ID"]: n for n in self.api.nodes()}
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        out = {}
        for svc in services:
            labels = (svc.get("Spec") or {}).get("Labels") or {}
            if not L.is_owned(labels, self.instance) or labels.get(L.KIND, "sandbox") != "sandbox":
                continue
            have = _to_sandbox(svc, by_service.get(svc["ID"], []), nodes)
            task_id = _running_task_id(by_service.get(svc["ID"], []), nodes)
            out[svc["ID"]] = _TaskView(have.name, have.state, task_id, have.route_target, have.exit_code)
        return out


# --- turning the API's objects into observations ------------------------------------


def _to_sandbox(svc: dict[str, Any], tasks: list[dict[str, Any]], nodes: Mapping[str, dict[str, Any]]) -> ObservedSandbox:
    spec = svc.get("Spec") or {}
    labels = spec.get("Labels") or {}
    container = ((spec.get("TaskTemplate") or {}).get("ContainerSpec")) or {}
    replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
    newest = sorted(tasks, key=lambda t: t.get("CreatedAt", ""), reverse=True)
    running = _running_task(newest, nodes)
    latest = newest[0] if newest else None
    status = (latest or {}).get("Status") or {}
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode") if latest else None
    common = dict(
        name=labels.get(L.SANDBOX, ""),
        container_id=svc["ID"],
        container_name=spec.get("Name", ""),
        labels=labels,
        image=container.get("Image", ""),
        image_id=container.get("Image", "") if str(container.get("Image", "")).startswith("sha256:") else "",
        created=docker_time(svc.get("CreatedAt")),
    )
    if running is not None:
        node = nodes.get(running.get("NodeID", ""), {})
        port = _published_port(running, _int_label(labels.get(L.PORT)))
        return ObservedSandbox(
            **common, state="running", status=f"Running on {_hostname(node)}", exit_code=None,
            ip=_node_address(node), node=_hostname(node), route_port=port,
        )
    if replicas == 0:
        # Scaled to zero from outside: stopped on purpose, like a paused container,
        # never a crash (swarm restarts crashed tasks itself); start() scales back to one.
        return ObservedSandbox(**common, state="paused", status="scaled to 0 replicas", exit_code=exit_code)
    live = next((t for t in newest if t.get("DesiredState") in _LIVE_DESIRED), latest)
    return ObservedSandbox(
        **common, state="restarting", status=_describe(live, nodes), exit_code=exit_code,
        node=_hostname(nodes.get((live or {}).get("NodeID", ""), {})) or None,
    )


def _running_task(tasks: list[dict[str, Any]], nodes: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The task that is the sandbox now: desired and reported running, on a node the manager sees ready."""
    for task in tasks:
        node = nodes.get(task.get("NodeID", ""), {})
        if (
            task.get("DesiredState") == "running"
            and (task.get("Status") or {}).get("State") == "running"
            and (node.get("Status") or {}).get("State") == "ready"
        ):
            return task
    return None


def _running_task_id(tasks: list[dict[str, Any]], nodes: Mapping[str, dict[str, Any]]) -> str | None:
    task = _running_task(sorted(tasks, key=lambda t: t.get("CreatedAt", ""), reverse=True), nodes)
    return task["ID"] if task else None


def _published_port(task: dict[str, Any], target: int | None) -> int | None:
    for port in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []:
        if port.get("PublishMode") == "host" and (target is None or port.get("TargetPort") == target):
            return port.get("PublishedPort") or None
    return None


def _node_address(node: dict[str, Any]) -> str | None:
    addr = (node.get("Status") or {}).get("Addr") or ""
    if addr and addr != "0.0.0.0":
        return addr
    # A manager may report 0.0.0.0: its advertised address is in ManagerStatus.
    manager = ((node.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
    return manager or None


def _hostname(node: dict[str, Any]) -> str:
    return str((node.get("Description") or {}).get("Hostname") or "")


def _describe(task: dict[str, Any] | None, nodes: Mapping[str, dict[str, Any]]) -> str:
    """``pending: no suitable node (...)``: what the newest task waits for."""
    if task is None:
        return "no task yet"
    status = task.get("Status") or {}
    state = status.get("State", "")
    node = nodes.get(task.get("NodeID", ""), {})
    if state == "running" and (node.get("Status") or {}).get("State") != "ready":
        return f"node {_hostname(node)} is {(node.get('Status') or {}).get('State', 'unknown')}"
    detail = status.get("Err") or status.get("Message") or ""
    return f"{state}: {detail}" if detail else state


def _int_label(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


def upload_files(want: DesiredSandbox) -> list[tuple[str, bytes, int]]:
    """(target, bytes, mode) per uploaded file; a file too big for a swarm config is a clear, permanent error."""
    out = []
    for upload in want.loaded.uploads:
        for entry in upload.entries:
            if entry.is_dir:
                continue  # a config mount creates its parent directories
            try:
                data = entry.content if entry.content is not None else entry.source.read_bytes()  # type: ignore[union-attr]
            except OSError as exc:
                raise EngineError(f"{want.name}: cannot read upload {entry.source}: {exc.strerror}") from exc
            if not data or len(data) > MAX_CONFIG_BYTES:
                what = "empty" if not data else f"{len(data) / 1024:.0f} KiB"
                raise EngineError(
                    f"{want.name}: upload {entry.target} is {what}; on swarm every uploaded file is a swarm "
                    f"config, which holds 1 to {MAX_CONFIG_BYTES} bytes: put big files in the image or a volume",
                    permanent=True,
                )
            out.append((entry.target, data, entry.mode))
    return out


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc)


# --- the event stream -----------------------------------------------------------------


class _TaskView(NamedTuple):
    """What the event stream compares between two looks at one service."""

    name: str
    state: str
    task_id: str | None  # the running task
    target: tuple[str, int] | None  # where it answers
    exit_code: int | None


class SwarmEventStream:
    """Sandbox events computed from successive looks at the swarm; ``close()`` ends it."""

    def __init__(self, engine: SwarmEngine, interval: float) -> None:
        self._engine = engine
        self._interval = interval
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[EngineEvent]:
        try:
            before = self._engine._snapshot()
            while not self._closed.wait(self._interval):
                after = self._engine._snapshot()
                yield from diff_events(before, after, time.time())
                before = after
        except (APIError, DockerException, EngineError, OSError, requests.RequestException):
            return  # the manager went away: the caller reopens the stream

    def close(self) -> None:
        self._closed.set()


def diff_events(before: Mapping[str, _TaskView], after: Mapping[str, _TaskView], now: float) -> list[EngineEvent]:
    """The container-style events that turn ``before`` into ``after`` (keyed by service id).

    A new running task (first run, restart, or rescheduled to another node) is
    ``create`` then ``start``: polling cannot promise to see the moment its
    container was made, only that a new one runs. A running task gone is
    ``die``; a scale to zero ``pause``; a service gone ``destroy``."""
    events: list[EngineEvent] = []
    for sid, old in before.items():
        if sid not in after:
            events.append(EngineEvent("destroy", sid, old.name or None, now))
    for sid, new in after.items():
        old = before.get(sid)
        old_task = old.task_id if old else None
        sandbox = new.name or None
        if old_task and old_task != new.task_id:
            action = "pause" if new.state == "paused" else "die"
            events.append(EngineEvent(action, sid, sandbox, now, exit_code=new.exit_code))
        if new.task_id and (new.task_id != old_task or (old is not None and old.target != new.target)):
            events.append(EngineEvent("create", sid, sandbox, now))
            events.append(EngineEvent("start", sid, sandbox, now))
    return events
