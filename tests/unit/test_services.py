"""VPC services in the pure core: decisions on public ports and balancers, the balancers'
and ports' rules (golden), and the DNS files."""

from __future__ import annotations

from vpcq.events.schema import LoadBalancerCreated, PortExposed, PortUnexposed, SubnetDeleted
from vpcq.orchestrator import dns, rules
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.state import view_of
from vpcq.orchestrator.topology import Facts, HostPorts, Resolver, plan

from .core import cmd, given, rejected
from .test_plan import golden

BASE = (
    cmd("create-vpc", name="my-vpc", cidr="10.0.0.0/16"),
    cmd("add-subnet", vpc="my-vpc", name="web", cidr="10.0.1.0/24", type="public"),
    cmd("add-subnet", vpc="my-vpc", name="db", cidr="10.0.2.0/24"),
    cmd("add-subnet", vpc="my-vpc", name="cache", cidr="10.0.3.0/24"),
    cmd("create-vpc", name="other", cidr="10.1.0.0/16"),
    cmd("add-subnet", vpc="other", name="app", cidr="10.1.1.0/24", type="public"),
)
LB = cmd("create-lb", vpc="my-vpc", name="lb", port=80,
         targets=["web:9000", "db:9000", "cache:9001"], public=8088)
STATE = given(*BASE, LB, cmd("expose", vpc="my-vpc", target="web", port=8000, host_port=8080))


def test_create_lb_decides_an_address_outside_every_subnet_and_its_public_port():
    _, created, exposed = decide(LB, given(*BASE))
    assert isinstance(created, LoadBalancerCreated) and isinstance(exposed, PortExposed)
    assert created.address == "10.0.255.254" and created.port == 80
    assert [(t.subnet, t.port) for t in created.targets] == [("web", 9000), ("db", 9000), ("cache", 9001)]
    assert (exposed.host_port, exposed.target, exposed.balancer, exposed.port) == (8088, "lb", True, 80)


def test_refusals_at_submit():
    rejected(STATE, cmd("expose", vpc="my-vpc", target="db", port=8000), "target", "is private")
    rejected(STATE, cmd("expose", vpc="other", target="app", port=1, host_port=8080), "host_port",
             "8080/tcp is already exposed")
    rejected(STATE, cmd("expose", vpc="other", target="app", port=1, host_port=8088), "host_port",
             "already exposed")
    rejected(STATE, cmd("expose", vpc="my-vpc", target="lb", port=81), "port", "listens on port 80")
    rejected(STATE, cmd("unexpose", vpc="my-vpc", host_port=9999), "host_port", "not exposed")
    rejected(STATE, LB, "name", "already exists")
    rejected(STATE, cmd("create-lb", vpc="my-vpc", name="web", port=80, targets=["db:1"]), "name",
             "names a subnet")
    rejected(STATE, cmd("create-lb", vpc="my-vpc", name="b", port=80, targets=["nope:1"]),
             "targets", "no subnet named 'nope'")
    rejected(STATE, cmd("create-lb", vpc="my-vpc", name="b", port=80, targets=["db:1", "db:1"]),
             "targets", "given twice")
    rejected(STATE, cmd("create-lb", vpc="my-vpc", name="b", port=80, targets=["db:1"],
                        address="10.0.2.7"), "address", "is in subnet db")
    rejected(STATE, cmd("add-subnet", vpc="my-vpc", name="lb", cidr="10.0.9.0/24"), "name",
             "names a balancer")
    rejected(STATE, cmd("add-subnet", vpc="my-vpc", name="x", cidr="10.0.255.0/24"), "cidr",
             "address of balancer lb")
    rejected(STATE, cmd("delete-subnet", vpc="my-vpc", name="db"), "name", "target of balancer lb")


def test_a_udp_port_is_not_the_tcp_port_of_the_same_number():
    (_, e) = decide(cmd("expose", vpc="other", target="app", port=53, host_port=8080,
                        protocol="udp"), STATE)
    assert isinstance(e, PortExposed) and e.protocol == "udp"


