"""VPC services on the real kernel: DNS inside each VPC, public ports, load balancers with
health checks. Real workers, a real Redis, dnsmasq, and the simulated internet (which has a
DNS server of its own that knows one name)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

import pytest

from tests.kernel.conftest import INTERNET_DNS, INTERNET_IP, Net, wait_until
from tests.kernel.leftovers import nothing_left
from vpcq.testing import probe
from vpcq.testing.sandbox import INTERNET_NAME, started_with
from vpcq.workers.kernel import netns

pytestmark = pytest.mark.kernel


def vpcs(net: Net, *extra: dict) -> tuple[str, str, str]:
    """VPC a (public web 10.0.1.0/24, private db 10.0.2.0/24, apps in both), VPC b (public
    app 10.1.1.0/24, an app) peered with a, VPC c (private s 10.2.1.0/24) peered with none."""
    a, b, c = net.name("a"), net.name("b"), net.name("c")
    commands = [
        {"kind": "create-vpc", "name": a, "cidr": "10.0.0.0/16"},
        {"kind": "add-subnet", "vpc": a, "name": "web", "cidr": "10.0.1.0/24", "type": "public"},
        {"kind": "add-subnet", "vpc": a, "name": "db", "cidr": "10.0.2.0/24", "type": "private"},
        {"kind": "deploy-app", "vpc": a, "subnet": "web"},
        {"kind": "deploy-app", "vpc": a, "subnet": "db"},
        {"kind": "create-vpc", "name": b, "cidr": "10.1.0.0/16"},
        {"kind": "add-subnet", "vpc": b, "name": "app", "cidr": "10.1.1.0/24", "type": "public"},
        {"kind": "deploy-app", "vpc": b, "subnet": "app"},
        {"kind": "create-vpc", "name": c, "cidr": "10.2.0.0/16"},
        {"kind": "add-subnet", "vpc": c, "name": "s", "cidr": "10.2.1.0/24"},
        {"kind": "peer-vpcs", "a": a, "b": b},
        *extra,
    ]
    results = net.client().submit(*commands)
    assert set(results) == {"applied"}, results
    return a, b, c


def resolvers(net: Net) -> list[int]:
    """vpcq's dnsmasq processes of this test (their command line names its home)."""
    return [pid for pid in started_with(net.home)
            if b"dnsmasq" in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
            and b"/dns/" in open(f"/proc/{pid}/cmdline", "rb").read()]


# ---- DNS -----------------------------------------------------------------------------------


def test_the_resolution_matrix(worker: Net):
    net = worker
    a, b, c = vpcs(net)
    web, db, app, s = f"{a}-web", f"{a}-db", f"{b}-app", f"{c}-s"

    # same VPC: the short name through the search domain, and the full name
    assert probe.getent(web, "db") == "10.0.2.1"
    assert probe.getent(web, f"db.{a}.internal") == "10.0.2.1"
    assert probe.getent(db, "web") == "10.0.1.1"
    assert probe.dns(db, "10.0.2.254", f"web.{a}.internal") == ("NOERROR", ["10.0.1.1"])
    # peered: both ways
    assert probe.getent(web, f"app.{b}.internal") == "10.1.1.1"
    assert probe.getent(app, f"db.{a}.internal") == "10.0.2.1"
    # not peered: the name does not exist for this VPC, either way
    assert probe.dns(web, "10.0.1.254", f"s.{c}.internal") == ("NXDOMAIN", [])
    assert probe.dns(s, "10.2.1.254", f"web.{a}.internal") == ("NXDOMAIN", [])
    assert probe.getent(s, "s") == "10.2.1.1"
    # a public subnet's upstream: a name only the internet's DNS server knows
    assert probe.getent(web, INTERNET_NAME) == INTERNET_IP
    assert probe.dns(app, "10.1.1.254", INTERNET_NAME) == ("NOERROR", [INTERNET_IP])
    # a private subnet's: none. Its resolver refuses, and it cannot use the public one
    assert probe.dns(db, "10.0.2.254", INTERNET_NAME) == ("REFUSED", [])
    assert probe.dns(s, "10.2.1.254", INTERNET_NAME) == ("REFUSED", [])
    assert probe.dns(db, "10.0.1.254", INTERNET_NAME, timeout=1)[0] in ("UNREACHABLE", "TIMEOUT")
    assert probe.getent(db, INTERNET_NAME) is None
    # names under .internal never leave the VPC (nor reach the internet's server)
    assert probe.dns(web, "10.0.1.254", "nothing.internal") == ("NXDOMAIN", [])

    # a name gone with its subnet, here and in the peer, in the same change
    net.client().ok("stop-app", vpc=a, subnet="db")
    net.client().ok("delete-subnet", vpc=a, name="db")
    assert probe.dns(web, "10.0.1.254", f"db.{a}.internal") == ("NXDOMAIN", [])
    assert probe.dns(app, "10.1.1.254", f"db.{a}.internal") == ("NXDOMAIN", [])
    assert not netns_file(f"{a}-db").exists() and not netns_file(f"{a}-db").parent.exists()
    # a subnet added: its name at once
    net.client().ok("add-subnet", vpc=a, name="cache", cidr="10.0.3.0/24")
    assert probe.getent(web, "cache") == "10.0.3.1"
    # unpeered: the peer's names are gone
    net.client().ok("unpeer-vpcs", a=a, b=b)
    assert probe.dns(web, "10.0.1.254", f"app.{b}.internal") == ("NXDOMAIN", [])
    assert net.vpcq("drift").returncode == 0


