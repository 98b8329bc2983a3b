"""Deletes go forward: retried until the kernel holds none of what they remove, never
rolled back into re-creating it, and done at any scale."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.kernel.conftest import Net, wait_until
from tests.kernel.leftovers import kernel_objects, nothing_left
from tests.kernel.scenarios import two_vpcs

pytestmark = pytest.mark.kernel


def test_cleanup_of_200_vpcs_x_4_subnets_three_times_leaves_nothing(net: Net):
    net.start_worker(2)
    lines = []
    for i in range(200):
        v = net.name(f"s{i}")
        lines.append(f"create-vpc {v} 10.{i // 64}.{(i % 64) * 4}.0/22")
        lines += [f"add-subnet {v} n{j} 10.{i // 64}.{(i % 64) * 4 + j}.0/24 --type public"
                  for j in range(4)]
    (net.home / "batch.txt").write_text("\n".join(lines) + "\n")
    for attempt in range(3):
        p = net.vpcq("submit", "-f", str(net.home / "batch.txt"), "--timeout", "600")
        assert p.returncode == 0, (attempt, p.stdout[-500:], p.stderr[-500:])
        assert len(kernel_objects(net)["namespaces"]) == 1000
        p = net.vpcq("cleanup", "--timeout", "600")
        assert p.returncode == 0, (attempt, p.stderr)
        assert nothing_left(net) == {}, attempt
        listing = json.loads(net.vpcq("list", "--json").stdout)
        assert listing["vpcs"] == [] and listing["deleting"] == []
        time.sleep(5)
        assert nothing_left(net) == {}, f"round {attempt}: back 5 s after the cleanup"
    log = net.vpcq("log").stdout
    assert "VpcRestored" not in log and "ChangeFailed" not in log


# ---- a fault at every step of every kind of deletion ------------------------------------------


def deletion(kind: str, a: str, b: str) -> dict[str, Any]:
    return {
        "delete-subnet": {"kind": "delete-subnet", "vpc": a, "name": "web"},
        "delete-vpc": {"kind": "delete-vpc", "name": a},
        "unpeer-vpcs": {"kind": "unpeer-vpcs", "a": a, "b": b},
        "stop-app": {"kind": "stop-app", "vpc": a, "subnet": "web"},
        "cleanup": {"kind": "cleanup"},
        "unexpose": {"kind": "unexpose", "vpc": a, "host_port": 8080},
        "delete-lb": {"kind": "delete-lb", "vpc": a, "name": "lb"},
    }[kind]


def base(net: Net, kind: str) -> tuple[str, str]:
    """Two peered VPCs; for the services' deletions, a public port and a balancer too."""
    services = [{"kind": "expose", "vpc": "<a>", "target": "web", "port": 8000, "host_port": 8080},
                {"kind": "create-lb", "vpc": "<a>", "name": "lb", "port": 80,
                 "targets": ["web:8000", "db:8000"], "public": 8088}]
    return two_vpcs(net, {"kind": "peer-vpcs", "a": "<a>", "b": "<b>"},
                    *(services if kind in ("unexpose", "delete-lb") else []))


def gone_after(kind: str, a: str, b: str, before: dict[str, set[str]]) -> dict[str, set[str]]:
    """What must not exist any more once the deletion is done (a subset of everything)."""
    return {
        "delete-subnet": {"namespaces": {f"{a}-web"}, "apps": {f"{a}-web.json"},
                          "resolv.conf": {f"/etc/netns/{a}-web"}},
        "delete-vpc": {"namespaces": {f"vpcq_{a}", f"{a}-web", f"{a}-db"}, "apps": {f"{a}-web.json"},
                       "resolv.conf": {f"/etc/netns/{a}-web", f"/etc/netns/{a}-db"}},
        "unpeer-vpcs": {},
        "stop-app": {"apps": {f"{a}-web.json"}},
        "cleanup": {"namespaces": {f"vpcq_{a}", f"{a}-web", f"{a}-db", f"vpcq_{b}", f"{b}-app"},
                    "resolvers": before["resolvers"],
                    "resolv.conf": before["resolv.conf"]},
        "unexpose": {"host rules": {r for r in before["host rules"] if "8080" in r}},
        "delete-lb": {"host rules": {r for r in before["host rules"] if "8088" in r}},
    }[kind]


def submit_no_wait(net: Net, cmd: dict[str, Any]) -> str:
    p = net.vpcq("submit", "-f", "-", "--no-wait", input=json.dumps([cmd]))
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


