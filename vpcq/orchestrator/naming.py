"""Deterministic kernel names (<= 15 characters for interfaces) and link-net allocation."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Set

from vpcq.events.schema import LinkNet

IFNAMSIZ = 15
LINKNET_POOL = ipaddress.IPv4Network("100.64.0.0/10")
_POOL_BASE = int(LINKNET_POOL.network_address)
LINKNET_SLOTS = LINKNET_POOL.num_addresses // 4  # /30s in the pool
HOST_PREFIX = "vq"  # every host-side interface vpcq makes starts with this
ROUTER_NS_PREFIX = "vpcq_"  # router namespaces; '_' never appears in a user's name
UPLINK_IF = "uplink"  # the router's end of its uplink
SUBNET_IF = "eth0"  # the subnet namespace's end of its veth


@functools.lru_cache(maxsize=65536)
def network(cidr: str) -> ipaddress.IPv4Network:
    """A parsed network, cached: decide compares a new CIDR with every VPC's."""
    return ipaddress.IPv4Network(cidr)


@functools.lru_cache(maxsize=65536)
def span(cidr: str) -> tuple[int, int]:
    """A network's first and last address as integers."""
    n = network(cidr)
    return int(n.network_address), int(n.broadcast_address)


def overlap(a: str, b: str) -> bool:
    """Whether two networks share an address: two integer comparisons (a create-vpc compares
    its CIDR with every VPC's, and IPv4Network.overlaps builds objects for each pair)."""
    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 <= b1 and b0 <= a1


def short_key(seed: str, taken: Set[str], length: int) -> str:
    """A hex key derived from `seed`, stable, and not in `taken` (rehashed on collision)."""
    for salt in range(1000):
        text = seed if salt == 0 else f"{seed}#{salt}"
        key = hashlib.sha256(text.encode()).hexdigest()[:length]
        if key not in taken:
            return key
    raise RuntimeError(f"no free key for {seed!r}")  # pragma: no cover - 16^6 keys


def router_ns(vpc: str) -> str:
    return f"{ROUTER_NS_PREFIX}{vpc}"


def subnet_ns(vpc: str, subnet: str) -> str:
    return f"{vpc}-{subnet}"


def uplink_host_if(vpc_key: str) -> str:
    return f"{HOST_PREFIX}{vpc_key}u"


def bridge_if(subnet_key: str) -> str:
    return f"vb-{subnet_key}"


def subnet_veth_if(subnet_key: str) -> str:
    return f"vs-{subnet_key}"


def peer_if(other_vpc_key: str) -> str:
    return f"vp-{other_vpc_key}"


@functools.lru_cache(maxsize=65536)
def linknet_index(net: str) -> int:
    """The position of a /30 link-net in the pool ("100.64.0.8/30" -> 2); no ipaddress parse."""
    a, b, c, d = (int(x) for x in net.split("/", 1)[0].split("."))
    return (((a << 24) | (b << 16) | (c << 8) | d) - _POOL_BASE) // 4


def linknet_at(index: int) -> ipaddress.IPv4Network:
    """The /30 at `index` in the pool (the inverse of `linknet_index`)."""
    return ipaddress.IPv4Network((_POOL_BASE + 4 * index, 30))


def allocate_linknet(used: Iterable[str], start: int = 0) -> ipaddress.IPv4Network:
    """The first free /30 of 100.64.0.0/10 at or after index `start`, wrapping around.

    Starting past every link-net ever allocated (the state's high-water mark) means a freed
    link-net is not reused soon, so restoring an old VPC never finds its link-net taken.
    """
    taken = {linknet_index(n) for n in used}
    for j in range(LINKNET_SLOTS):
        i = (start + j) % LINKNET_SLOTS
        if i not in taken:
            return linknet_at(i)
    raise RuntimeError("the link-net pool 100.64.0.0/10 is exhausted")  # pragma: no cover


def linknet(net: ipaddress.IPv4Network, a_ns: str | None, a_if: str, b_ns: str, b_if: str) -> LinkNet:
    """A /30 link: side a gets .1, side b gets .2."""
    hosts = list(net.hosts())
    for name in (a_if, b_if):
        assert len(name) <= IFNAMSIZ, name
    return LinkNet(
        net=str(net),
        a_ns=a_ns,
        a_if=a_if,
        a_addr=str(hosts[0]),
        b_ns=b_ns,
        b_if=b_if,
        b_addr=str(hosts[1]),
        prefixlen=net.prefixlen,
    )