def test_a_default_deny_firewall_still_lets_a_subnet_reach_its_resolver(worker: Net):
    net = worker
    a, _b, _c = vpcs(net, {"kind": "apply-firewall", "vpc": net.name("a"), "subnet": "web",
                           "firewall": {"ingress": [], "egress": [
                               {"protocol": "udp", "port": "53", "action": "deny"},
                               {"protocol": "tcp", "port": "53", "action": "deny"}],
                               "default": "deny"}})
    web = f"{a}-web"
    assert not probe.tcp(web, "10.0.2.1", 8000, timeout=0.5)  # the firewall is on
    assert probe.getent(web, "db") == "10.0.2.1"
    assert probe.getent(web, INTERNET_NAME) == INTERNET_IP
    # only its own resolver: another DNS server is as denied as the rules say (a packet
    # dropped in OUTPUT fails its send with EPERM)
    assert probe.dns(web, INTERNET_DNS, INTERNET_NAME, timeout=1) == ("UNREACHABLE", [])


def test_resolv_conf_and_resolvers_go_with_their_vpc(worker: Net):
    net = worker
    a, _b, _c = vpcs(net)
    conf = netns_file(f"{a}-web")
    assert conf.read_text().splitlines()[1:] == ["nameserver 10.0.1.254", f"search {a}.internal"]
    assert len(resolvers(net)) == 5  # a: internal and public; b: both (it has a peer); c: internal
    listing = json.loads(net.vpcq("list", "--json").stdout)
    web = next(s for v in listing["vpcs"] if v["name"] == a for s in v["subnets"] if s["name"] == "web")
    assert web["dns_name"] == f"web.{a}.internal" and web["resolver"] == "10.0.1.254"
    assert net.vpcq("cleanup").returncode == 0
    assert not conf.exists() and not conf.parent.exists()
    assert wait_until(lambda: not resolvers(net), 5), resolvers(net)
    assert nothing_left(net) == {}


def netns_file(ns: str):  # type: ignore[no-untyped-def]
    from vpcq.testing.sandbox import ETC_NETNS

    return ETC_NETNS / ns / "resolv.conf"


# ---- public ports ----------------------------------------------------------------------------

HOST_IP = "198.51.100.2"  # the host's address on the internet side (inet0)


def test_a_public_port_from_the_internet_the_host_and_subnets(worker: Net):
    net = worker
    a, b, _c = vpcs(net)
    web, db, app = f"{a}-web", f"{a}-db", f"{b}-app"
    assert net.vpcq("expose", a, "web", "9000", "--host-port", "8080").returncode == 0
    with probe.whoami(web, 9000, "web"):
        # from the internet, with the client's own address as the app sees it
        assert probe.ask(net.internet, HOST_IP, 8080, source=INTERNET_IP) == f"web {INTERNET_IP}"
        # from the host itself
        assert (probe.ask(net.host, HOST_IP, 8080) or "").startswith("web ")
        # from a subnet of another VPC, and from the exposed subnet itself (hairpin)
        assert (probe.ask(app, HOST_IP, 8080) or "").startswith("web ")
        assert (probe.ask(web, HOST_IP, 8080) or "").startswith("web ")
        # a port not exposed stays closed
        assert probe.ask(net.internet, HOST_IP, 9000, timeout=0.5) is None
        # refused at submit, with the reason: a private subnet, a host port taken
        p = net.vpcq("expose", a, "db", "8000", "--host-port", "8081")
        assert p.returncode == 2 and "private" in p.stderr and "create-lb" in p.stderr, p.stderr
        p = net.vpcq("expose", b, "app", "8000", "--host-port", "8080")
        assert p.returncode == 2 and "8080/tcp is already exposed" in p.stderr, p.stderr
        listing = json.loads(net.vpcq("list", "--json").stdout)
        ports = next(v["ports"] for v in listing["vpcs"] if v["name"] == a)
        assert ports == [{"host_port": 8080, "protocol": "tcp", "target": "web", "kind": "subnet",
                          "port": 9000}]
        assert net.vpcq("drift").returncode == 0
        assert net.vpcq("unexpose", a, "--host-port", "8080").returncode == 0
        assert probe.ask(net.internet, HOST_IP, 8080, timeout=0.5) is None
        assert not probe.tcp(db, HOST_IP, 8080, timeout=0.5)
    # udp too
    assert net.vpcq("expose", a, "web", "5300", "--protocol", "udp").returncode == 0
    with probe.udp_echo(web, 5300):
        assert probe.udp(net.internet, HOST_IP, 5300)
    assert net.vpcq("delete-subnet", a, "web").returncode == 0  # its public ports go with it
    assert not [ln for ln in probe.save(net.host, "iptables-save").splitlines() if "5300" in ln]


