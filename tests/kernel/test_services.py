"""VPC services on the real kernel: DNS inside each VPC, public ports, load balancers with
health checks. Real workers, a real Redis, dnsmasq, and the simulated internet (which has a
DNS server of its own that knows one name)."""

from __future__ import annotations

import json

import pytest

from tests.kernel.conftest import INTERNET_DNS, INTERNET_IP, Net, wait_until
from tests.kernel.leftovers import nothing_left
from vpcq.testing import probe
from vpcq.testing.sandbox import INTERNET_NAME, started_with

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
