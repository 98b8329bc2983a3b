"""A batch converges while workers, Redis and the supervisor are killed in turn."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from tests.kernel.conftest import Net, wait_until
from tests.kernel.test_instance import identity, nobody_reaps
from vpcq.testing import probe
from vpcq.workers.kernel import netns

pytestmark = pytest.mark.kernel

VICTIMS = ["worker-1", "redis-server", "worker-2", "supervisor", "redis-server", "worker-1",
           "worker-2", "redis-server"]


def batch(net: Net, vpcs: int) -> str:
    lines = []
    for i in range(vpcs):
        v = net.name(f"c{i}")
        lines.append(f"create-vpc {v} 10.{i}.0.0/16")
        lines += [f"add-subnet {v} s{j} 10.{i}.{j}.0/24 --type {'public' if j == 0 else 'private'}"
                  for j in range(3)]
    return "\n".join(lines) + "\n"


def test_a_batch_converges_while_workers_and_redis_are_killed_in_turn(net: Net):
    rng = random.Random(15)
    (net.home / "batch.txt").write_text(batch(net, 40))
    try:
        with nobody_reaps() as killed:
            assert net.vpcq("up", "--workers", "2", embedded=True).returncode == 0
            p = net.vpcq("submit", "-f", str(net.home / "batch.txt"), "--no-wait", "--json",
                         embedded=True)
            assert p.returncode == 0, p.stderr
            ids = {json.loads(ln)["command_id"] for ln in p.stdout.splitlines()}
            assert len(ids) == 160
            for victim in VICTIMS:
                time.sleep(rng.uniform(0.2, 1.2))
                ident = identity(net, victim)
                os.kill(ident.pid, signal.SIGKILL)
                killed.append(ident.pid)
                p = net.vpcq("up", "--workers", "2", embedded=True)
                assert p.returncode == 0, (victim, p.stdout, p.stderr)
            c = net.embedded_client()

            def outcomes() -> list[str]:
                return [e.event.command_id for e in c.events()
                        if e.type in ("ChangeApplied", "ChangeFailed") and e.event.command_id in ids]

            assert wait_until(lambda: set(outcomes()) == ids, 240, 0.5), \
                f"{len(ids - set(outcomes()))} commands have no outcome"
            assert sorted(outcomes()) == sorted(ids)  # each exactly once
            assert not [e for e in c.events() if e.type == "ChangeFailed"]
            p = net.vpcq("drift", embedded=True)
            assert p.returncode == 0, p.stdout
            assert probe.http(net.host, "10.39.0.1", timeout=0.5) is None  # built, no app there
            assert netns.exists(f"{net.name('c39')}-s2")
            assert net.vpcq("cleanup", embedded=True).returncode == 0
            leftovers = [n for n in netns.list_names() if net.tok in n and n not in (net.host, net.internet)]
            assert leftovers == []
            links = [ln.split(": ")[1].split("@")[0]
                     for ln in probe.save(net.host, "ip", "-o", "link").splitlines()]
            assert not [name for name in links if name.startswith("vq")], links
            assert "VPCQ" not in probe.save(net.host, "iptables-save")
    finally:
        net.vpcq("down", embedded=True)
