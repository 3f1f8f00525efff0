"""docker_engine.free_subnets: the sweep that picks a sandbox network's subnet."""

from __future__ import annotations

import ipaddress
import random

from reconciler.docker_engine import free_subnets

POOL = ipaddress.ip_network("10.213.0.0/16")


def naive(pool, prefix, used):  # noqa: ANN001, ANN201 - the obvious O(n^2) definition
    return [s for s in pool.subnets(new_prefix=prefix) if not any(s.overlaps(u) for u in used)]


def test_nothing_used_gives_the_pool_in_order() -> None:
    subnets = list(free_subnets(POOL, 28, []))
    assert len(subnets) == 4096
    assert subnets[:2] == [ipaddress.ip_network("10.213.0.0/28"), ipaddress.ip_network("10.213.0.16/28")]


def test_skips_exact_smaller_and_larger_overlaps() -> None:
    used = [
        ipaddress.ip_network("10.213.0.0/28"),  # exactly the first
        ipaddress.ip_network("10.213.0.36/30"),  # inside the third
        ipaddress.ip_network("10.213.1.0/24"),  # covers sixteen
        ipaddress.ip_network("172.17.0.0/16"),  # elsewhere: no effect
        ipaddress.ip_network("fd00::/64"),  # another family: no effect
    ]
    subnets = list(free_subnets(POOL, 28, used))
    assert subnets[:3] == [ipaddress.ip_network(n) for n in ("10.213.0.16/28", "10.213.0.48/28", "10.213.0.64/28")]
    assert not any(s.subnet_of(ipaddress.ip_network("10.213.1.0/24")) for s in subnets)
    assert len(subnets) == 4096 - 1 - 1 - 16


def test_a_range_covering_the_whole_pool_leaves_nothing() -> None:
    assert list(free_subnets(POOL, 28, [ipaddress.ip_network("10.0.0.0/8")])) == []


def test_agrees_with_the_naive_definition_on_random_fleets() -> None:
    pool = ipaddress.ip_network("10.213.0.0/22")  # 64 candidates: small enough for the naive check
    rng = random.Random(6)
    for _ in range(200):
        used = []
        for _ in range(rng.randint(0, 12)):
            prefix = rng.choice([16, 21, 23, 24, 26, 28, 29, 30])
            addr = int(ipaddress.ip_address("10.212.252.0")) + rng.randint(0, 1 << 9) * 16
            used.append(ipaddress.ip_network((addr, prefix), strict=False))
        assert list(free_subnets(pool, 28, used)) == naive(pool, 28, used)
