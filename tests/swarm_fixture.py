"""A 3-node Docker Swarm on this one machine, for the swarm engine's tests and benchmarks.

Three extra ``dockerd``s (a manager and two workers), each in its own network
and UTS namespace, own data-root/exec-root/socket/pidfile under one tmp dir. The
main Docker engine is only read from (``docker save`` of the test image): other
tests run against it at the same time, so it never joins a swarm, and nothing
here can collide with its networks:

- the nodes share an L2 segment: a bridge inside a fourth "hub" namespace, so
  node-to-node and host-to-node traffic never crosses the host's iptables
  (Docker's FORWARD policy there is DROP); the host has one veth into the hub;
- addresses are one free /24 of 198.18.0.0/15 (benchmarking range, never routed):
  ``.1`` the host, ``.2`` the manager, ``.3``/``.4`` the workers; the node
  namespaces have no default route, so no task can reach past this machine;
- each dockerd runs with ``--bridge=none``, its local pool in 10.217.0.0/16 and
  the swarm's overlay pool in 10.216.0.0/16 (the main engine's sandboxes use
  10.213.0.0/16; in their own namespaces these could not clash anyway);
- ``nsenter --net`` (not ``ip netns exec``, which remounts /sys and hides the
  cgroup mounts) plus ``unshare --uts`` so each node has its own hostname.

The kernel has no IPVS: services use ``endpoint_mode: dnsrr`` and host-mode
published ports, which the host reaches at the node's 198.18 address.

``python tests/swarm_fixture.py`` builds one, prints the timings and the
rerouting benchmark, and tears it down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import docker

IMAGE = "reconciler-test/busybox:latest"
NET_RANGE = ipaddress.ip_network("198.18.0.0/15")
OVERLAY_POOL = "10.216.0.0/16"
LOCAL_POOL = "10.217.0.0/16"
HEARTBEAT_S = 1  # dispatcher heartbeat: a stopped node is seen down in ~3 heartbeats
NETNS_DIR = Path("/run/netns")
# Present while /run/netns exists because a local swarm made it: whichever swarm
# is torn down last (not necessarily the one that made it) removes both.
NETNS_MARK = Path("/tmp/rcsw-made-run-netns")


class SwarmError(RuntimeError):
    """The local swarm could not be built (which step, and the daemon's log)."""


@dataclass
class SwarmNode:
    """One dockerd of the local swarm."""

    role: str  # "manager" | "worker"
    key: str  # "m", "w1", "w2"
    hostname: str
    netns: str
    address: str  # on the 198.18 segment
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    @contextmanager
    def connected(self, timeout: int = 30) -> Iterator[docker.DockerClient]:
        """``with node.connected() as client:`` a client closed afterwards."""
        client = self.client(timeout)
        try:
            yield client
        finally:
            client.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalSwarm:
    """A built swarm: its nodes, and how to stop, start and tear them down."""

    id: str
    root: Path
    subnet: ipaddress.IPv4Network
    host_link: str
    hub: str
    nodes: dict[str, SwarmNode] = field(default_factory=dict)
    build_seconds: float = 0.0

    @property
    def manager(self) -> SwarmNode:
        return self.nodes["m"]

    @property
    def workers(self) -> list[SwarmNode]:
        return [n for n in self.nodes.values() if n.role == "worker"]

    @property
    def host_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def env(self) -> dict[str, str]:
        """Environment for ``reconcile --engine swarm`` against this swarm (every node's engine reachable)."""
        return {
            "DOCKER_HOST": self.manager.base_url,
            "RECONCILER_ENGINE": "swarm",
            "RECONCILER_SWARM_NODES": ",".join(f"{n.hostname}={n.base_url}" for n in self.nodes.values()),
        }

    def by_hostname(self, hostname: str) -> SwarmNode:
        return next(n for n in self.nodes.values() if n.hostname == hostname)

    def stop_node(self, key: str, timeout: float = 30.0, wait: bool = True) -> None:
        """Stop one node's dockerd (SIGTERM by pid: its containers stop with it);
        ``wait=False`` only sends the signal (``stop_node`` again waits for the exit)."""
        node = self.nodes[key]
        if wait:
            _stop_daemon(node, timeout)
        elif node.running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)

    def start_node(self, key: str, timeout: float = 30.0) -> None:
        """Start a stopped node again; it rejoins the swarm by itself."""
        node = self.nodes[key]
        if not node.running:
            _start_daemon(node)
            _wait_ping(node, timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the manager sees every node ready."""
        api = self.manager.client().api
        deadline = time.monotonic() + timeout
        try:
            while True:
                nodes = api.nodes()
                ready = {n["Description"]["Hostname"] for n in nodes if n["Status"]["State"] == "ready"}
                if ready >= {n.hostname for n in self.nodes.values()}:
                    return
                if time.monotonic() > deadline:
                    raise SwarmError(f"nodes not ready after {timeout:g}s: ready {sorted(ready)}")
                time.sleep(0.1)
        finally:
            api.close()

    def teardown(self) -> list[str]:
        """Remove everything the build made; returns what had to be forced (empty: all clean)."""
        forced: list[str] = []
        running = [n for n in self.nodes.values() if n.running]
        for node in running:  # all at once: each takes a second or two to stop its tasks
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        for node in running:
            if not _stop_daemon(node, 20.0):
                forced.append(f"{node.hostname}: dockerd did not stop on SIGTERM; killed")
        # Children a killed dockerd left (its containerd, shims, docker-proxy): ours by their path.
        for pid in _pids_mentioning(str(self.root) + "/"):
            forced.append(f"leftover process {pid}: {_cmdline(pid)[:120]}")
            _kill(pid)
        own = {str(n.dir / "data") for n in self.nodes.values()}
        for mount in _mounts_under(self.root):
            # A stopped dockerd may leave its network namespaces (exec-root/netns) and
            # the private bind of its data-root mounted: unmounting those is normal.
            # Anything else (a container's rootfs or tmpfs) means a container outlived it.
            if "/exec/netns/" not in mount and mount not in own:
                forced.append(f"leftover mount {mount}")
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        try:
            for ns in [self.hub, *(n.netns for n in self.nodes.values())]:
                if (NETNS_DIR / ns).exists():
                    res = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, check=False)
                    if res.returncode != 0:
                        forced.append(f"ip netns del {ns}: {res.stderr.strip()}")
            # The kernel dismantles a deleted namespace in the background: the host's
            # end of the hub's veth goes a moment later. Only a link that stays is deleted.
            deadline = time.monotonic() + 5.0
            while _link_exists(self.host_link) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _link_exists(self.host_link):
                forced.append(f"link {self.host_link} outlived its namespace")
                subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _release_netns_dir()
        forced.extend(self.leftovers())
        return forced

    def leftovers(self) -> list[str]:
        """Anything of this swarm still on the machine (after teardown: must be empty)."""
        out = []
        for ns in [self.hub, *(n.netns for n in self.nodes.values())]:
            if (NETNS_DIR / ns).exists():
                out.append(f"netns {ns}")
        if _link_exists(self.host_link):
            out.append(f"link {self.host_link}")
        out.extend(f"process {pid}" for pid in _pids_mentioning(str(self.root) + "/"))
        out.extend(f"mount {m}" for m in _mounts_under(self.root))
        if self.root.exists():
            out.append(f"directory {self.root}")
        if NETNS_MARK.exists() and not (NETNS_DIR.exists() and any(NETNS_DIR.iterdir())):
            out.append(f"{NETNS_DIR} or {NETNS_MARK} (made for the local swarms, none left)")
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                out.append(f"dockerd {node.proc.pid}")
        return out


# --- building ----------------------------------------------------------------------------


def build_swarm(image: str = IMAGE, workers: int = 2, main: docker.DockerClient | None = None) -> LocalSwarm:
    """Build a swarm of one manager and ``workers`` workers, with ``image`` loaded
    into every node; on any failure, whatever was made is torn down again."""
    began = time.monotonic()
    sid = secrets.token_hex(3)
    root = Path(f"/tmp/rcsw-{sid}")  # short: containerd's socket paths must fit in 108 bytes
    root.mkdir(mode=0o700)
    subnet = _free_subnet()
    swarm = LocalSwarm(
        id=sid, root=root, subnet=subnet, host_link=f"rcsw{sid}", hub=f"rcsw-{sid}-hub",
    )
    keys = ["m", *(f"w{i}" for i in range(1, workers + 1))]
    for index, key in enumerate(keys):
        swarm.nodes[key] = SwarmNode(
            role="manager" if key == "m" else "worker",
            key=key,
            hostname=f"rcsw-{sid}-{key}",
            netns=f"rcsw-{sid}-{key}",
            address=str(subnet.network_address + 2 + index),
            dir=root / key,
        )
    try:
        _mark_netns_dir()
        _make_network(swarm)
        for node in swarm.nodes.values():
            node.dir.mkdir()
            _start_daemon(node)
        for node in swarm.nodes.values():
            _wait_ping(node, 30.0)
        _load_image(swarm, image, main)
        _form_swarm(swarm)
        swarm.wait_ready()
    except BaseException:
        problems = swarm.teardown()
        if problems:
            print("swarm build failed; teardown had to force:", *problems, sep="\n  ")
        raise
    swarm.build_seconds = time.monotonic() - began
    return swarm


@contextmanager
def local_swarm(image: str = IMAGE, workers: int = 2) -> Iterator[LocalSwarm]:
    """``build_swarm`` as a context manager: torn down (and checked clean) on exit."""
    swarm = build_swarm(image, workers)
    try:
        yield swarm
    finally:
        problems = swarm.teardown()
        if problems:
            raise SwarmError("swarm teardown left or forced: " + "; ".join(problems))


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 no address or route on this machine uses."""
    used = []
    out = _run("ip", "-4", "-o", "route", "show", "table", "all").stdout
    out += _run("ip", "-4", "-o", "addr", "show").stdout
    for token in out.split():
        try:
            used.append(ipaddress.ip_network(token, strict=False))
        except ValueError:
            continue
    candidates = list(NET_RANGE.subnets(new_prefix=24))[1:]
    start = secrets.randbelow(len(candidates))
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
            return subnet
    raise SwarmError("no free /24 left in 198.18.0.0/15")


def _make_network(swarm: LocalSwarm) -> None:
    prefix = swarm.subnet.prefixlen
    _run("ip", "netns", "add", swarm.hub)
    _run("ip", "-n", swarm.hub, "link", "set", "lo", "up")
    _run("ip", "-n", swarm.hub, "link", "add", "br0", "type", "bridge")
    _run("ip", "-n", swarm.hub, "link", "set", "br0", "up")
    _run("ip", "link", "add", "name", swarm.host_link, "type", "veth", "peer", "name", "host", "netns", swarm.hub)
    _run("ip", "-n", swarm.hub, "link", "set", "host", "master", "br0", "up")
    _run("ip", "addr", "add", f"{swarm.host_address}/{prefix}", "dev", swarm.host_link)
    _run("ip", "link", "set", swarm.host_link, "up")
    for node in swarm.nodes.values():
        _run("ip", "netns", "add", node.netns)
        hub_end = f"v{node.key}"
        _run("ip", "-n", swarm.hub, "link", "add", "name", hub_end, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _run("ip", "-n", swarm.hub, "link", "set", hub_end, "master", "br0", "up")
        _run("ip", "-n", node.netns, "addr", "add", f"{node.address}/{prefix}", "dev", "eth0")
        _run("ip", "-n", node.netns, "link", "set", "eth0", "up")
        _run("ip", "-n", node.netns, "link", "set", "lo", "up")


def _start_daemon(node: SwarmNode) -> None:
    config = node.dir / "daemon.json"
    config.write_text("{}\n")  # never the host's /etc/docker/daemon.json
    log = open(node.dir / "dockerd.log", "ab")
    argv = [
        "nsenter", f"--net={NETNS_DIR / node.netns}",
        "unshare", "--uts",
        "sh", "-c", 'hostname "$0" && exec "$@"', node.hostname,
        "dockerd",
        "--config-file", str(config),
        "--data-root", str(node.dir / "data"),
        "--exec-root", str(node.dir / "exec"),
        "--pidfile", str(node.dir / "docker.pid"),
        "-H", node.base_url,
        "--bridge=none",
        f"--default-address-pool=base={LOCAL_POOL},size=24",
        "--no-new-privileges",
        "--shutdown-timeout=3",
        "--log-level=warn",
    ]
    try:
        # nsenter, unshare and sh each exec the next: the child's pid is dockerd's.
        node.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()


def _wait_ping(node: SwarmNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if node.proc is not None and node.proc.poll() is not None:
            raise SwarmError(f"dockerd of {node.hostname} exited with {node.proc.returncode}:\n{_log_tail(node)}")
        if node.socket.exists():
            try:
                client = node.client(timeout=5)
                try:
                    client.ping()
                    return
                finally:
                    client.close()
            except Exception:  # noqa: BLE001 - not up yet
                pass
        if time.monotonic() > deadline:
            raise SwarmError(f"dockerd of {node.hostname} did not answer within {timeout:g}s:\n{_log_tail(node)}")
        time.sleep(0.05)


def _load_image(swarm: LocalSwarm, image: str, main: docker.DockerClient | None) -> None:
    """``docker save`` from the main engine (read only), ``docker load`` into each node."""
    own = main is None
    main = main or docker.from_env()
    try:
        data = b"".join(main.api.get_image(image))
    finally:
        if own:
            main.close()
    for node in swarm.nodes.values():
        client = node.client()
        try:
            client.api.load_image(data, quiet=True)
        finally:
            client.close()


def _form_swarm(swarm: LocalSwarm) -> None:
    manager = swarm.manager.client()
    try:
        manager.swarm.init(
            advertise_addr=swarm.manager.address,
            listen_addr=f"{swarm.manager.address}:2377",
            default_addr_pool=[OVERLAY_POOL],
            subnet_size=24,
            dispatcher_heartbeat_period=HEARTBEAT_S * 1_000_000_000,
            task_history_retention_limit=2,
        )
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
    finally:
        manager.close()
    for node in swarm.workers:
        client = node.client()
        try:
            client.swarm.join(
                remote_addrs=[f"{swarm.manager.address}:2377"],
                join_token=token,
                listen_addr=f"{node.address}:2377",
                advertise_addr=node.address,
            )
        finally:
            client.close()


# --- stopping and cleaning ----------------------------------------------------------------


def _stop_daemon(node: SwarmNode, timeout: float) -> bool:
    """SIGTERM the node's dockerd by its pid and wait; SIGKILL after ``timeout``. True if it stopped on SIGTERM."""
    proc = node.proc
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)  # again, for a teardown that already sent one: harmless
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (our unique tmp dir): only ours can."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and text in _cmdline(int(entry.name)):
            out.append(int(entry.name))
    return out


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    mounts = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(prefix):
                mounts.append(point)
    except OSError:
        pass
    return sorted(mounts, key=len, reverse=True)  # innermost first


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def _mark_netns_dir() -> None:
    if not NETNS_DIR.exists():
        NETNS_MARK.touch()


def _release_netns_dir() -> None:
    """``ip netns add`` made /run/netns a mount point; if a local swarm made it, undo
    that once no namespace is left in it (another swarm may still be using it)."""
    try:
        if not NETNS_MARK.exists():
            return
        if NETNS_DIR.exists() and any(NETNS_DIR.iterdir()):
            return
        if NETNS_DIR.exists():
            subprocess.run(["umount", str(NETNS_DIR)], check=False, capture_output=True)
            NETNS_DIR.rmdir()
        NETNS_MARK.unlink()
    except OSError:
        pass


def _log_tail(node: SwarmNode, lines: int = 30) -> str:
    try:
        return "\n".join((node.dir / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SwarmError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


# --- the failover scenario (a test asserts on it, the benchmark reports its figures) ----------


FAILOVER_SPEC = """\
apiVersion: reconciler/v1
kind: Sandbox
metadata:
  name: {name}
spec:
  image: {image}
  command: ["httpd", "-f", "-p", "8000", "-h", "/www"]
  port: 8000
  resources: {{memory: 64m, cpus: 0.5, pids: 64}}
  placement:
    constraints: [node.role==worker]
  uploads:
    - content: "moved\\n"
      target: /www/index.html
"""


@dataclass(frozen=True)
class Failover:
    """What happened when the engine under a routed sandbox stopped (seconds after its SIGTERM)."""

    before: str  # the node it ran on, and its route URL
    before_url: str
    after: str
    after_url: str
    node_down_s: float  # the manager saw the node down
    task_running_s: float  # a new task ran on another node
    routed_s: float  # Traefik answered 200 from the new place

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def run_failover(swarm: LocalSwarm, workdir: Path, instance: str, traefik_dir: Path,
                 get_status: Callable[[str], int], host_suffix: str = "localhost", timeout: float = 60.0) -> Failover:
    """Start ``reconcile watch`` on a sandbox placed on a worker, stop that worker's
    engine, and time until Traefik (``get_status(host) -> HTTP status``) serves it
    from another node. The stopped node is started again before returning."""
    from reconciler.labels import default_hostname

    specs = workdir / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    name = "mover"
    (specs / f"{name}.yaml").write_text(FAILOVER_SPEC.format(name=name, image=IMAGE))
    env = {
        **os.environ, **swarm.env(),
        "RECONCILER_INSTANCE": instance, "RECONCILER_SPECS": str(specs),
        "RECONCILER_TRAEFIK_DIR": str(traefik_dir), "RECONCILER_STATE_DIR": str(workdir / "state"),
    }
    cli = [sys.executable, "-m", "reconciler.cli"]
    log = open(workdir / "watch.log", "ab")
    watch = subprocess.Popen([*cli, "watch", "--resync", "30s"], env=env, stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
    log.close()
    api = swarm.manager.client().api
    victim: SwarmNode | None = None
    try:
        def placed() -> tuple[str, str] | None:
            rows = json.loads(subprocess.run([*cli, "status", "-o", "json"], env=env, capture_output=True,
                                             text=True, check=True).stdout)
            row = next((r for r in rows if r["name"] == name), None)
            url = _route_url(traefik_dir, instance, name)
            if row and row["node"] and row["state"] == "running" and url:
                return row["node"], url
            return None

        host = f"{default_hostname(instance, name)}.{host_suffix}"
        before = _wait(lambda: placed() if get_status(host) == 200 else None, timeout, "the sandbox to be routed")
        victim = swarm.by_hostname(before[0])
        began = time.monotonic()
        swarm.stop_node(victim.key, wait=False)  # timed from the signal, not from the daemon's exit
        _wait(lambda: _node_state(api, victim.hostname) == "down", timeout, "the node to be seen down")
        down_s = time.monotonic() - began
        _wait(lambda: _running_elsewhere(api, instance, name, victim.hostname), timeout, "a task on another node")
        running_s = time.monotonic() - began

        def rerouted() -> str | None:
            url = _route_url(traefik_dir, instance, name)
            if url and url != before[1] and get_status(host) == 200:
                return url
            return None

        after_url = _wait(rerouted, timeout, "Traefik to route to the new place")
        routed_s = time.monotonic() - began
        after = placed()
        return Failover(before[0], before[1], after[0] if after else "?", after_url, down_s, running_s, routed_s)
    finally:
        watch.send_signal(signal.SIGTERM)
        try:
            watch.wait(timeout=15)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait()
        if victim is not None:
            swarm.stop_node(victim.key)  # wait for its exit, then start it again
            swarm.start_node(victim.key)
        swarm.wait_ready()
        subprocess.run([*cli, "destroy", "--all"], env=env, capture_output=True, check=False)
        api.close()


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise SwarmError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _route_url(traefik_dir: Path, instance: str, name: str) -> str | None:
    """The server URL of the sandbox's route in the rendered Traefik file."""
    from ruamel.yaml import YAML

    from reconciler.traefik import dynamic_filename

    path = traefik_dir / dynamic_filename(instance)
    if not path.exists():
        return None
    data = YAML(typ="safe").load(path.read_text()) or {}
    service = ((data.get("http") or {}).get("services") or {}).get(f"rc-{instance}-{name}") or {}
    servers = (service.get("loadBalancer") or {}).get("servers") or []
    return servers[0]["url"] if servers else None


def _node_state(api, hostname: str) -> str:  # noqa: ANN001
    node = next(n for n in api.nodes() if n["Description"]["Hostname"] == hostname)
    return node["Status"]["State"]


def _running_elsewhere(api, instance: str, name: str, gone: str) -> bool:  # noqa: ANN001
    hostnames = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    for task in api.tasks(filters={"service": f"rc-{instance}-{name}", "desired-state": "running"}):
        if task["Status"]["State"] == "running" and hostnames.get(task.get("NodeID")) != gone:
            return True
    return False


def bench_failover(runs: int = 3) -> dict[str, object]:
    """For the benchmark suite: build a swarm, run the failover ``runs`` times with
    a real Traefik on loopback, tear down. Figures in seconds (medians and all samples)."""
    import statistics
    import tempfile
    import urllib.error
    import urllib.request

    from reconciler.traefik_proc import TraefikOptions, start_traefik, stop_traefik, wait_ready

    swarm = build_swarm()
    build_s = swarm.build_seconds
    samples: list[Failover] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rcsw-bench-") as tmp:
            dynamic = Path(tmp) / "dynamic"
            dynamic.mkdir()
            web, api = _free_port(), _free_port()
            opts = TraefikOptions(dynamic_dir=dynamic, web_address=f"127.0.0.1:{web}",
                                  api_address=f"127.0.0.1:{api}", log_file=Path(tmp) / "traefik.log")
            proc = start_traefik(opts)
            try:
                wait_ready(opts.api_address, timeout=10.0, proc=proc)

                def get_status(host: str) -> int:
                    req = urllib.request.Request(f"http://127.0.0.1:{web}/", headers={"Host": host})
                    try:
                        with urllib.request.urlopen(req, timeout=1) as resp:
                            return resp.status
                    except urllib.error.HTTPError as exc:
                        return exc.code

                for run in range(runs):
                    work = Path(tmp) / f"run{run}"
                    samples.append(run_failover(swarm, work, f"bench{run}", dynamic, get_status))
            finally:
                stop_traefik(proc)
    finally:
        t0 = time.monotonic()
        left = swarm.teardown()
        teardown_s = time.monotonic() - t0
    if left:
        raise SwarmError("teardown left: " + "; ".join(left))
    return {
        "build_s": round(build_s, 2),
        "teardown_s": round(teardown_s, 2),
        "node_down_s": round(statistics.median(f.node_down_s for f in samples), 2),
        "task_running_s": round(statistics.median(f.task_running_s for f in samples), 2),
        "routed_s": round(statistics.median(f.routed_s for f in samples), 2),
        "samples": [f.to_json() for f in samples],
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(json.dumps(bench_failover(runs), indent=2))
