"""Pure renderers of iptables-restore documents (golden-tested).

Inside namespaces vpcq owns whole tables; on the host it owns only its per-VPC chains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Set

from vpcq.events.schema import Firewall, LbTarget, Rule
from vpcq.orchestrator import dns, naming
from vpcq.orchestrator.state import Balancer, Subnet, Vpc, VpcView

COMMENT = "vpcq"
# what a namespace's filter table looks like with no rules (also a fresh namespace's)
EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def router_rules(view: VpcView, down: Set[tuple[str, str, str]] = frozenset()) -> str:
    """The router namespace's filter and nat tables. `down`: (VPC, balancer, "subnet:port")
    of targets failing their health checks, left out of their balancer's rotation."""
    v = view.vpc
    assert v is not None
    up = naming.UPLINK_IF
    host_addr = v.uplink.a_addr
    lbs = sorted(v.balancers.values(), key=lambda b: b.name)
    f = [
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        # a balancer's address on a port it does not balance: refused, not bounced to the host
        *(f"-A FORWARD -d {b.address}/32 -j REJECT --reject-with icmp-port-unreachable" for b in lbs),
        # every subnet of the VPC reaches every other (the implicit "local" route)
        "-A FORWARD -i vb-+ -o vb-+ -j ACCEPT",
        # the host reaches every subnet, public or private
        f"-A FORWARD -s {host_addr}/32 -i {up} -o vb-+ -j ACCEPT",
    ]
    if v.exposures:  # what the host sent here for a public port (only vpcq's DNAT makes this state)
        f.append(f"-A FORWARD -i {up} -o vb-+ -m conntrack --ctstate DNAT -j ACCEPT")
    pre, post, chains = _balanced(v, lbs, down)
    for s in sorted(v.subnets.values(), key=lambda s: s.name):
        if s.public:
            f.append(f"-A FORWARD -s {s.cidr} -i {s.bridge} -o {up} -j ACCEPT")
            post.append(f"-A POSTROUTING -s {s.cidr} -o {up} -j SNAT --to-source {v.uplink.b_addr}")
    for p in sorted(view.peerings, key=lambda p: (p.a, p.b)):
        mine = p.link.a_if if p.a == v.name else p.link.b_if
        other_cidr = _peer_cidr(view, p.a if p.b == v.name else p.b)
        if other_cidr is None:
            continue
        f.append(f"-A FORWARD -s {other_cidr} -d {v.cidr} -i {mine} -o vb-+ -j ACCEPT")
        f.append(f"-A FORWARD -s {v.cidr} -d {other_cidr} -i vb-+ -o {mine} -j ACCEPT")
    filt = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        *_resolver_input(view),
        *f,
        "COMMIT",
    ]
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        *(f":{c} - [0:0]" for c in sorted(chains)),
        *pre,
        *post,
        *(rule for c in sorted(chains) for rule in chains[c]),
        "COMMIT",
    ]
    # in the order iptables-save prints them: built-in chains, then user chains by name
    return "\n".join([*filt, *nat, ""])


def balancer_chain(key: str) -> str:
    """A balancer's nat chain in its router: its rotation."""
    return f"VPCQ-LB-{key}"


def rotation(lb: Balancer, vpc: str, down: Set[tuple[str, str, str]]) -> list[LbTarget]:
    """The targets new connections go to: the healthy ones, in order; all of them if none is
    healthy (failing open: a check that cannot reach any target is more likely wrong than
    every target at once)."""
    healthy = [t for t in lb.targets if (vpc, lb.name, f"{t.subnet}:{t.port}") not in down]
    return healthy or list(lb.targets)


