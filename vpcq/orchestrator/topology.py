"""plan(views) -> Topology: the kernel objects the log wants, as plain comparable records.

The kernel adapter's `observe` returns the same records for what exists, and `diff`
compares the two. `ns=None` means the host (the namespace the worker runs in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vpcq.orchestrator import dns, naming, rules
from vpcq.orchestrator.state import VpcView


@dataclass(frozen=True, slots=True)
class Netns:
    name: str
    rank = 0

    @property
    def ns(self) -> str:
        return self.name

    @property
    def key(self) -> tuple[str, ...]:
        return ("netns", self.name)


@dataclass(frozen=True, slots=True)
class Sysctl:
    ns: str | None
    name: str  # path under /proc/sys, e.g. "net/ipv4/ip_forward"
    value: str
    rank = 1

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("sysctl", self.ns, self.name)


@dataclass(frozen=True, slots=True)
class Bridge:
    ns: str
    name: str
    rank = 2

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("link", self.ns, self.name)


@dataclass(frozen=True, slots=True)
class Veth:
    """A veth pair, created whole; keyed by its first end."""

    ns: str | None
    name: str
    peer_ns: str
    peer_name: str
    rank = 3

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("link", self.ns, self.name)


@dataclass(frozen=True, slots=True)
class LinkState:
    """An interface's master and operational state (administratively up)."""

    ns: str | None
    name: str
    master: str | None = None
    up: bool = True
    rank = 4

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("linkstate", self.ns, self.name)


@dataclass(frozen=True, slots=True)
class Addr:
    ns: str | None
    dev: str
    address: str
    prefixlen: int
    rank = 5

    @property
    def key(self) -> tuple[str | int | None, ...]:
        return ("addr", self.ns, self.dev, self.address, self.prefixlen)


@dataclass(frozen=True, slots=True)
class Route:
    ns: str | None
    dst: str  # "default" or a CIDR
    gateway: str
    dev: str
    rank = 6

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("route", self.ns, self.dst)


@dataclass(frozen=True, slots=True)
class Rules:
    """A whole iptables-restore document for a namespace vpcq owns."""

    ns: str
    text: str
    rank = 7

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("rules", self.ns)


@dataclass(frozen=True, slots=True)
class HostChain:
    """One VPC's chains on the host (filter FORWARD, nat POSTROUTING) and their jumps."""

    chain: str
    uplink: str
    filter: tuple[str, ...]
    nat: tuple[str, ...]
    ns: None = None
    rank = 8

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("hostchain", self.chain)


@dataclass(frozen=True, slots=True)
class App:
    ns: str
    port: int
    vpc: str
    subnet: str
    rank = 9

    @property
    def key(self) -> tuple[str | int | None, ...]:
        return ("app", self.ns, self.port)


@dataclass(frozen=True, slots=True)
class HostPorts:
    """One VPC's public ports on the host: a nat chain of DNATs to its router, and the jumps
    to it for the host's own addresses (see rules.host_port_jumps)."""

    chain: str
    rules: tuple[str, ...]
    jumped: bool = True  # False: seen with a jump to it missing
    ns: None = None
    rank = 8

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("hostports", self.chain)


@dataclass(frozen=True, slots=True)
class ResolvConf:
    """/etc/netns/<ns>/resolv.conf, which `ip netns exec <ns>` binds over /etc/resolv.conf."""

    ns: str
    text: str
    rank = 9

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("resolvconf", self.ns)


@dataclass(frozen=True, slots=True)
class Resolver:
    """A DNS server of a VPC, in its router: dnsmasq, configured by `text` alone."""

    ns: str
    name: str  # its role: dns.INTERNAL (forwards nowhere) or dns.PUBLIC
    text: str
    rank = 10

    @property
    def key(self) -> tuple[str | None, ...]:
        return ("resolver", self.ns, self.name)


Resource = (Netns | Sysctl | Bridge | Veth | LinkState | Addr | Route | Rules | HostChain | App
            | HostPorts | ResolvConf | Resolver)


@dataclass(frozen=True)
class Facts:
    """What a plan takes from outside the log: observed, never decided, never recorded."""

    dns_upstream: str | None = None  # the host's resolver, for public subnets (None: none)
    # (VPC, balancer, "subnet:port") of targets failing their health checks
    down: frozenset[tuple[str, str, str]] = frozenset()


NO_FACTS = Facts()

UNKNOWN = "?"  # the peer of a veth end seen alone (broken, or not vpcq's): Veth(ns, name, "?", "?")
Topology = dict[tuple[object, ...], Resource]