def test_a_subnet_deleted_takes_its_public_ports_with_it():
    events = decide(cmd("delete-subnet", vpc="my-vpc", name="web"),
                    given(*BASE, cmd("expose", vpc="my-vpc", target="web", port=8000)))
    assert [type(e) for e in events[1:]] == [PortUnexposed, SubnetDeleted]


def test_router_rules_with_a_balancer_and_public_ports_golden():
    golden("router-services.rules", rules.router_rules(view_of(STATE, "my-vpc")))


def test_a_target_down_leaves_the_rotation_and_all_down_fails_open():
    view = view_of(STATE, "my-vpc")
    down = frozenset({("my-vpc", "lb", "db:9000")})
    text = rules.router_rules(view, down)
    assert "10.0.2.1:9000" not in text and "10.0.3.1:9001" in text and "10.0.1.1:9000" in text
    everything = frozenset(("my-vpc", "lb", t) for t in ("web:9000", "db:9000", "cache:9001"))
    assert rules.router_rules(view, everything) == rules.router_rules(view)


def test_host_ports_dnat_to_the_router_and_are_planned_only_with_ports():
    t = plan({"my-vpc": view_of(STATE, "my-vpc")}, "eth0")
    (hp,) = [r for r in t.values() if isinstance(r, HostPorts)]
    up = STATE.vpcs["my-vpc"].uplink.b_addr
    assert hp.rules == (f"-p tcp -m tcp --dport 8080 -j DNAT --to-destination {up}",
                        f"-p tcp -m tcp --dport 8088 -j DNAT --to-destination {up}")
    assert not [r for r in plan({"other": view_of(STATE, "other")}, "eth0").values()
                if isinstance(r, HostPorts)]


def test_resolvers_public_forwards_to_the_upstream_private_nowhere():
    peered = given(*BASE, cmd("peer-vpcs", a="my-vpc", b="other"))
    t = plan({"my-vpc": view_of(peered, "my-vpc")}, "eth0", Facts(dns_upstream="203.0.113.53"))
    conf = {r.name: r.text for r in t.values() if isinstance(r, Resolver)}
    assert set(conf) == {dns.PUBLIC, dns.INTERNAL}
    assert "server=203.0.113.53" in conf[dns.PUBLIC].splitlines()
    assert not [ln for ln in conf[dns.INTERNAL].splitlines() if ln.startswith("server=2")]
    for text in conf.values():
        assert "host-record=db.my-vpc.internal,10.0.2.1" in text.splitlines()
        assert "no-resolv" in text.splitlines()
        # the peer's zone is asked of the peer's resolver over the peering link
        assert [ln for ln in text.splitlines() if ln.startswith("server=/other.internal/100.64.")]
    assert "listen-address=10.0.1.254" in conf[dns.PUBLIC].splitlines()
    assert "listen-address=10.0.2.254" in conf[dns.INTERNAL].splitlines()


def test_a_vpc_with_upstream_none_forwards_nowhere():
    state = given(cmd("create-vpc", name="v", cidr="10.0.0.0/16", dns_upstream="none"),
                  cmd("add-subnet", vpc="v", name="web", cidr="10.0.1.0/24", type="public"))
    t = plan({"v": view_of(state, "v")}, "eth0", Facts(dns_upstream="203.0.113.53"))
    (r,) = [r for r in t.values() if isinstance(r, Resolver)]
    assert not [ln for ln in r.text.splitlines() if ln.startswith("server=")]


def test_resolv_conf_names_the_gateway_and_the_search_domain():
    v = STATE.vpcs["my-vpc"]
    text = dns.resolv_conf(v, v.subnets["db"])
    assert text.startswith(dns.MARK)
    assert text.splitlines()[1:] == ["nameserver 10.0.2.254", "search my-vpc.internal"]