def _balanced(v: Vpc, lbs: list[Balancer], down: Set[tuple[str, str, str]]
              ) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The nat rules of the VPC's balancers and public ports: PREROUTING, POSTROUTING, and
    each balancer's chains (see `_spread`).

    A target that connects to its own balancer is sent to the others: the kernel does not
    forward a packet whose destination is its source (the router drops the DNATed SYN
    before FORWARD, whatever the NAT after it), as AWS's balancers with the client's address
    kept cannot send a target to itself either. It has a chain of its own, the rotation
    without it, jumped to by its source address; with no other target it reaches none."""
    pre: list[str] = []
    chains: dict[str, list[str]] = {}
    for b in lbs:
        chain = balancer_chain(b.key)
        pre.append(f"-A PREROUTING -d {b.address}/32 -p tcp -m tcp --dport {b.port} -j {chain}")
        targets = [(v.subnets[t.subnet].address, t.port) for t in rotation(b, v.name, down)]
        rules = []
        addresses = sorted({a for a, _ in targets}, key=ipaddress.IPv4Address)
        for i, addr in enumerate(addresses):
            others = [t for t in targets if t[0] != addr]
            if others:
                rules.append(f"-A {chain} -s {addr}/32 -j {chain}-{i}")
                chains[f"{chain}-{i}"] = _spread(f"{chain}-{i}", others)
        chains[chain] = rules + _spread(chain, targets)
    uplink_addr = v.uplink.b_addr
    for e in sorted(v.exposures.values(), key=lambda e: (e.host_port, e.protocol)):
        match = (f"-d {uplink_addr}/32 -i {naming.UPLINK_IF} -p {e.protocol} -m {e.protocol} "
                 f"--dport {e.host_port}")
        if e.balancer:
            pre.append(f"-A PREROUTING {match} -j {balancer_chain(v.balancers[e.target].key)}")
        else:
            pre.append(f"-A PREROUTING {match} -j DNAT --to-destination "
                       f"{v.subnets[e.target].address}:{e.port}")
    return pre, [], chains


def _spread(chain: str, targets: list[tuple[str, int]]) -> list[str]:
    """Rules that send the n-th new connection of every k to the n-th of k targets: rule i
    takes every (k - i)-th of the connections the rules before it left (`statistic --mode
    nth`, counted per rule), the last takes the rest. An even spread, and conntrack keeps
    each connection on the target it got."""
    out = []
    for i, (addr, port) in enumerate(targets):
        nth = (f" -m statistic --mode nth --every {len(targets) - i} --packet 0"
               if i < len(targets) - 1 else "")
        out.append(f"-A {chain} -p tcp{nth} -j DNAT --to-destination {addr}:{port}")
    return out


def _resolver_input(view: VpcView) -> list[str]:
    """DNS to the router: each resolver address only from where it serves (a subnet its own
    gateway, a peer the peering link), so a private subnet cannot use the public subnets'
    resolver to reach names outside the VPC."""
    where = [w for role in dns.listeners(view).values() for w in role]
    if not where:
        return []
    out = [f"-A INPUT -d {addr}/32 -i {ifname} -p {proto} -m {proto} --dport 53 -j ACCEPT"
           for ifname, addr in sorted(where, key=lambda w: ipaddress.IPv4Address(w[1]))
           for proto in ("udp", "tcp")]
    out += [f"-A INPUT -p {proto} -m {proto} --dport 53 -j REJECT --reject-with icmp-port-unreachable"
            for proto in ("udp", "tcp")]
    return out


def _peer_cidr(view: VpcView, other: str) -> str | None:
    for p in view.peerings:
        if other in (p.a, p.b):
            return p.b_cidr if p.b == other else p.a_cidr
    return None


def subnet_rules(s: Subnet) -> str:
    """The subnet namespace's filter table: its security group (empty when none)."""
    fw = s.firewall
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    if fw is not None:
        lines += _group("INPUT", "-i lo", fw.ingress, fw, "-s")
        if fw.egress:  # outbound is open unless the file lists egress rules (as in AWS)
            # the subnet's resolver stays reachable whatever the rules say (as AWS's is)
            resolver = [f"-A OUTPUT -d {s.gateway}/32 -p {p} -m {p} --dport 53 -m comment "
                        f'--comment "{COMMENT} resolver" -j ACCEPT' for p in ("udp", "tcp")]
            lines += _group("OUTPUT", "-o lo", fw.egress, fw, "-d", resolver)
    return "\n".join([*lines, "COMMIT", ""])