# What each deletion does to the kernel, by kind of step. A fault on one kind stays on it
# across attempts (a fault at step N would move: what is done is not done again).
STEPS = {
    "delete-subnet": ["App:delete", "Veth:delete", "Netns:delete", "Rules:update",
                      "ResolvConf:delete", "Resolver:update"],
    "delete-vpc": ["App:delete", "HostChain:delete", "Veth:delete", "Netns:delete", "Rules:update",
                   "Resolver:delete", "ResolvConf:delete"],
    "unpeer-vpcs": ["Veth:delete", "Rules:update", "Resolver:update"],
    "stop-app": ["App:delete"],
    "cleanup": ["App:delete", "HostChain:delete", "Veth:delete", "Netns:delete", "Resolver:delete",
                "ResolvConf:delete"],
    "unexpose": ["HostPorts:update", "Rules:update"],  # the balancer keeps its port: an update
    "delete-lb": ["HostPorts:update", "Rules:update", "Resolver:update"],
}


@pytest.mark.parametrize("kind", list(STEPS))
def test_a_deletion_that_fails_at_any_step_goes_on_once_the_fault_clears(net: Net, kind: str):
    fault = net.home / "fault"
    net.start_worker(extra={"VPCQ_FAULT_FILE": str(fault)})
    c = net.client()
    for step in STEPS[kind]:
        a, b = base(net, kind)
        before = kernel_objects(net)
        fault.write_text(f"kind:{step}")
        cid = submit_no_wait(net, deletion(kind, a, b))
        # the step fails; the deletion is tried again, and says how far it got and why
        stuck = wait_until(lambda: "injected fault" in net.vpcq("status", cid).stdout, 30)
        status = net.vpcq("status", cid)
        assert stuck, (kind, step, status.stdout)
        assert status.returncode == 4 and "pending: deleting:" in status.stdout, status.stdout
        time.sleep(1)  # a few more attempts
        during = kernel_objects(net)
        for what, names in during.items():  # nothing was made again while it was stuck
            assert names <= before[what], (kind, step, what, names - before[what])
        assert net.vpcq("status", cid).returncode == 4
        fault.write_text("")
        assert wait_until(lambda: net.vpcq("status", cid).returncode == 0, 30), \
            net.vpcq("status", cid).stdout
        after = kernel_objects(net)
        for what, names in gone_after(kind, a, b, before).items():
            assert not names & after[what], (kind, step, what, names & after[what])
        events = [e for e in c.events() if cid in (getattr(e.event, "command_id", None), e.command_id)]
        assert [e.type for e in events if e.type in ("ChangeFailed", "VpcRestored")] == []
        assert net.vpcq("drift").returncode == 0
        assert net.vpcq("cleanup").returncode == 0  # the next round starts from nothing


def test_a_stuck_deletion_is_shown_as_deleting_by_list_and_status(net: Net):
    fault = net.home / "fault"
    net.start_worker(extra={"VPCQ_FAULT_FILE": str(fault)})
    a, b = two_vpcs(net)
    fault.write_text("kind:Netns")
    cid = submit_no_wait(net, {"kind": "delete-vpc", "name": a})
    try:
        assert wait_until(lambda: "injected fault" in net.vpcq("status", cid).stdout, 30)
        listing = net.vpcq("list").stdout
        assert f"deleting: delete-vpc {a} ({cid}):" in listing and "injected fault" in listing
        state = json.loads(net.vpcq("list", "--json").stdout)
        (d,) = state["deleting"]
        assert d["command_id"] == cid and d["left"] >= 1 and "injected fault" in d["error"]
        status = json.loads(net.vpcq("status", cid, "--json").stdout)
        assert status["status"] == "pending" and status["deleting"]["tries"] >= 1
        # a CLI waiting for a deletion says how it stands while it is tried again
        p = net.vpcq("delete-subnet", b, "app", "--timeout", "6")
        assert p.returncode == 4, p.stderr
        assert re.search(r"vpcq: [0-9a-f]+ deleting: \d+ left \(delete netns ", p.stderr), p.stderr
        assert "injected fault" in p.stderr and "trying again" in p.stderr
        assert "a deletion is tried again until it is done" in p.stderr
    finally:
        fault.write_text("")
    assert wait_until(lambda: net.vpcq("status", cid).returncode == 0, 30)
    assert "deleting" not in net.vpcq("list").stdout