FORWARD = "net/ipv4/ip_forward"
NO_REDIRECTS = ("net/ipv4/conf/all/send_redirects", "net/ipv4/conf/default/send_redirects")


def _add(t: Topology, *resources: Resource) -> None:
    for r in resources:
        t[r.key] = r


def plan(views: Mapping[str, VpcView], default_if: str | None, facts: Facts = NO_FACTS) -> Topology:
    """The desired kernel objects of the given VPCs (an absent VPC wants nothing).

    `default_if` is the host's internet interface for VPCs created without --interface;
    `facts`, the host's resolver and the balancers' targets that fail their checks.
    """
    t: Topology = {}
    for view in views.values():
        v = view.vpc
        if v is None:
            continue
        r = v.router_ns
        up = v.uplink
        _add(
            t,
            Netns(r),
            Sysctl(r, FORWARD, "1"),
            *(Sysctl(r, k, "0") for k in NO_REDIRECTS),
            Sysctl(None, FORWARD, "1"),
            Veth(None, up.a_if, r, up.b_if),
            LinkState(None, up.a_if),
            LinkState(r, up.b_if),
            LinkState(r, "lo"),
            Addr(None, up.a_if, up.a_addr, up.prefixlen),
            Addr(r, up.b_if, up.b_addr, up.prefixlen),
            Route(r, "default", up.a_addr, up.b_if),
            Rules(r, rules.router_rules(view, facts.down)),
        )
        if v.host_route:
            _add(t, Route(None, v.cidr, up.b_addr, up.a_if))
        filt, nat = rules.host_rules(view, v.interface or default_if)
        _add(t, HostChain(rules.host_chain(v.key), up.a_if, filt, nat))
        if v.exposures:
            _add(t, HostPorts(rules.host_ports_chain(v.key), rules.host_port_rules(view)))
        for role, text in dns.resolvers(view, facts.dns_upstream).items():
            _add(t, Resolver(r, role, text))
        for s in v.subnets.values():
            _add(
                t,
                Netns(s.netns),
                Bridge(r, s.bridge),
                LinkState(r, s.bridge),
                Addr(r, s.bridge, s.gateway, s.prefixlen),
                Veth(r, s.veth, s.netns, naming.SUBNET_IF),
                LinkState(r, s.veth, master=s.bridge),
                LinkState(s.netns, naming.SUBNET_IF),
                LinkState(s.netns, "lo"),
                Addr(s.netns, naming.SUBNET_IF, s.address, s.prefixlen),
                Route(s.netns, "default", s.gateway, naming.SUBNET_IF),
                Rules(s.netns, rules.subnet_rules(s)),
                ResolvConf(s.netns, dns.resolv_conf(v, s)),
            )
            if s.app_port is not None:
                _add(t, App(s.netns, s.app_port, v.name, s.name))
        for p in view.peerings:
            mine_a = p.a == v.name
            ifname = p.link.a_if if mine_a else p.link.b_if
            addr = p.link.a_addr if mine_a else p.link.b_addr
            other_addr = p.link.b_addr if mine_a else p.link.a_addr
            other_cidr = p.b_cidr if mine_a else p.a_cidr
            _add(
                t,
                # keyed by its `a` end whichever side is planned, so the pair is one object
                Veth(p.link.a_ns, p.link.a_if, p.link.b_ns, p.link.b_if),
                LinkState(r, ifname),
                Addr(r, ifname, addr, p.link.prefixlen),
                Route(r, other_cidr, other_addr, ifname),
            )
    return t


HOST = "\0host"  # stands for the host namespace in sets of namespace names


def _where(r: Resource) -> set[str]:
    ns = {HOST if r.ns is None else r.ns}
    if isinstance(r, Veth):
        ns.add(r.peer_ns)
    return ns


def changed_namespaces(*tops: Topology) -> set[str]:
    """The namespaces (HOST for the host) holding a resource that differs between any two of
    the topologies: where a change can have an effect."""
    keys: set[tuple[object, ...]] = set()
    for t in tops:
        keys |= t.keys()
    out: set[str] = set()
    for k in keys:
        versions = {t.get(k) for t in tops}
        if len(versions) > 1:
            for r in versions:
                if r is not None:
                    out |= _where(r)
    return out


def narrow(t: Topology, namespaces: set[str]) -> Topology:
    """The part of a topology that lives in the given namespaces (a veth pair with an end
    in one of them included, so that end is not taken for a stray)."""
    return {k: r for k, r in t.items() if _where(r) & namespaces}
