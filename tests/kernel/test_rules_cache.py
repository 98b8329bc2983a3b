"""A warm worker reads a namespace's rules again exactly when the nftables generation moved."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.kernel.conftest import Net
from tests.kernel.scenarios import FIREWALL, two_vpcs
from vpcq.workers.kernel import iptables
from vpcq.workers.kernel.driver import Scope
from vpcq.workers.kernel.kernel import Kernel

pytestmark = pytest.mark.kernel


def test_rules_are_read_again_only_after_a_change(net: Net, monkeypatch: pytest.MonkeyPatch):
    net.start_worker()
    a, _b = two_vpcs(net, {"kind": "apply-firewall", "vpc": "<a>", "subnet": "web",
                           "firewall": FIREWALL})
    ns = f"{a}-web"
    saves: list[str] = []
    real_save = iptables.save_here

    def counting_save(where: str = "host") -> str:
        saves.append(where)
        return real_save(where)

    monkeypatch.setattr(iptables, "save_here", counting_save)
    kernel = Kernel(net.home / "apps", net.home / "run" / "host-rules.lock")

    def rules() -> str:
        scope = Scope(namespaces=frozenset({ns}), rules_ns=frozenset({ns}))
        out = asyncio.run(kernel.observe(scope, {}))
        return out[("rules", ns)].text  # type: ignore[attr-defined,no-any-return]

    try:
        first = rules()
        assert "--dport 8000" in first and saves == [ns]
        assert rules() == first and saves == [ns]  # unchanged: not read again
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-I", "INPUT", "-p", "udp",
                        "--dport", "9", "-j", "ACCEPT"], check=True)
        changed = rules()
        assert "--dport 9" in changed and saves == [ns, ns]  # a hand edit is seen at once
        assert rules() == changed and saves == [ns, ns]
    finally:
        kernel.close()


def test_host_rules_are_read_once_not_once_per_change(net: Net):
    """The host's rules are read once: a worker's own changes, and another worker's, are
    applied to the text held (which matches a fresh read). Runs in a child that plays the
    host in the test's namespace."""
    p = subprocess.run(
        [sys.executable, "-m", "tests.kernel.host_rules_reads", net.host, str(net.home)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {
        "observe": 1,
        "create the chain": 0,  # the observation's read: no rule changed since
        "observe after it": 0,  # the chain's own document applied to the text it held
        "observe again": 0,
        "another worker's observe": 0,  # the file the host's workers share
        "another worker's chain": 0,
        "observe after that": 0,
        "held text is the kernel's": 1,  # the same chains and rules as a fresh read
        "delete the chain": 0,
        "delete the other": 0,  # and the last one removes the tables vpcq made
        "observe at the end": 1,  # removing a table is not followed: the table is read
        "tables left": 0,
        "host reads only": 1,
    }