# ---- balancers -------------------------------------------------------------------------------


def spread(ns: str, ip: str, port: int, n: int) -> dict[str, int]:
    """Which target answered each of `n` new connections."""
    counts: dict[str, int] = {}
    for _ in range(n):
        who = (probe.ask(ns, ip, port, timeout=1) or "none").split()[0]
        counts[who] = counts.get(who, 0) + 1
    return counts


def health_of(net: Net, vpc: str, lb: str) -> dict[str, str]:
    listing = json.loads(net.vpcq("list", "--json").stdout)
    v = next(v for v in listing["vpcs"] if v["name"] == vpc)
    b = next(b for b in v["balancers"] if b["name"] == lb)
    return {t["subnet"]: t["health"] for t in b["targets"]}


def test_a_balancer_spreads_fails_over_and_comes_back(worker: Net):
    net = worker
    a, b, _c = vpcs(net, {"kind": "add-subnet", "vpc": net.name("a"), "name": "cache",
                          "cidr": "10.0.3.0/24"})
    web, db, cache, app = f"{a}-web", f"{a}-db", f"{a}-cache", f"{b}-app"
    with probe.whoami(web, 9000, "web"), probe.whoami(db, 9000, "db"):
        cache_server = probe.whoami(cache, 9001, "cache")
        cache_server.__enter__()
        try:
            # the listen port (80) is not the targets' (9000, 9001)
            p = net.vpcq("create-lb", a, "lb", "--port", "80", "--target", "web:9000",
                         "--target", "db:9000", "--target", "cache:9001", "--public", "8088")
            assert p.returncode == 0, p.stderr
            addr = probe.getent(web, "lb")
            assert addr is not None and addr == probe.getent(app, f"lb.{a}.internal")
            assert wait_until(lambda: health_of(net, a, "lb") == dict.fromkeys(("web", "db", "cache"), "up"), 10)
            # from a peer: 300 new connections, each target 1/3 within ±20%
            counts = spread(app, addr, 80, 300)
            assert set(counts) == {"web", "db", "cache"}, counts
            assert all(80 <= c <= 120 for c in counts.values()), counts
            # from a target itself: to the others (the kernel cannot forward it to itself)
            from_db = spread(db, addr, 80, 30)
            assert set(from_db) == {"web", "cache"} and all(c == 15 for c in from_db.values()), from_db
            # from the internet, through its public port, with the client's address kept
            assert (probe.ask(net.internet, HOST_IP, 8088, source=INTERNET_IP) or "").endswith(INTERNET_IP)
            # a port it does not balance is refused
            assert probe.ask(app, addr, 81, timeout=0.5) is None
        finally:
            cache_server.__exit__(None, None, None)
        # one target stops answering: within 5 s no new connection goes to it
        t0 = time.monotonic()
        assert wait_until(lambda: set(spread(app, addr, 80, 12)) == {"web", "db"}, 5, 0.1), \
            spread(app, addr, 80, 12)
        out = time.monotonic() - t0
        assert health_of(net, a, "lb")["cache"] == "down"
        assert "cache:9001 down" in net.vpcq("list").stdout
        with probe.whoami(cache, 9001, "cache"):
            t0 = time.monotonic()
            assert wait_until(lambda: "cache" in spread(app, addr, 80, 12), 5, 0.1)
            back = time.monotonic() - t0
            assert health_of(net, a, "lb")["cache"] == "up"
            # health is observed, not commanded: nothing of it is in the log
            log = net.vpcq("log").stdout
            assert "health" not in log.lower() and "ChangeFailed" not in log
            print(f"out of rotation after {out:.1f} s, back after {back:.1f} s")
            # new targets: the change is applied, the name stays
            assert net.vpcq("set-lb-targets", a, "lb", "--target", "cache:9001").returncode == 0
            assert set(spread(app, addr, 80, 10)) == {"cache"}
            assert net.vpcq("drift").returncode == 0
    # a subnet a balancer sends to is not deleted from under it
    p = net.vpcq("delete-subnet", a, "cache")
    assert p.returncode == 2 and "target of balancer lb" in p.stderr, p.stderr
    assert net.vpcq("delete-lb", a, "lb").returncode == 0
    assert probe.dns(web, "10.0.1.254", f"lb.{a}.internal") == ("NXDOMAIN", [])
    assert not [ln for ln in probe.save(net.host, "iptables-save").splitlines() if "8088" in ln]
    assert "VPCQ-LB" not in probe.save(f"vpcq_{a}", "iptables-save")


