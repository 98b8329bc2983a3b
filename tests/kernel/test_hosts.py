"""Several hosts sharing one Redis: each VPC is built by the workers of the host it is on."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.kernel.conftest import Net, wait_until
from vpcq.testing import probe
from vpcq.workers.kernel import netns

pytestmark = pytest.mark.kernel


def test_vpcs_on_two_hosts_sharing_one_redis_are_built_by_their_hosts_workers(net: Net):
    edge = net.name("e")  # a second host: a namespace of its own, the same Redis
    netns.create(edge)
    try:
        subprocess.run(["ip", "-n", edge, "link", "set", "lo", "up"], check=True)
        net.start_worker()  # the default host's
        net.start_worker(extra={"VPCQ_NETNS": edge, "VPCQ_HOST": "edge"})
        a, b = net.name("a"), net.name("b")
        c = net.client()
        assert c.submit(
            {"kind": "create-vpc", "name": a, "cidr": "10.0.0.0/16"},
            {"kind": "add-subnet", "vpc": a, "name": "web", "cidr": "10.0.1.0/24"},
            # the same CIDR on another host does not overlap: each gets its host route
            {"kind": "create-vpc", "name": b, "cidr": "10.0.0.0/16", "host": "edge"},
            {"kind": "add-subnet", "vpc": b, "name": "web", "cidr": "10.0.1.0/24"},
        ) == ["applied"] * 4
        state = c.state()
        up_a, up_b = state.vpcs[a].uplink.a_if, state.vpcs[b].uplink.a_if

        def links(ns: str) -> str:
            return probe.save(ns, "ip", "-o", "link", "show")

        assert up_a in links(net.host) and up_a not in links(edge)
        assert up_b in links(edge) and up_b not in links(net.host)
        for host, up in ((net.host, up_a), (edge, up_b)):
            assert up in probe.save(host, "ip", "route", "show", "10.0.0.0/16")
        # each host's worker applied its own VPCs' commands, and only those
        logs = {w: (net.home / "log" / f"{w}.log").read_text() for w in ("w0", "w1")}
        applied = {w: {ln.split('"vpcs": ["', 1)[1].split('"', 1)[0]
                       for ln in text.splitlines() if '"event": "applied"' in ln}
                   for w, text in logs.items()}
        assert applied == {"w0": {a}, "w1": {b}}
        # a worker starting on the default host (after a reboot) restores its host's VPCs only
        net.start_worker()

        def logs() -> str:
            return "".join((net.home / "log" / f"w{i}.log").read_text() for i in range(3))

        assert wait_until(lambda: f"repair:{a}:" in logs(), 10)
        time.sleep(0.5)
        assert f"repair:{b}" not in logs()
        listed = json.loads(net.vpcq("list", "--json").stdout)
        assert {v["name"]: v["host"] for v in listed["vpcs"]} == {a: "default", b: "edge"}
        assert listed["workers"] == {"default": 2, "edge": 1}  # w0 and w2; w1

        p = net.vpcq("drift", b)  # looked at from the default host: not its VPC
        assert p.returncode == 2 and f"{b} is on host edge, not on this one (default)" in p.stderr
        p = net.vpcq("drift")  # every VPC of the default host, none of edge's
        assert p.returncode == 0, p.stdout
        p = net.vpcq("peer-vpcs", a, b)
        assert p.returncode == 2 and "different hosts (default, edge)" in p.stderr
        p = net.vpcq("cleanup", "--no-wait")
        assert p.returncode == 2 and "vpcq cleanup --host HOST" in p.stderr

        # b made again on the default host while its deletion on edge is still pending, in
        # one batch: edge's workers delete it there, then the default host's make it here
        assert c.submit(
            {"kind": "delete-vpc", "name": b},
            {"kind": "create-vpc", "name": b, "cidr": "10.5.0.0/16"},
            {"kind": "add-subnet", "vpc": b, "name": "web", "cidr": "10.5.1.0/24"},
        ) == ["applied"] * 3
        up_b2 = c.state().vpcs[b].uplink.a_if
        assert up_b not in links(edge)
        assert up_b2 in links(net.host) and up_b2 not in links(edge)
        assert "10.5.1.1" in probe.save(f"{b}-web", "ip", "-4", "-o", "addr", "show")

        e = net.name("c")
        net.client().ok("create-vpc", name=e, cidr="10.6.0.0/16", host="edge")
        up_e = c.state().vpcs[e].uplink.a_if
        assert up_e in links(edge)
        p = net.vpcq("cleanup", "--host", "edge")
        assert p.returncode == 0, p.stderr
        assert up_e not in links(edge) and up_a in links(net.host) and up_b2 in links(net.host)
        assert set(c.state().vpcs) == {a, b}
        assert net.vpcq("drift").returncode == 0  # the default host's view: its VPCs, intact

        # with edge's worker stopped, a command for edge waits, and the CLI says why
        assert c.listening("default", "edge") == {"default": 2, "edge": 1}  # w0, w2; w1
        net.workers[1].terminate()
        assert net.workers[1].wait(15) == 0
        assert c.listening("default", "edge") == {"default": 2, "edge": 0}
        p = net.vpcq("create-vpc", net.name("d"), "10.7.0.0/16", "--host", "edge", "--timeout", "3")
        assert p.returncode == 4
        assert "vpcq: no worker of host 'edge' is up (start one: `VPCQ_HOST=edge vpcq worker`)" \
            in p.stderr
    finally:
        net.stop_workers()
        netns.remove(edge)
