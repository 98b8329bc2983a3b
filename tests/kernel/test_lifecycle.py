"""Idempotence, exact cleanup, long names: the kernel after vpcq equals the kernel before."""

from __future__ import annotations

import json

import pytest

from tests.kernel.conftest import Net
from tests.kernel.scenarios import FIREWALL, two_vpcs
from vpcq.testing import probe

pytestmark = pytest.mark.kernel


def host_snapshot(net: Net) -> dict[str, str]:
    """What the host namespace and the machine's namespace list look like."""
    from vpcq.workers.kernel import netns

    return {
        "namespaces": "\n".join(n for n in netns.list_names() if net.tok in n),
        "links": probe.save(net.host, "ip", "-o", "link", "show"),
        # IPv4 only: vpcq makes no IPv6 objects, and link-local IPv6 settles on its own time
        "addresses": probe.save(net.host, "ip", "-4", "-o", "addr", "show"),
        "routes": probe.save(net.host, "ip", "-4", "route", "show", "table", "all"),
        "iptables": probe.save(net.host, "iptables-save"),
        "nft": probe.save(net.host, "nft", "list", "ruleset"),
        "forwarding": probe.save(net.host, "sysctl", "-n", "net.ipv4.ip_forward"),
    }


def scenario(net: Net) -> None:
    two_vpcs(
        net,
        {"kind": "apply-firewall", "vpc": "<a>", "subnet": "web", "firewall": FIREWALL},
        {"kind": "peer-vpcs", "a": "<a>", "b": "<b>"},
    )


def test_cleanup_leaves_the_host_exactly_as_it_was(worker: Net):
    # ip_forward is the one host setting vpcq turns on and leaves (as the tutorial does)
    probe.save(worker.host, "sysctl", "-w", "net.ipv4.ip_forward=1")
    before = host_snapshot(worker)
    scenario(worker)
    during = host_snapshot(worker)
    assert during["iptables"] != before["iptables"] and during["links"] != before["links"]
    p = worker.vpcq("cleanup")
    assert p.returncode == 0, p.stderr
    assert host_snapshot(worker) == before
    assert not list((worker.home / "apps").glob("*.json"))


def test_delete_subnet_and_delete_vpc_remove_exactly_their_objects(worker: Net):
    probe.save(worker.host, "sysctl", "-w", "net.ipv4.ip_forward=1")
    before = host_snapshot(worker)
    scenario(worker)
    a = worker.name("a")
    c = worker.client()
    c.ok("delete-subnet", vpc=a, name="web")
    from vpcq.workers.kernel import netns

    assert not netns.exists(f"{a}-web") and netns.exists(f"{a}-db")
    assert probe.http(worker.host, "10.0.1.1") is None
    c.ok("delete-vpc", name=a)
    assert not netns.exists(f"vpcq_{a}") and not netns.exists(f"{a}-db")
    assert netns.exists(f"vpcq_{worker.name('b')}")
    c.ok("delete-vpc", name=worker.name("b"))
    assert host_snapshot(worker) == before


def test_applying_a_firewall_twice_gives_byte_identical_rules(worker: Net):
    scenario(worker)
    ns = f"{worker.name('a')}-web"
    first = probe.save(ns, "iptables-save")
    fw = FIREWALL
    worker.client().ok("apply-firewall", vpc=worker.name("a"), subnet="web", firewall=fw)
    assert probe.save(ns, "iptables-save") == first
    assert "vpcq rule 1" in first


def test_repair_of_an_unchanged_vpc_performs_no_step(worker: Net):
    scenario(worker)
    p = worker.vpcq("drift", "--json")
    assert p.returncode == 0 and p.stdout == "", p.stdout
    p = worker.vpcq("repair", "--json")
    assert p.returncode == 0 and p.stdout == "", p.stdout


def test_interface_names_for_32_character_names(worker: Net):
    vpc = (worker.tok + "v" * 32)[:32]
    sub = "s" * 32
    c = worker.client()
    c.ok("create-vpc", name=vpc, cidr="10.9.0.0/16")
    c.ok("add-subnet", vpc=vpc, name=sub, cidr="10.9.1.0/24", type="public")
    c.ok("deploy-app", vpc=vpc, subnet=sub)
    assert probe.http(worker.host, "10.9.1.1") is not None
    listing = json.loads(worker.vpcq("list", "--json").stdout)
    (v,) = listing["vpcs"]
    names = [v["uplink"]["a_if"], v["uplink"]["b_if"],
             v["subnets"][0]["bridge"], v["subnets"][0]["router_veth"]]
    assert all(len(n) <= 15 for n in names), names
    links = probe.save(v["router_namespace"], "ip", "-o", "link", "show")
    for n in names[1:]:
        assert f" {n}" in links or f" {n}@" in links


def test_the_cli_waits_for_the_worker_and_reports_applied(worker: Net):
    p = worker.vpcq("create-vpc", worker.name("c"), "10.5.0.0/16")
    assert p.returncode == 0 and p.stdout.startswith("applied "), (p.stdout, p.stderr)
    p = worker.vpcq("add-subnet", worker.name("c"), "web", "10.5.1.0/24", "--type", "public",
                    "--json")
    assert json.loads(p.stdout)["status"] == "applied"
