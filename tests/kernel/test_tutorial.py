"""The tutorial's scenario on the real kernel, through real workers and a real Redis."""

from __future__ import annotations

import pytest

from tests.kernel.conftest import INTERNET_IP, Net
from vpcq.testing import probe

pytestmark = pytest.mark.kernel


def two_vpcs(net: Net) -> tuple[str, str]:
    """my-vpc (public web, private db, apps in both) and other-vpc (public app)."""
    c = net.client()
    a, b = net.name("a"), net.name("b")
    results = c.submit(
        {"kind": "create-vpc", "name": a, "cidr": "10.0.0.0/16"},
        {"kind": "add-subnet", "vpc": a, "name": "web", "cidr": "10.0.1.0/24", "type": "public"},
        {"kind": "add-subnet", "vpc": a, "name": "db", "cidr": "10.0.2.0/24", "type": "private"},
        {"kind": "deploy-app", "vpc": a, "subnet": "web", "port": 8000},
        {"kind": "deploy-app", "vpc": a, "subnet": "db", "port": 8000},
        {"kind": "create-vpc", "name": b, "cidr": "10.1.0.0/16"},
        {"kind": "add-subnet", "vpc": b, "name": "app", "cidr": "10.1.1.0/24", "type": "public"},
        {"kind": "deploy-app", "vpc": b, "subnet": "app", "port": 8000},
    )
    assert results == ["applied"] * 8, results
    return a, b


def test_tutorial_scenario(worker: Net):
    net = worker
    a, b = two_vpcs(net)
    web, db, other = f"{a}-web", f"{a}-db", f"{b}-app"

    # 1. intra-VPC: every subnet reaches every other subnet of its VPC
    assert probe.http(web, "10.0.2.1") is not None
    assert probe.http(db, "10.0.1.1") is not None

    # 2. the host reaches apps in public and private subnets, and the page names them
    body = probe.http(net.host, "10.0.1.1")
    assert body is not None and f"VPC {a}" in body and "subnet web" in body
    assert "subnet db" in (probe.http(net.host, "10.0.2.1") or "")

    # 3. NAT: the public subnet reaches the internet, the private one does not,
    #    and nothing from the internet opens a connection into a subnet
    assert probe.ping(web, INTERNET_IP)
    assert not probe.ping(db, INTERNET_IP)
    with probe.tcp_listener(net.internet, 9999):
        assert probe.tcp(web, INTERNET_IP, 9999)
        assert not probe.tcp(db, INTERNET_IP, 9999)
    assert not probe.tcp(net.internet, "10.0.1.1", 8000)
    assert not probe.ping(net.internet, "10.0.1.1")

    # 4. isolation between VPCs, then peering, then unpeering restores it
    assert probe.http(web, "10.1.1.1") is None
    assert probe.http(other, "10.0.1.1") is None
    net.client().ok("peer-vpcs", a=a, b=b)
    assert probe.http(web, "10.1.1.1") is not None
    assert probe.http(other, "10.0.2.1") is not None
    net.client().ok("unpeer-vpcs", a=a, b=b)
    assert probe.http(web, "10.1.1.1") is None
    assert probe.http(other, "10.0.1.1") is None

    # 5. the firewall allows and denies real connections
    net.client().ok("apply-firewall", vpc=a, subnet="web", firewall={
        "ingress": [{"protocol": "tcp", "port": "8000", "action": "allow"},
                    {"protocol": "tcp", "port": "22", "action": "deny"},
                    {"protocol": "icmp", "action": "deny"}]})
    with probe.tcp_listener(web, 22):
        assert probe.http(net.host, "10.0.1.1") is not None
        assert not probe.tcp(net.host, "10.0.1.1", 22, timeout=0.5)
        assert not probe.ping(net.host, "10.0.1.1", timeout=0.5)
        assert probe.tcp(web, "127.0.0.1", 22)  # loopback is always allowed
    listing = probe.save(web, "iptables", "-L", "-n")
    assert "dpt:8000" in listing and "dpt:22" in listing  # the tutorial's own check


