"""Every command, and every rejection, as given / when / then."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given as hgiven
from hypothesis import strategies as st

from vpcq.errors import DomainError
from vpcq.events.commands import parse_command, parse_firewall
from vpcq.events.schema import (
    AppDeployed,
    AppStopped,
    CommandAccepted,
    FirewallApplied,
    SubnetAdded,
    SubnetDeleted,
    VpcCreated,
    VpcDeleted,
    VpcsPeered,
    VpcsUnpeered,
)
from vpcq.orchestrator import naming
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.naming import overlap

from .core import apply, cmd, given, rejected

VPC = cmd("create-vpc", name="my-vpc", cidr="10.0.0.0/16")
WEB = cmd("add-subnet", vpc="my-vpc", name="web-subnet", cidr="10.0.1.0/24", type="public")
DB = cmd("add-subnet", vpc="my-vpc", name="db-subnet", cidr="10.0.2.0/24")
OTHER = cmd("create-vpc", name="other-vpc", cidr="10.1.0.0/16")


def test_create_vpc_decides_names_and_link_net():
    accepted, created = decide(VPC, given())
    assert isinstance(accepted, CommandAccepted)
    assert accepted.kind == "create-vpc" and accepted.vpcs == ("my-vpc",) and accepted.events == 1
    assert isinstance(created, VpcCreated)
    assert created.router_ns == "vpcq_my-vpc"
    assert created.uplink.net == "100.64.0.0/30"
    assert (created.uplink.a_addr, created.uplink.b_addr) == ("100.64.0.1", "100.64.0.2")
    assert created.uplink.a_if.startswith("vq") and len(created.uplink.a_if) <= 15
    assert created.host_route is True


def test_second_vpc_gets_the_next_link_net_and_a_distinct_key():
    _, created = decide(OTHER, given(VPC))
    assert created.uplink.net == "100.64.0.4/30"
    assert created.key != given(VPC).vpcs["my-vpc"].key


def test_link_nets_are_not_reused_soon_after_delete():
    state = given(VPC, cmd("delete-vpc", name="my-vpc"))
    _, created = decide(OTHER, state)
    assert created.uplink.net == "100.64.0.4/30"


def test_once_the_link_net_pool_wrapped_around_a_live_link_net_is_skipped():
    state = dataclasses.replace(given(VPC), linknet_hwm=naming.LINKNET_SLOTS)
    _, created = decide(OTHER, state)
    assert created.uplink.net == "100.64.0.4/30"  # 100.64.0.0/30 is my-vpc's uplink


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        ({"name": "My-VPC", "cidr": "10.0.0.0/16"}, "name", "not a valid name"),
        ({"name": "-vpc", "cidr": "10.0.0.0/16"}, "name", "not a valid name"),
        ({"name": "a" * 33, "cidr": "10.0.0.0/16"}, "name", "not a valid name"),
        ({"name": "", "cidr": "10.0.0.0/16"}, "name", "not a valid name"),
        ({"name": "v", "cidr": "10.0.0.1/16"}, "cidr", "host bits"),
        ({"name": "v", "cidr": "10.0.0.0/33"}, "cidr", "not an IPv4 network"),
        ({"name": "v", "cidr": "banana"}, "cidr", "not an IPv4 network"),
        ({"name": "v", "cidr": "10.0.0.0/16", "interface": "eth0; rm -rf /"}, "interface",
         "not a valid interface name"),
    ],
)
def test_create_vpc_rejects_bad_shapes(args, field, fragment):
    with pytest.raises(DomainError) as e:
        parse_command({"kind": "create-vpc", **args})
    assert e.value.field == field and fragment in e.value.reason


@pytest.mark.parametrize("cidr", ["10.0.0.0/7", "10.0.0.0/29", "10.0.0.0/30"])
def test_create_vpc_rejects_sizes_outside_8_to_28(cidr):
    rejected(given(), cmd("create-vpc", name="v", cidr=cidr), "cidr", "between /8 and /28")


def test_create_vpc_rejects_a_duplicate_name():
    rejected(given(VPC), VPC, "name", "already exists")


def test_overlapping_unpeered_vpcs_are_allowed_but_only_the_first_gets_the_host_route():
    _, created = decide(cmd("create-vpc", name="twin", cidr="10.0.0.0/16"), given(VPC))
    assert created.host_route is False


def test_add_subnet_uses_first_host_and_last_host_as_gateway():
    _, added = decide(WEB, given(VPC))
    assert isinstance(added, SubnetAdded)
    assert added.netns == "my-vpc-web-subnet"
    assert (added.address, added.gateway, added.prefixlen) == ("10.0.1.1", "10.0.1.254", 24)
    assert added.public is True
    assert max(len(added.bridge), len(added.veth)) <= 15


def test_add_subnet_defaults_to_private():
    _, added = decide(DB, given(VPC))
    assert added.public is False


@pytest.mark.parametrize(
    ("command", "field", "fragment"),
    [
        (cmd("add-subnet", vpc="nope", name="s", cidr="10.0.1.0/24"), "vpc", "no VPC"),
        (cmd("add-subnet", vpc="my-vpc", name="s", cidr="10.9.1.0/24"), "cidr", "not inside"),
        (cmd("add-subnet", vpc="my-vpc", name="s", cidr="10.0.1.0/30"), "cidr", "smaller than a /29"),
        (cmd("add-subnet", vpc="my-vpc", name="s", cidr="10.0.1.128/25"), "cidr", "overlaps"),
        (cmd("add-subnet", vpc="my-vpc", name="web-subnet", cidr="10.0.9.0/24"), "name",
         "already exists"),
    ],
)
def test_add_subnet_rejections(command, field, fragment):
    rejected(given(VPC, WEB), command, field, fragment)


def test_add_subnet_rejects_bad_type():
    with pytest.raises(DomainError) as e:
        parse_command({"kind": "add-subnet", "vpc": "v", "name": "s", "cidr": "10.0.0.0/24",
                       "type": "dmz"})
    assert e.value.field == "type"


def test_add_subnet_accepts_a_29():
    _, added = decide(cmd("add-subnet", vpc="my-vpc", name="s", cidr="10.0.3.0/29"), given(VPC))
    assert (added.address, added.gateway) == ("10.0.3.1", "10.0.3.6")


def test_namespace_names_never_collide_across_vpcs():
    # "a-b" + "c" and "a" + "b-c" would both be namespace "a-b-c"
    state = given(
        cmd("create-vpc", name="a-b", cidr="10.0.0.0/16"),
        cmd("add-subnet", vpc="a-b", name="c", cidr="10.0.1.0/24"),
        cmd("create-vpc", name="a", cidr="10.1.0.0/16"),
    )
    rejected(state, cmd("add-subnet", vpc="a", name="b-c", cidr="10.1.1.0/24"), "name",
             "already used")
    # the other way round, and with the split at a later dash
    state = given(
        cmd("create-vpc", name="a", cidr="10.1.0.0/16"),
        cmd("add-subnet", vpc="a", name="b-c-d", cidr="10.1.1.0/24"),
        cmd("create-vpc", name="a-b-c", cidr="10.0.0.0/16"),
        cmd("create-vpc", name="a-b", cidr="10.2.0.0/16"),
    )
    rejected(state, cmd("add-subnet", vpc="a-b-c", name="d", cidr="10.0.1.0/24"), "name",
             "subnet a/b-c-d")
    rejected(state, cmd("add-subnet", vpc="a-b", name="c-d", cidr="10.2.1.0/24"), "name",
             "subnet a/b-c-d")
    _, added = decide(cmd("add-subnet", vpc="a-b", name="c", cidr="10.2.1.0/24"), state)
    assert added.netns == "a-b-c"


def test_delete_subnet():
    assert decide(cmd("delete-subnet", vpc="my-vpc", name="web-subnet"), given(VPC, WEB))[1] == \
        SubnetDeleted(vpc="my-vpc", name="web-subnet")
    rejected(given(VPC), cmd("delete-subnet", vpc="my-vpc", name="web-subnet"), "name",
             "no subnet")


def test_deploy_app_defaults_to_port_8000():
    ev = decide(cmd("deploy-app", vpc="my-vpc", subnet="web-subnet"), given(VPC, WEB))[1]
    assert ev == AppDeployed(vpc="my-vpc", subnet="web-subnet", port=8000)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_deploy_app_rejects_bad_ports(port):
    with pytest.raises(DomainError) as e:
        parse_command({"kind": "deploy-app", "vpc": "v", "subnet": "s", "port": port})
    assert e.value.field == "port"


def test_deploy_app_twice_is_rejected_and_stop_app_needs_an_app():
    state = given(VPC, WEB, cmd("deploy-app", vpc="my-vpc", subnet="web-subnet", port=8080))
    rejected(state, cmd("deploy-app", vpc="my-vpc", subnet="web-subnet"), "subnet",
             "already runs on port 8080")
    assert decide(cmd("stop-app", vpc="my-vpc", subnet="web-subnet"), state)[1] == \
        AppStopped(vpc="my-vpc", subnet="web-subnet", port=8080)
    rejected(given(VPC, WEB), cmd("stop-app", vpc="my-vpc", subnet="web-subnet"), "subnet",
             "no app")
    rejected(given(VPC), cmd("deploy-app", vpc="my-vpc", subnet="nope"), "subnet", "no subnet")


def _fw(data):
    firewall, named = parse_firewall(data)
    return cmd("apply-firewall", vpc="my-vpc", subnet="web-subnet", firewall=firewall.model_dump(),
               file_subnet=named)


def test_apply_firewall_accepts_the_tutorial_file():
    data = {"subnet": "10.0.1.0/24", "ingress": [
        {"port": 80, "protocol": "tcp", "action": "allow"},
        {"port": 22, "protocol": "tcp", "action": "deny"}]}
    ev = decide(_fw(data), given(VPC, WEB))[1]
    assert isinstance(ev, FirewallApplied)
    assert [r.port for r in ev.firewall.ingress] == ["80", "22"]
    assert ev.firewall.default == "allow"


def test_apply_firewall_accepts_ranges_egress_cidr_and_default_deny():
    data = {"ingress": [{"port": "8000-8010", "protocol": "tcp", "action": "allow",
                         "cidr": "10.0.0.0/16"}, {"protocol": "icmp", "action": "allow"}],
            "egress": [{"protocol": "all", "action": "deny", "cidr": "203.0.113.0/24"}],
            "default": "deny"}
    ev = decide(_fw(data), given(VPC, WEB))[1]
    assert ev.firewall.ingress[0].port == "8000-8010"
    assert ev.firewall.egress[0].cidr == "203.0.113.0/24"
    assert ev.firewall.default == "deny"


def test_apply_firewall_rejects_a_file_naming_another_subnet():
    data = {"subnet": "10.0.2.0/24", "ingress": []}
    rejected(given(VPC, WEB, DB), _fw(data), "firewall.subnet", "names subnet")


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"port": 70000, "protocol": "tcp", "action": "allow"}, "outside 1-65535"),
        ({"port": "9-1", "protocol": "tcp", "action": "allow"}, "reversed"),
        ({"port": 80, "protocol": "sctp", "action": "allow"}, "protocol"),
        ({"port": 80, "protocol": "tcp", "action": "maybe"}, "action"),
        ({"port": 80, "protocol": "icmp", "action": "allow"}, "makes no sense"),
        ({"port": "80;", "protocol": "tcp", "action": "allow"}, "not a port"),
        ({"protocol": "tcp", "action": "allow", "cidr": "10.0.0.0/99"}, "not an IPv4"),
    ],
)
def test_firewall_file_rejections(rule, fragment):
    with pytest.raises(DomainError) as e:
        parse_firewall({"ingress": [rule]})
    assert e.value.field.startswith("firewall.ingress.0"), e.value.field
    assert fragment in str(e.value), e.value


def test_firewall_default_must_be_allow_or_deny():
    with pytest.raises(DomainError):
        parse_firewall({"ingress": [], "default": "reject"})


def test_peer_vpcs_allocates_a_link_and_routes_both_ways():
    _, peered = decide(cmd("peer-vpcs", a="my-vpc", b="other-vpc"), given(VPC, OTHER))
    assert isinstance(peered, VpcsPeered)
    assert peered.link.a_ns == "vpcq_my-vpc" and peered.link.b_ns == "vpcq_other-vpc"
    assert (peered.a_cidr, peered.b_cidr) == ("10.0.0.0/16", "10.1.0.0/16")


@pytest.mark.parametrize(
    ("a", "b", "field", "fragment"),
    [
        ("my-vpc", "my-vpc", "b", "itself"),
        ("my-vpc", "nope", "b", "no VPC"),
        ("nope", "my-vpc", "a", "no VPC"),
        ("my-vpc", "twin", "b", "overlap"),
    ],
)
def test_peer_vpcs_rejections(a, b, field, fragment):
    state = given(VPC, OTHER, cmd("create-vpc", name="twin", cidr="10.0.0.0/24"))
    rejected(state, cmd("peer-vpcs", a=a, b=b), field, fragment)


def test_peer_twice_and_unpeer_unpeered_are_rejected():
    state = given(VPC, OTHER, cmd("peer-vpcs", a="my-vpc", b="other-vpc"))
    rejected(state, cmd("peer-vpcs", a="other-vpc", b="my-vpc"), "b", "already peered")
    assert decide(cmd("unpeer-vpcs", a="other-vpc", b="my-vpc"), state)[1] == \
        VpcsUnpeered(a="other-vpc", b="my-vpc")
    rejected(given(VPC, OTHER), cmd("unpeer-vpcs", a="my-vpc", b="other-vpc"), "b", "not peered")


def test_delete_vpc_unpeers_first_and_touches_the_peer():
    state = given(VPC, OTHER, cmd("peer-vpcs", a="my-vpc", b="other-vpc"))
    accepted, *events = decide(cmd("delete-vpc", name="my-vpc"), state)
    assert events == [VpcsUnpeered(a="my-vpc", b="other-vpc"), VpcDeleted(name="my-vpc")]
    assert set(accepted.vpcs) == {"my-vpc", "other-vpc"}
    rejected(given(), cmd("delete-vpc", name="my-vpc"), "name", "no VPC")


def test_cleanup_deletes_every_vpc_and_each_peering_once():
    state = given(VPC, OTHER, cmd("peer-vpcs", a="my-vpc", b="other-vpc"))
    _, *events = decide(cmd("cleanup"), state)
    assert events == [VpcsUnpeered(a="my-vpc", b="other-vpc"), VpcDeleted(name="my-vpc"),
                      VpcDeleted(name="other-vpc")]
    after = apply(state, cmd("cleanup"))
    assert not after.vpcs and not after.peerings


def test_cleanup_of_nothing_is_an_empty_command():
    accepted, = decide(cmd("cleanup"), given())
    assert accepted.vpcs == () and accepted.events == 0


EDGE = cmd("create-vpc", name="edge-vpc", cidr="10.0.0.0/16", host="edge-1")


def test_a_vpc_is_placed_on_a_host_the_default_one_unless_named():
    state = given(VPC, EDGE, cmd("add-subnet", vpc="edge-vpc", name="web", cidr="10.0.1.0/24"))
    assert decide(VPC, given())[1].host == "default"
    assert state.vpcs["my-vpc"].host == "default" and state.vpcs["edge-vpc"].host == "edge-1"
    # same CIDR on another host: the host route is only withheld for an overlap on one host
    assert state.vpcs["edge-vpc"].host_route
    assert not apply(state, cmd("create-vpc", name="b", cidr="10.0.0.0/16")).vpcs["b"].host_route
    with pytest.raises(DomainError, match="host: 'Edge_1' is not a valid name"):
        cmd("create-vpc", name="x", cidr="10.0.0.0/16", host="Edge_1")


def test_vpcs_on_different_hosts_cannot_be_peered():
    rejected(given(VPC, OTHER.model_copy(update={"host": "edge-1"})),
             cmd("peer-vpcs", a="my-vpc", b="other-vpc"), "b", "different hosts (default, edge-1)")


def test_cleanup_with_vpcs_on_several_hosts_names_the_host():
    state = given(VPC, OTHER, EDGE.model_copy(update={"cidr": "10.9.0.0/16"}))
    rejected(state, cmd("cleanup"), "host", "2 hosts (default, edge-1)")
    _, *events = decide(cmd("cleanup", host="edge-1"), state)
    assert events == [VpcDeleted(name="edge-vpc")]
    _, *events = decide(cmd("cleanup", host="default"), state)
    assert events == [VpcDeleted(name="my-vpc"), VpcDeleted(name="other-vpc")]


def test_decide_writes_the_host_each_command_is_applied_on():
    edge_web = cmd("add-subnet", vpc="edge-vpc", name="web", cidr="10.0.1.0/24")
    state = given(VPC, EDGE, edge_web)
    assert decide(EDGE, given())[0].host == "edge-1"  # where it is made
    assert decide(VPC, given())[0].host == "default"
    assert decide(edge_web.model_copy(update={"name": "db", "cidr": "10.0.2.0/24"}),
                  state)[0].host == "edge-1"  # where its VPC is
    assert decide(cmd("delete-vpc", name="edge-vpc"), state)[0].host == "edge-1"  # where it was
    assert decide(cmd("cleanup", host="edge-1"), state)[0].host == "edge-1"
    assert decide(cmd("cleanup"), given())[0].host is None  # no VPC: nothing to apply
    # deleted on one host and made again on another: each command names its own
    gone = apply(state, cmd("delete-vpc", name="edge-vpc"))
    again = EDGE.model_copy(update={"host": "edge-2"})
    assert decide(again, gone)[0].host == "edge-2"
    past = given(VPC)
    now = apply(apply(past, cmd("delete-vpc", name="my-vpc")), again)
    assert decide(cmd("rollback", vpc="my-vpc", to_seq=past.seq), now, past)[0].host == "default"


def test_a_rollback_that_would_move_a_vpc_or_a_peering_between_hosts_is_refused():
    past = given(EDGE)
    moved = apply(apply(past, cmd("delete-vpc", name="edge-vpc")),
                  EDGE.model_copy(update={"host": "default"}))
    with pytest.raises(DomainError, match="edge-vpc is on host default now and was on edge-1"):
        decide(cmd("rollback", vpc="edge-vpc", to_seq=past.seq), moved, past)
    past = given(VPC, OTHER, cmd("peer-vpcs", a="my-vpc", b="other-vpc"))
    peer_moved = apply(apply(past, cmd("delete-vpc", name="other-vpc")),
                       OTHER.model_copy(update={"host": "edge-1"}))
    rb = cmd("rollback", vpc="my-vpc", to_seq=past.seq)
    with pytest.raises(DomainError, match="peered with a VPC that is on another host now"):
        decide(rb, peer_moved, past)


def test_interface_names_fit_for_32_character_names():
    long_vpc, long_sub = "v" * 32, "s" * 32
    state = given(cmd("create-vpc", name=long_vpc, cidr="10.0.0.0/16"),
                  cmd("add-subnet", vpc=long_vpc, name=long_sub, cidr="10.0.1.0/24"))
    v = state.vpcs[long_vpc]
    s = v.subnets[long_sub]
    for name in (v.uplink.a_if, v.uplink.b_if, s.bridge, s.veth):
        assert len(name) <= 15, name
    assert s.netns == f"{long_vpc}-{long_sub}"


def test_decide_is_deterministic():
    state = given(VPC, WEB)
    assert decide(DB, state) == decide(DB, state)


_nets = st.builds(lambda a, p: str(ipaddress.IPv4Network((a, p), strict=False)),
                  st.integers(0, 2**32 - 1), st.integers(8, 30))


@hgiven(_nets, _nets)
def test_overlap_agrees_with_ipaddress(a, b):
    assert overlap(a, b) == ipaddress.IPv4Network(a).overlaps(ipaddress.IPv4Network(b))
