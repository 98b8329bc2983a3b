"""plan, diff and the rule renderers: pure, with golden files for the rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vpcq.events.commands import parse_firewall
from vpcq.orchestrator import rules
from vpcq.orchestrator.diff import diff, fuse
from vpcq.orchestrator.state import view_of
from vpcq.orchestrator.topology import (
    App,
    Bridge,
    HostChain,
    LinkState,
    Netns,
    ResolvConf,
    Resolver,
    Route,
    Rules,
    Veth,
    plan,
)  # fmt: skip

from .core import cmd, given

GOLDEN = Path(__file__).parent / "golden"

STATE = given(
    cmd("create-vpc", name="my-vpc", cidr="10.0.0.0/16"),
    cmd("add-subnet", vpc="my-vpc", name="web-subnet", cidr="10.0.1.0/24", type="public"),
    cmd("add-subnet", vpc="my-vpc", name="db-subnet", cidr="10.0.2.0/24"),
    cmd("create-vpc", name="other-vpc", cidr="10.1.0.0/16"),
    cmd("peer-vpcs", a="my-vpc", b="other-vpc"),
    cmd("deploy-app", vpc="my-vpc", subnet="web-subnet", port=8000),
    cmd("apply-firewall", vpc="my-vpc", subnet="web-subnet",
        firewall=parse_firewall({"ingress": [
            {"port": 8000, "protocol": "tcp", "action": "allow"},
            {"port": "9000-9010", "protocol": "udp", "action": "deny", "cidr": "10.1.0.0/16"},
            {"protocol": "icmp", "action": "allow"}],
            "egress": [{"protocol": "all", "action": "deny", "cidr": "203.0.113.0/24"}],
            "default": "deny"})[0].model_dump()),
)


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VPCQ_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_router_rules_golden():
    golden("router.rules", rules.router_rules(view_of(STATE, "my-vpc")))


def test_subnet_firewall_golden():
    sub = STATE.vpcs["my-vpc"].subnets["web-subnet"]
    golden("subnet-firewall.rules", rules.subnet_rules(sub))


def test_subnet_without_firewall_is_an_empty_accepting_table():
    sub = STATE.vpcs["my-vpc"].subnets["db-subnet"]
    text = rules.subnet_rules(sub)
    assert "-A " not in text and ":INPUT ACCEPT" in text


def test_host_rules_isolate_uplinks_and_masquerade_only_the_link_net():
    filt, nat = rules.host_rules(view_of(STATE, "my-vpc"), "eth0")
    up = STATE.vpcs["my-vpc"].uplink
    # a public port's connection (DNAT by vpcq) crosses uplinks; nothing else does
    assert filt[:2] == (f"-i {up.a_if} -o vq+ -m conntrack --ctstate DNAT -j ACCEPT",
                        f"-i {up.a_if} -o vq+ -j DROP")
    assert filt[-1] == f"-i eth0 -o {up.a_if} -j DROP"
    assert not [r for r in filt if "-i eth0" in r and "DNAT" in r]  # no public port: none in
    assert nat == (f"-s {up.net} -o eth0 -j MASQUERADE",)


def test_host_rules_without_an_internet_interface_only_isolate():
    filt, nat = rules.host_rules(view_of(STATE, "my-vpc"), None)
    assert len(filt) == 2 and filt[1].endswith("-j DROP") and nat == ()


def _plan(state=STATE, names=("my-vpc", "other-vpc")):
    return plan({n: view_of(state, n) for n in names}, "eth0")


def test_plan_contains_the_tutorial_objects():
    t = _plan()
    assert ("netns", "my-vpc-web-subnet") in t and ("netns", "vpcq_my-vpc") in t
    assert t[("route", "my-vpc-web-subnet", "default")] == Route(
        "my-vpc-web-subnet", "default", "10.0.1.254", "eth0")
    assert t[("route", None, "10.0.0.0/16")].gateway == "100.64.0.2"
    assert isinstance(t[("app", "my-vpc-web-subnet", 8000)], App)
    peer_veths = [r for r in t.values() if isinstance(r, Veth) and r.name.startswith("vp-")]
    assert len(peer_veths) == 1  # one object for the pair, whichever side plans it


def test_plan_is_the_same_pair_from_either_side():
    a = _plan(names=("my-vpc",))
    b = _plan(names=("other-vpc",))
    va = {k for k, r in a.items() if isinstance(r, Veth) and r.name.startswith("vp-")}
    vb = {k for k, r in b.items() if isinstance(r, Veth) and r.name.startswith("vp-")}
    assert va == vb


def test_overlapping_vpc_gets_no_host_route():
    state = given(cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
                  cmd("create-vpc", name="b", cidr="10.0.0.0/16"))
    t = plan({"b": view_of(state, "b")}, "eth0")
    assert not [r for r in t.values() if isinstance(r, Route) and r.ns is None]


def test_diff_of_a_topology_with_itself_is_empty():
    t = _plan()
    assert diff(t, dict(t)) == []


def test_diff_from_nothing_creates_in_dependency_order():
    steps = diff(_plan(), {})
    assert {s.op for s in steps} == {"create"}
    ranks = [s.resource.rank for s in steps]
    assert ranks == sorted(ranks)
    # the resolvers last: they listen on addresses made before them
    assert isinstance(steps[0].resource, Netns) and isinstance(steps[-1].resource, Resolver)


def test_diff_to_nothing_deletes_namespaces_apps_and_host_chains_only():
    steps = diff({}, _plan())
    kinds = {type(s.resource) for s in steps}
    # everything else dies with its namespace or its link (the host route with the uplink);
    # a veth whose other end survives (here, on the host) is deleted explicitly
    # processes (apps, resolvers) hold a namespace alive, and a resolv.conf outlives it
    assert kinds == {Netns, App, Resolver, ResolvConf, HostChain, Veth}, kinds
    assert {s.resource.name for s in steps if isinstance(s.resource, Veth)} == {
        v.uplink.a_if for v in STATE.vpcs.values()}
    assert isinstance(steps[0].resource, Resolver)
    assert all(s.op == "delete" for s in steps)
    assert isinstance(steps[-1].resource, Netns)


def test_fuse_creates_each_new_link_up_and_in_its_bridge_in_one_step():
    t = _plan()
    steps = diff(t, {})
    fused = fuse(steps)
    # every created bridge and veth end that is wanted up carries its state, and its own
    # LinkState step is gone; the peer ends and everything else are untouched, in order
    links = [s for s in steps if isinstance(s.resource, Veth | Bridge)]
    assert links and all(s.state == t[("linkstate", s.resource.ns, s.resource.name)]
                         for s in fused if isinstance(s.resource, Veth | Bridge))
    taken = {("linkstate", s.resource.ns, s.resource.name) for s in links}
    rest = [s for s in steps if not isinstance(s.resource, Veth | Bridge)
            and s.resource.key not in taken]
    assert [s for s in fused if not isinstance(s.resource, Veth | Bridge)] == rest
    assert len(fused) == len(steps) - len(links)
    veth = next(s for s in fused if isinstance(s.resource, Veth) and s.state and s.state.master)
    assert veth.describe().endswith(f"(up, master {veth.state.master})")


def test_fuse_leaves_a_link_that_already_exists_to_its_state_step():
    t = _plan()
    bridge = next(r for r in t.values() if isinstance(r, Bridge))
    # every link is there but one bridge, and none is up: only the new bridge is fused
    have = {k: r for k, r in t.items() if not isinstance(r, LinkState) and r != bridge}
    steps = diff(t, have)
    fused = fuse(steps)
    own = ("linkstate", bridge.ns, bridge.name)
    assert [s.state for s in fused if s.resource == bridge] == [t[own]]
    assert [s for s in fused if s.resource != bridge] == [s for s in steps
                                                          if s.resource not in (bridge, t[own])]
    assert any(isinstance(s.resource, LinkState) for s in fused)  # the other links' states stay


def test_changed_rules_are_updated_in_place():
    t = _plan()
    old = dict(t)
    key = ("rules", "vpcq_my-vpc")
    old[key] = Rules("vpcq_my-vpc", "*filter\nCOMMIT\n")
    (step,) = diff(t, old)
    assert step.op == "update" and step.resource == t[key]


@pytest.mark.parametrize("name", ["router.rules", "subnet-firewall.rules"])
def test_golden_files_exist(name):
    assert (GOLDEN / name).read_text().endswith("COMMIT\n")
