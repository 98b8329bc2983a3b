"""Pure renderers of iptables-restore documents (golden-tested).

Inside namespaces vpcq owns whole tables; on the host it owns only its per-VPC chains.
"""

from __future__ import annotations

from vpcq.events.schema import Firewall, Rule
from vpcq.orchestrator import naming
from vpcq.orchestrator.state import Subnet, VpcView

COMMENT = "vpcq"
# what a namespace's filter table looks like with no rules (also a fresh namespace's)
EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def router_rules(view: VpcView) -> str:
    """The router namespace's filter and nat tables."""
    v = view.vpc
    assert v is not None
    up = naming.UPLINK_IF
    host_addr = v.uplink.a_addr
    f = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        # every subnet of the VPC reaches every other (the implicit "local" route)
        "-A FORWARD -i vb-+ -o vb-+ -j ACCEPT",
        # the host reaches every subnet, public or private
        f"-A FORWARD -s {host_addr}/32 -i {up} -o vb-+ -j ACCEPT",
    ]
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]
    for s in sorted(v.subnets.values(), key=lambda s: s.name):
        if s.public:
            f.append(f"-A FORWARD -s {s.cidr} -i {s.bridge} -o {up} -j ACCEPT")
            nat.append(f"-A POSTROUTING -s {s.cidr} -o {up} -j SNAT --to-source {v.uplink.b_addr}")
    for p in sorted(view.peerings, key=lambda p: (p.a, p.b)):
        mine = p.link.a_if if p.a == v.name else p.link.b_if
        other_cidr = _peer_cidr(view, p.a if p.b == v.name else p.b)
        if other_cidr is None:
            continue
        f.append(f"-A FORWARD -s {other_cidr} -d {v.cidr} -i {mine} -o vb-+ -j ACCEPT")
        f.append(f"-A FORWARD -s {v.cidr} -d {other_cidr} -i vb-+ -o {mine} -j ACCEPT")
    return "\n".join([*f, "COMMIT", *nat, "COMMIT", ""])


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
            lines += _group("OUTPUT", "-o lo", fw.egress, fw, "-d")
    return "\n".join([*lines, "COMMIT", ""])


def _group(chain: str, lo: str, rules: tuple[Rule, ...], fw: Firewall, peer: str) -> list[str]:
    if not rules and fw.default == "allow":
        return []
    out = [
        f"-A {chain} {lo} -j ACCEPT",
        f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
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
    # the host never forwards from one VPC's uplink to another's
    isolate = f"-i {up} -o {naming.HOST_PREFIX}+ -j DROP"
    if internet_if is None:
        return (isolate,), ()
    filt = (
        isolate,
        f"-i {up} -o {internet_if} -j ACCEPT",
        f"-i {internet_if} -o {up} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        # nothing from the internet opens a connection into a subnet
        f"-i {internet_if} -o {up} -j DROP",
    )
    nat = (f"-s {v.uplink.net} -o {internet_if} -j MASQUERADE",)
    return filt, nat
