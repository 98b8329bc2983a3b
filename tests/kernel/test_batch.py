"""Batches spread over several workers: per-VPC order kept, different VPCs in parallel."""

from __future__ import annotations

import re
import time

import pytest

from tests.kernel.conftest import Net
from vpcq.testing import probe

pytestmark = pytest.mark.kernel


def test_a_batch_over_two_workers_keeps_per_vpc_order(net: Net, tmp_path):
    net.start_worker(2)
    lines = []
    for i in range(8):
        v = net.name(f"o{i}")
        lines += [
            f"create-vpc {v} 10.{i}.0.0/16",
            f"add-subnet {v} web 10.{i}.1.0/24 --type public",
            f"deploy-app {v} web --port 8000",
            f"stop-app {v} web",
            f"deploy-app {v} web --port 9000",  # only valid after the stop: order matters
            f"add-subnet {v} db 10.{i}.2.0/24",
        ]
    lines.insert(20, f"peer-vpcs {net.name('o0')} {net.name('o1')}")
    batch = tmp_path / "batch.txt"
    batch.write_text("# eight VPCs\n" + "\n".join(lines) + "\n")
    p = net.vpcq("submit", "-f", str(batch))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"applied {len(lines)} commands"

    events = net.client().events()
    accepted = {e.command_id: (e.seq, e.event.vpcs) for e in events if e.type == "CommandAccepted"}
    outcomes = [e for e in events if e.type == "ChangeApplied"]
    assert len(outcomes) == len(lines)
    for i in range(8):
        v = net.name(f"o{i}")
        mine = [accepted[e.event.command_id][0] for e in outcomes if v in e.event.vpcs]
        assert mine == sorted(mine), f"{v}: commands applied out of log order"
    assert {e.actor.split("@")[0] for e in outcomes} == {"w0", "w1"}  # both workers worked
    for i in range(8):
        body = probe.http(net.host, f"10.{i}.1.1", 9000)
        assert body is not None and f"VPC {net.name(f'o{i}')}" in body, net.vpcq("drift").stdout
        assert probe.http(net.host, f"10.{i}.1.1", 8000) is None
    assert probe.http(f"{net.name('o0')}-web", "10.1.1.1", 9000) is not None  # the peering


def test_a_failing_batch_lists_the_failed_commands_and_exits_non_zero(net: Net, tmp_path):
    net.start_worker()
    v = net.name("x")
    first = tmp_path / "first.txt"
    first.write_text(f"create-vpc {v} 10.8.0.0/16\nadd-subnet {v} web 10.8.1.0/24\n")
    assert net.vpcq("submit", "-f", str(first)).returncode == 0
    rest = tmp_path / "rest.txt"
    rest.write_text(f"deploy-app {v} web --port 7000\nadd-subnet {v} db 10.8.2.0/24\n")
    with probe.tcp_listener(f"{v}-web", 7000):
        p = net.vpcq("submit", "-f", str(rest))
    assert p.returncode == 1
    assert "failed" in p.stderr and "7000" in p.stderr
    # the later command on the same VPC was decided on top of the failed one: cancelled too
    assert "cancelled" in p.stderr


def test_a_batch_takes_one_job_per_vpc(net: Net, tmp_path):
    """A VPC's commands in a batch are applied by the job the submit queued, together; the
    job queues no second one for its own VPC (nor for any other: nothing waits on it)."""
    net.start_worker()
    vpcs = [net.name("j0"), net.name("j1")]
    lines = []
    for i, v in enumerate(vpcs):
        lines += [f"create-vpc {v} 10.{i}.0.0/16", f"add-subnet {v} a 10.{i}.1.0/24",
                  f"add-subnet {v} b 10.{i}.2.0/24"]
    batch = tmp_path / "batch.txt"
    batch.write_text("\n".join(lines) + "\n")
    p = net.vpcq("submit", "-f", str(batch))
    assert p.returncode == 0, p.stderr
    time.sleep(0.5)  # a job queued after the last outcome would have started by now
    started = re.findall(r"→ (apply:[^:]+:\d+):", (net.home / "log" / "w0.log").read_text())
    assert sorted(set(started)) == sorted(started) and len(started) == 2, started
    assert {s.split(":")[1] for s in started} == set(vpcs)
