"""Pure renderers of a VPC's DNS: its resolvers' dnsmasq configuration and each subnet's
resolv.conf.

A VPC answers at each subnet's gateway address. Names under `<vpc>.internal` are its
subnets' host addresses and its balancers' addresses; a peer's zone is asked of the peer's
resolver, over the peering link; any other name under `internal` does not exist. A public
subnet's resolver sends every other name to the upstream; a private subnet's sends nothing
anywhere, so the two are separate dnsmasq processes ("public" and "internal"), each with its
own listen addresses: one process has no way to answer by the interface a query came in on.

The text is built from typed fields, and each value is checked again here (a name, an
address): nothing from the log can put a newline, and so an option of its own, in a file.
"""

from __future__ import annotations

import ipaddress
import re

from vpcq.orchestrator.state import Subnet, Vpc, VpcView

DOMAIN = "internal"
MARK = "# vpcq:"  # the first line of every DNS file vpcq writes (teardown removes only those)
INTERNAL, PUBLIC = "internal", "public"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def zone(vpc: str) -> str:
    """A VPC's DNS zone: `my-vpc.internal`."""
    return f"{_name(vpc)}.{DOMAIN}"


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a name vpcq writes into DNS files")
    return value


def _addr(value: str) -> str:
    if str(ipaddress.IPv4Address(value)) != value:
        raise ValueError(f"{value!r} is not a canonical IPv4 address")
    return value


def _net(value: str) -> str:
    if str(ipaddress.IPv4Network(value)) != value:
        raise ValueError(f"{value!r} is not a canonical IPv4 network")
    return value


def records(v: Vpc) -> list[tuple[str, str]]:
    """(name, address) of every name the VPC's zone holds, sorted."""
    names = [(s.name, s.address) for s in v.subnets.values()]
    names += [(b.name, b.address) for b in v.balancers.values()]
    return sorted((f"{_name(n)}.{zone(v.name)}", _addr(a)) for n, a in names)


def listeners(view: VpcView) -> dict[str, list[tuple[str, str]]]:
    """Where each of the VPC's resolvers listens: (interface, address) in the router. A
    subnet asks its own gateway; a peer's resolver asks the one without an upstream, on
    the peering link."""
    v = view.vpc
    assert v is not None
    out: dict[str, list[tuple[str, str]]] = {INTERNAL: [], PUBLIC: []}
    for s in sorted(v.subnets.values(), key=lambda s: s.name):
        out[PUBLIC if s.public else INTERNAL].append((s.bridge, s.gateway))
    for p in sorted(view.peerings, key=lambda p: (p.a, p.b)):
        mine = p.a == v.name
        out[INTERNAL].append((p.link.a_if if mine else p.link.b_if,
                              p.link.a_addr if mine else p.link.b_addr))
    return {role: where for role, where in out.items() if where}


def upstream(v: Vpc, host_default: str | None) -> str | None:
    """Where a public subnet's resolver sends the names it does not know (None: nowhere):
    the VPC's own setting, else the host's."""
    chosen = v.dns_upstream if v.dns_upstream is not None else host_default
    return None if chosen in (None, "none") else chosen


def resolvers(view: VpcView, host_upstream: str | None) -> dict[str, str]:
    """The dnsmasq configuration of each resolver the VPC has (a role with listeners)."""
    v = view.vpc
    assert v is not None
    peers = []
    for p in sorted(view.peerings, key=lambda p: (p.a, p.b)):
        mine = p.a == v.name
        other, other_addr = (p.b, p.link.b_addr) if mine else (p.a, p.link.a_addr)
        peers.append((other, _addr(other_addr), _net(p.b_cidr if mine else p.a_cidr)))
    up = upstream(v, host_upstream)
    out = {}
    for role, where in listeners(view).items():
        lines = [
            f"{MARK} resolver {role} of VPC {_name(v.name)} (written from the log; edits are replaced)",
            "port=53",
            "bind-dynamic",  # bind each address, also once it (re)appears
            *(f"listen-address={_addr(a)}" for _, a in where),
            "no-resolv",  # never this machine's resolv.conf or hosts file
            "no-hosts",
            "no-poll",
            "domain-needed",
            "bogus-priv",
            "no-negcache",  # a name gone from the log is gone at once, here and in peers
            f"local=/{DOMAIN}/",  # names under .internal are answered here or by a peer, never sent out
            *(f"host-record={name},{addr}" for name, addr in records(v)),
        ]
        for other, addr, cidr in peers:
            lines += [f"server=/{zone(other)}/{addr}", f"rev-server={cidr},{addr}"]
        if role == PUBLIC and up is not None:
            lines.append(f"server={_addr(up)}")
        out[role] = "\n".join(lines) + "\n"
    return out


def resolv_conf(v: Vpc, s: Subnet) -> str:
    """A subnet's /etc/resolv.conf (as `ip netns exec` shows it): its gateway, and the VPC's
    zone as the search domain, so `getent hosts db-subnet` finds db-subnet.<vpc>.internal."""
    return (f"{MARK} resolver of subnet {_name(s.name)} of VPC {_name(v.name)} (written from the "
            f"log; edits are replaced)\nnameserver {_addr(s.gateway)}\nsearch {zone(v.name)}\n")