def _group(chain: str, lo: str, rules: tuple[Rule, ...], fw: Firewall, peer: str,
           always: list[str] | None = None) -> list[str]:
    if not rules and fw.default == "allow":
        return []
    out = [
        f"-A {chain} {lo} -j ACCEPT",
        f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        *(always or []),
    ]
    for i, r in enumerate(rules, 1):
        match = []
        if r.cidr:
            match.append(f"{peer} {r.cidr}")
        if r.protocol != "all":
            match.append(f"-p {r.protocol}")
        if r.port:
            match.append(f"-m {r.protocol} --dport {r.port.replace('-', ':')}")
        target = "ACCEPT" if r.action == "allow" else "DROP"
        sel = " ".join(match)
        out.append(
            f"-A {chain} {sel}{' ' if sel else ''}-m comment --comment \"{COMMENT} rule {i}\" -j {target}"
        )
    if fw.default == "deny":
        out.append(f'-A {chain} -m comment --comment "{COMMENT} default deny" -j DROP')
    return out


def host_chain(vpc_key: str) -> str:
    return f"VPCQ-{vpc_key}"


def host_jumps(chain: str, uplink: str) -> list[tuple[str, str, str]]:
    """The host's jumps to a VPC's chain: (table, chain, rule without `-A CHAIN`)."""
    return [
        ("filter", "FORWARD", f"-i {uplink} -j {chain}"),
        ("filter", "FORWARD", f"-o {uplink} -j {chain}"),
        ("nat", "POSTROUTING", f"-j {chain}"),
    ]


def host_rules(
    view: VpcView, internet_if: str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The host's per-VPC chain: (filter rules, nat rules), without the -A CHAIN prefix."""
    v = view.vpc
    assert v is not None
    up = v.uplink.a_if
    # the host never forwards from one VPC's uplink to another's, but for a public port's
    # connection: only vpcq's DNAT (to an uplink, see host_port_rules) gives that state
    hairpin = f"-i {up} -o {naming.HOST_PREFIX}+ -m conntrack --ctstate DNAT -j ACCEPT"
    isolate = f"-i {up} -o {naming.HOST_PREFIX}+ -j DROP"
    # a connection from this VPC to its own public port comes back from the host's address
    # (its router would drop a packet from its own)
    nat: tuple[str, ...] = ((f"-s {v.uplink.b_addr}/32 -o {up} -m conntrack --ctstate DNAT "
                             "-j MASQUERADE",) if v.exposures else ())
    if internet_if is None:
        return (hairpin, isolate), nat
    filt = (
        hairpin,
        isolate,
        f"-i {up} -o {internet_if} -j ACCEPT",
        f"-i {internet_if} -o {up} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        # nothing from the internet opens a connection into a subnet, but to a public port
        *((f"-i {internet_if} -o {up} -m conntrack --ctstate DNAT -j ACCEPT",) if v.exposures else ()),
        f"-i {internet_if} -o {up} -j DROP",
    )
    return filt, (*nat, f"-s {v.uplink.net} -o {internet_if} -j MASQUERADE")


def host_ports_chain(vpc_key: str) -> str:
    """A VPC's public ports on the host: a nat chain of its own (DNAT is valid only where
    PREROUTING and OUTPUT reach, the VPC's other nat chain is reached from POSTROUTING)."""
    return f"VPCQ-{vpc_key}-dnat"


def host_port_jumps(chain: str) -> list[tuple[str, str, str]]:
    """The host's jumps to a VPC's public ports, for any of the host's own addresses: from
    the outside and the VPCs (PREROUTING), and from the host itself (OUTPUT; loopback
    excepted: a packet from 127.0.0.1 cannot be sent out of the host)."""
    return [
        ("nat", "PREROUTING", f"-m addrtype --dst-type LOCAL -j {chain}"),
        ("nat", "OUTPUT", f"! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {chain}"),
    ]


def host_port_rules(view: VpcView) -> tuple[str, ...]:
    """The DNATs of a VPC's public ports: to its router's uplink address, on the same port
    (the router sends each on to its subnet or balancer)."""
    v = view.vpc
    assert v is not None
    return tuple(f"-p {e.protocol} -m {e.protocol} --dport {e.host_port} -j DNAT --to-destination "
                 f"{v.uplink.b_addr}" for e in sorted(v.exposures.values(),
                                                      key=lambda e: (e.host_port, e.protocol)))