# ---- everywhere the other objects are ----------------------------------------------------------


def test_dns_ports_and_balancers_come_back_after_a_reboot(net: Net):
    from tests.kernel.test_recovery import reboot

    net.start_worker()
    a, b, _c = vpcs(net, {"kind": "expose", "vpc": net.name("a"), "target": "web", "port": 9000,
                          "host_port": 8080},
                    {"kind": "create-lb", "vpc": net.name("a"), "name": "lb", "port": 80,
                     "targets": ["web:9000", "db:9000"], "public": 8088})
    web, db, app = f"{a}-web", f"{a}-db", f"{b}-app"
    reboot(net)
    assert not resolvers(net) and probe.getent(web, "db") is None
    net.start_worker()  # like `vpcq up` after a reboot
    assert wait_until(lambda: net.vpcq("drift").returncode == 0, 30)
    assert len(resolvers(net)) == 5
    assert probe.getent(web, "db") == "10.0.2.1" and probe.getent(app, f"lb.{a}.internal") == "10.0.255.254"
    assert probe.getent(web, INTERNET_NAME) == INTERNET_IP
    with probe.whoami(web, 9000, "web"), probe.whoami(db, 9000, "db"):
        assert probe.ask(net.internet, HOST_IP, 8080, source=INTERNET_IP) == f"web {INTERNET_IP}"
        assert wait_until(lambda: set(spread(app, "10.0.255.254", 80, 10)) == {"web", "db"}, 10)
        assert (probe.ask(net.internet, HOST_IP, 8088, source=INTERNET_IP) or "").endswith(INTERNET_IP)


def test_drift_sees_a_resolver_killed_and_a_public_port_removed_and_repair_brings_them_back(worker: Net):
    net = worker
    a, _b, _c = vpcs(net, {"kind": "expose", "vpc": net.name("a"), "target": "web", "port": 9000,
                           "host_port": 8080})
    web = f"{a}-web"
    for pid in resolvers(net):
        os.kill(pid, signal.SIGKILL)
    probe.save(net.host, "iptables", "-t", "nat", "-F", "PREROUTING")
    netns_file(f"{a}-db").unlink()
    p = net.vpcq("drift")
    assert p.returncode == 1
    assert "resolver" in p.stdout and "hostports" in p.stdout.lower() and "resolvconf" in p.stdout.lower(), p.stdout
    assert net.vpcq("repair").returncode == 0
    assert net.vpcq("drift").returncode == 0
    assert probe.getent(f"{a}-db", "web") == "10.0.1.1"
    with probe.whoami(web, 9000, "web"):
        assert probe.ask(net.internet, HOST_IP, 8080, source=INTERNET_IP) == f"web {INTERNET_IP}"


def test_a_connection_stays_on_its_target_when_the_targets_change(worker: Net):
    net = worker
    a, b, _c = vpcs(net, {"kind": "create-lb", "vpc": net.name("a"), "name": "lb", "port": 80,
                          "targets": ["web:9100"]})
    web, db, app = f"{a}-web", f"{a}-db", f"{b}-app"
    with probe.talker(web, 9100, "web"), probe.talker(db, 9100, "db"):
        def connect() -> socket.socket:
            return netns.run_in(app, lambda: socket.create_connection(("10.0.255.254", 80), timeout=5))

        def say(f: Any, line: bytes) -> bytes:
            f.write(line + b"\n")
            f.flush()
            return f.readline().strip()

        s = connect()
        with s, s.makefile("rwb") as f:
            assert say(f, b"one") == b"web one"
            assert net.vpcq("set-lb-targets", a, "lb", "--target", "db:9100").returncode == 0
            # a new connection goes to the new target; the open one stays where it was
            new = connect()
            with new, new.makefile("rwb") as g:
                assert say(g, b"new") == b"db new"
            assert say(f, b"two") == b"web two"
