"""CPU and memory from cgroup files: a made-up hierarchy in a tmp dir, v1 and v2."""

from __future__ import annotations

from pathlib import Path

from reconciler.dashboard.usage import UsageSampler, read_counters

CID = "ab" * 32


def v1(root: Path, cpu_ns: int, usage: int, inactive: int) -> None:
    cpu = root / "cpuacct" / "docker" / CID
    mem = root / "memory" / "docker" / CID
    cpu.mkdir(parents=True, exist_ok=True)
    mem.mkdir(parents=True, exist_ok=True)
    (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")
    (mem / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (mem / "memory.stat").write_text(f"cache 10\ntotal_inactive_file {inactive}\nrss 5\n")


def v2(root: Path, usage_usec: int, current: int, inactive: int) -> None:
    scope = root / "system.slice" / f"docker-{CID}.scope"
    scope.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (scope / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\n")
    (scope / "memory.current").write_text(f"{current}\n")
    (scope / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\n")


def test_v1_counters_subtract_inactive_page_cache(tmp_path):
    v1(tmp_path, cpu_ns=5_000, usage=10_000, inactive=4_000)
    assert read_counters(CID, tmp_path) == (5_000, 6_000)


def test_v2_systemd_scope(tmp_path):
    v2(tmp_path, usage_usec=7, current=9_000, inactive=1_000)
    assert read_counters(CID, tmp_path) == (7_000, 8_000)


def test_unknown_container_has_no_counters(tmp_path):
    assert read_counters("ff" * 32, tmp_path) == (None, None)


def test_cpu_percent_is_the_delta_between_sweeps(tmp_path):
    now = [0]
    sampler = UsageSampler(tmp_path, clock_ns=lambda: now[0])
    v1(tmp_path, cpu_ns=1_000_000_000, usage=100, inactive=0)
    first = sampler.sweep([CID])[CID]
    assert first.cpu_percent is None and first.memory_bytes == 100  # one sample: no rate yet
    # Half a core for two seconds: 1 s of CPU in 2 s of wall time.
    now[0] = 2_000_000_000
    v1(tmp_path, cpu_ns=2_000_000_000, usage=300, inactive=0)
    second = sampler.sweep([CID])[CID]
    assert second.cpu_percent == 50.0 and second.memory_bytes == 300


def test_containers_no_longer_asked_for_are_forgotten(tmp_path):
    now = [0]
    sampler = UsageSampler(tmp_path, clock_ns=lambda: now[0])
    v1(tmp_path, cpu_ns=10, usage=1, inactive=0)
    sampler.sweep([CID])
    sampler.sweep([])
    now[0] = 10
    assert sampler.sweep([CID])[CID].cpu_percent is None


def test_availability_follows_the_hierarchy(tmp_path):
    assert not UsageSampler(tmp_path).available
    v1(tmp_path, 1, 1, 0)
    assert UsageSampler(tmp_path).available
