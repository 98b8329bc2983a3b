"""A fault at every step of every kind of change leaves the kernel exactly as it was."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import Net
from tests.kernel.scenarios import two_vpcs
from tests.kernel.snapshot import snapshot

pytestmark = pytest.mark.kernel


LB = {"kind": "create-lb", "vpc": "<a>", "name": "lb", "port": 80,
      "targets": ["web:9000", "db:9000"], "public": 8088}


def base(net: Net, kind: str) -> tuple[str, str]:
    # a balancer to change the targets of
    return two_vpcs(net, *([LB] if kind == "set-lb-targets" else []))


def command(kind: str, a: str, b: str, tok: str) -> dict[str, Any]:
    return {
        "create-vpc": {"kind": "create-vpc", "name": f"{tok}c", "cidr": "10.2.0.0/16"},
        "add-subnet": {"kind": "add-subnet", "vpc": a, "name": "new", "cidr": "10.0.3.0/24",
                       "type": "public"},
        "deploy-app": {"kind": "deploy-app", "vpc": a, "subnet": "db", "port": 8080},
        "stop-app": {"kind": "stop-app", "vpc": a, "subnet": "web"},
        "apply-firewall": {"kind": "apply-firewall", "vpc": a, "subnet": "web", "firewall": {
            "ingress": [{"protocol": "tcp", "port": "8000", "action": "allow"}],
            "default": "deny"}},
        "peer-vpcs": {"kind": "peer-vpcs", "a": a, "b": b},
        "delete-subnet": {"kind": "delete-subnet", "vpc": a, "name": "web"},
        "delete-vpc": {"kind": "delete-vpc", "name": a},
        "expose": {"kind": "expose", "vpc": a, "target": "web", "port": 8000, "host_port": 8080},
        "create-lb": {**LB, "vpc": a},
        "set-lb-targets": {"kind": "set-lb-targets", "vpc": a, "name": "lb", "targets": ["db:9000"]},
    }[kind]


def changes(before: dict[str, Any], after: dict[str, Any], path: str = "") -> list[str]:
    """Where two snapshots differ, as short paths (for the assertion message)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            out += changes(before.get(k), after.get(k), f"{path}/{k}")
        return out
    if before == after:
        return []
    if isinstance(before, list) and isinstance(after, list):
        return [f"{path}: -{sorted(set(map(str, before)) - set(map(str, after)))} "
                f"+{sorted(set(map(str, after)) - set(map(str, before)))}"]
    return [f"{path}: {before!r} -> {after!r}"]


# changes: a deletion goes forward instead (tests/kernel/test_deletes.py)
KINDS = ["create-vpc", "add-subnet", "deploy-app", "apply-firewall", "peer-vpcs", "expose",
         "create-lb", "set-lb-targets"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_at_every_step_rolls_the_kernel_back(net: Net, kind: str):
    fault = net.home / "fault"
    net.start_worker(extra={"VPCQ_FAULT_FILE": str(fault)})
    a, b = base(net, kind)
    before = snapshot(net.tok, net.host, net.home / "apps")
    cmd = command(kind, a, b, net.tok)
    c = net.client()
    for index in range(60):
        fault.write_text(f"step:{index}")
        (result,) = c.submit(cmd)
        if result == "applied":
            break  # the plan has fewer steps than `index`: nothing left to break
        assert result.startswith("failed:") and "injected fault" in result, (index, result)
        after = snapshot(net.tok, net.host, net.home / "apps")
        assert after == before, f"{kind}: fault at step {index}: {changes(before, after)}"
    else:
        pytest.fail("the command never got past the faults")
    assert index >= 1, "the command had no step to break"
    assert snapshot(net.tok, net.host, net.home / "apps") != before  # it did apply at last
    failures = [e for e in c.events() if e.type == "ChangeFailed"]
    assert len(failures) == index
    fault.write_text("")
    assert net.vpcq("drift").returncode == 0


def test_the_cli_reports_a_failed_change_with_its_reason(net: Net):
    fault = net.home / "fault"
    net.start_worker(extra={"VPCQ_FAULT_FILE": str(fault)})
    v = net.name("f")
    assert net.vpcq("create-vpc", v, "10.6.0.0/16").returncode == 0
    fault.write_text("kind:Bridge")
    p = net.vpcq("add-subnet", v, "web", "10.6.1.0/24")
    assert p.returncode == 1
    assert "failed" in p.stderr and "injected fault" in p.stderr and "bridge" in p.stderr
    p = net.vpcq("log", "--vpc", v)
    assert "ChangeFailed" in p.stdout and "VpcRestored" in p.stdout
    assert "web" not in net.vpcq("list").stdout