def test_isolation_in_both_directions_for_tcp_udp_and_icmp(worker: Net):
    a, b = two_vpcs(worker)
    pairs = [(f"{a}-web", f"{b}-app", "10.1.1.1", "10.0.1.1"),
             (f"{a}-db", f"{b}-app", "10.1.1.1", "10.0.2.1")]
    for left, right, right_ip, left_ip in pairs:
        for src, dst_ns, dst_ip in ((left, right, right_ip), (right, left, left_ip)):
            assert not probe.tcp(src, dst_ip, 8000, timeout=0.5), (src, dst_ip)
            assert not probe.ping(src, dst_ip, timeout=0.5), (src, dst_ip)
            with probe.udp_echo(dst_ns, 5353):
                assert not probe.udp(src, dst_ip, 5353, timeout=0.5), (src, dst_ip)
    # the probes themselves work: inside one VPC the same three succeed
    assert probe.tcp(f"{a}-web", "10.0.2.1", 8000)
    assert probe.ping(f"{a}-web", "10.0.2.1")
    with probe.udp_echo(f"{a}-db", 5353):
        assert probe.udp(f"{a}-web", "10.0.2.1", 5353)


def test_peering_is_not_transitive(worker: Net):
    c = worker.client()
    names = [worker.name(x) for x in "abc"]
    cmds = []
    for i, v in enumerate(names):
        cmds += [{"kind": "create-vpc", "name": v, "cidr": f"10.{i}.0.0/16"},
                 {"kind": "add-subnet", "vpc": v, "name": "s", "cidr": f"10.{i}.1.0/24"},
                 {"kind": "deploy-app", "vpc": v, "subnet": "s"}]
    cmds += [{"kind": "peer-vpcs", "a": names[0], "b": names[1]},
             {"kind": "peer-vpcs", "a": names[1], "b": names[2]}]
    assert set(c.submit(*cmds)) == {"applied"}
    a, b, cc = (f"{v}-s" for v in names)
    assert probe.http(a, "10.1.1.1") and probe.http(b, "10.2.1.1") and probe.http(cc, "10.1.1.1")
    assert probe.http(a, "10.2.1.1") is None
    assert probe.http(cc, "10.0.1.1") is None


def test_two_unpeered_vpcs_with_the_same_cidr_both_work(worker: Net):
    c = worker.client()
    x, y = worker.name("x"), worker.name("y")
    cmds = []
    for v in (x, y):
        cmds += [{"kind": "create-vpc", "name": v, "cidr": "10.7.0.0/16"},
                 {"kind": "add-subnet", "vpc": v, "name": "web", "cidr": "10.7.1.0/24",
                  "type": "public"},
                 {"kind": "add-subnet", "vpc": v, "name": "db", "cidr": "10.7.2.0/24"},
                 {"kind": "deploy-app", "vpc": v, "subnet": "db"}]
    assert set(c.submit(*cmds)) == {"applied"}
    for v in (x, y):
        body = probe.http(f"{v}-web", "10.7.2.1")
        assert body is not None and f"VPC {v}" in body  # its own db, not the twin's
        assert probe.ping(f"{v}-web", INTERNET_IP)
    # only the first one is reachable from the host, and `list` says why
    assert f"VPC {x}" in (probe.http(worker.host, "10.7.2.1") or "")
    assert "not reachable from the host" in worker.vpcq("list").stdout


def test_deploy_app_on_a_port_in_use_is_a_failed_change(worker: Net):
    c = worker.client()
    v = worker.name("p")
    c.ok("create-vpc", name=v, cidr="10.3.0.0/16")
    c.ok("add-subnet", vpc=v, name="s", cidr="10.3.1.0/24")
    with probe.tcp_listener(f"{v}-s", 8000):
        (res,) = c.submit({"kind": "deploy-app", "vpc": v, "subnet": "s", "port": 8000})
    assert res.startswith("failed:") and "8000" in res and "in use" in res, res
    assert c.state().vpcs[v].subnets["s"].app_port is None  # removed from the desired state
    c.ok("deploy-app", vpc=v, subnet="s", port=8000)  # the port is free again
    assert probe.http(f"{v}-s", "10.3.1.1") is not None


def test_apps_survive_a_worker_restart_and_are_restarted_if_they_die(net: Net):
    net.start_worker()
    c = net.client()
    v = net.name("r")
    c.ok("create-vpc", name=v, cidr="10.4.0.0/16")
    c.ok("add-subnet", vpc=v, name="s", cidr="10.4.1.0/24")
    c.ok("deploy-app", vpc=v, subnet="s")
    net.stop_workers()
    assert probe.http(net.host, "10.4.1.1") is not None
    p = net.vpcq("drift")
    assert p.returncode == 0, p.stdout + p.stderr
    import json
    import os
    import signal

    pid = json.loads((net.home / "apps" / f"{v}-s.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    p = net.vpcq("drift")
    assert p.returncode == 1 and "create app" in p.stdout
    assert net.vpcq("repair").returncode == 0
    assert probe.http(net.host, "10.4.1.1") is not None
