"""The folded state: immutable records, rebuilt from the log by `evolve`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple, get_args

from vpcq.events.schema import DeletionKind, Firewall, LbTarget, LinkNet
from vpcq.events.types import (
    Actor,
    Address,
    ArgKey,
    ArgText,
    BridgeIf,
    CommandId,
    IfName,
    Key,
    Name,
    Port,
    RouterNs,
    Seq,
    SubnetNetwork,
    SubnetNs,
    SubnetPrefix,
    Text,
    Time,
    VethIf,
    VpcNetwork,
)

Status = Literal["pending", "applied", "failed"]

# Commands that remove things. A deletion goes forward: it is retried until the kernel holds
# none of what it removes, never rolled back into re-creating it (AWS's "deleting" state,
# Kubernetes finalizers), and never cancelled by an earlier change's failure.
DELETIONS = frozenset(get_args(DeletionKind))  # the kinds a CommandRedecided may name


def is_deletion(kind: str) -> bool:
    """Whether commands of `kind` remove things (and so go forward, never back)."""
    return kind in DELETIONS

# The records a replay makes by the ten thousand are NamedTuples, not frozen dataclasses: a
# frozen dataclass sets each field through object.__setattr__, a call per field where a
# tuple is built in one. They are as immutable. Their fields have the events' types: they
# cost nothing when the fold builds them (a NamedTuple checks nothing), and a snapshot read
# back (a cache anyone with the Redis password could write) is checked as the log is.


class Subnet(NamedTuple):
    name: Name
    cidr: SubnetNetwork
    public: bool
    key: Key
    netns: SubnetNs
    bridge: BridgeIf
    veth: VethIf
    gateway: Address
    address: Address
    prefixlen: SubnetPrefix
    app_port: Port | None = None
    firewall: Firewall | None = None

    def with_app(self, port: int | None) -> Subnet:
        return Subnet(self.name, self.cidr, self.public, self.key, self.netns, self.bridge,
                      self.veth, self.gateway, self.address, self.prefixlen, port, self.firewall)

    def with_firewall(self, fw: Firewall | None) -> Subnet:
        return Subnet(self.name, self.cidr, self.public, self.key, self.netns, self.bridge,
                      self.veth, self.gateway, self.address, self.prefixlen, self.app_port, fw)


_NO_SUBNETS: Mapping[str, Subnet] = MappingProxyType({})


class Balancer(NamedTuple):
    """A load balancer: `address:port` in its VPC, spread over `targets`."""

    name: Name
    key: Key
    address: Address
    port: Port
    targets: tuple[LbTarget, ...]

    def with_targets(self, targets: tuple[LbTarget, ...]) -> Balancer:
        return Balancer(self.name, self.key, self.address, self.port, targets)


class Exposure(NamedTuple):
    """A public port: connections to the host on `host_port` reach `port` of `target`."""

    host_port: Port
    protocol: Literal["tcp", "udp"]
    target: Name  # a public subnet or a balancer of the VPC
    balancer: bool
    port: Port

    @property
    def key(self) -> str:
        return port_key(self.host_port, self.protocol)


def port_key(host_port: int, protocol: str) -> str:
    """How a VPC's exposures are keyed: "8080/tcp"."""
    return f"{host_port}/{protocol}"


_NO_BALANCERS: Mapping[str, Balancer] = MappingProxyType({})
_NO_EXPOSURES: Mapping[str, Exposure] = MappingProxyType({})


class Vpc(NamedTuple):
    name: Name
    cidr: VpcNetwork
    key: Key
    router_ns: RouterNs
    interface: IfName | None
    uplink: LinkNet
    host_route: bool
    subnets: Mapping[Name, Subnet] = _NO_SUBNETS
    peers: tuple[Name, ...] = ()  # names of the VPCs it is peered with
    host: Name = "default"  # the host whose workers build it (their $VPCQ_HOST)
    dns_upstream: Address | Literal["none"] | None = None  # None: the host's setting
    balancers: Mapping[Name, Balancer] = _NO_BALANCERS
    exposures: Mapping[str, Exposure] = _NO_EXPOSURES  # by port_key

    # direct constructors: _replace costs several times more in a 100k-event fold
    def with_subnets(self, subnets: Mapping[str, Subnet]) -> Vpc:
        return Vpc(self.name, self.cidr, self.key, self.router_ns, self.interface, self.uplink,
                   self.host_route, subnets, self.peers, self.host, self.dns_upstream,
                   self.balancers, self.exposures)

    def with_peers(self, peers: tuple[str, ...]) -> Vpc:
        return Vpc(self.name, self.cidr, self.key, self.router_ns, self.interface, self.uplink,
                   self.host_route, self.subnets, peers, self.host, self.dns_upstream,
                   self.balancers, self.exposures)

    def with_balancers(self, balancers: Mapping[str, Balancer]) -> Vpc:
        return Vpc(self.name, self.cidr, self.key, self.router_ns, self.interface, self.uplink,
                   self.host_route, self.subnets, self.peers, self.host, self.dns_upstream,
                   balancers, self.exposures)

    def with_exposures(self, exposures: Mapping[str, Exposure]) -> Vpc:
        return Vpc(self.name, self.cidr, self.key, self.router_ns, self.interface, self.uplink,
                   self.host_route, self.subnets, self.peers, self.host, self.dns_upstream,
                   self.balancers, exposures)


class Peering(NamedTuple):
    a: Name
    b: Name
    link: LinkNet
    a_cidr: VpcNetwork
    b_cidr: VpcNetwork


class CommandRecord(NamedTuple):
    """One command's bookkeeping. The state holds a pending command's (its status is always
    "pending" there); `evolve.command_record` makes a finished one's from the log."""

    id: CommandId
    kind: str
    seq: Seq  # seq of its CommandAccepted
    last_seq: Seq  # seq of its last domain event
    vpcs: tuple[Name, ...]
    status: Status = "pending"
    reason: Text | None = None
    actor: Actor | Literal[""] = ""
    time: Time | Literal[""] = ""
    correlation_id: CommandId | Literal[""] = ""
    args: Mapping[ArgKey, ArgText | int | bool | None] = MappingProxyType({})  # as CommandAccepted has them
    host: Name | Literal[""] = ""  # whose workers apply it, as decided ("": it touches no VPC)


def pair(a: str, b: str) -> str:
    """The key of a peering: the two names in sorted order ('|' never appears in a name)."""
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


@dataclass(frozen=True, slots=True)
class State:
    seq: Seq = 0
    vpcs: Mapping[str, Vpc] = field(default_factory=dict)
    peerings: Mapping[str, Peering] = field(default_factory=dict)
    commands: Mapping[str, CommandRecord] = field(default_factory=dict)  # the pending ones
    pending: tuple[str, ...] = ()  # their ids in log order
    linknet_hwm: int = 0  # one past the highest link-net index ever allocated

    def peers_of(self, vpc: str) -> list[Peering]:
        """Peerings that involve `vpc`."""
        v = self.vpcs.get(vpc)
        return [] if v is None else [self.peerings[pair(vpc, o)] for o in v.peers]

    def pending_for(self, vpc: str) -> list[CommandRecord]:
        """Pending commands that touch `vpc`, in log order."""
        return [c for c in (self.commands[i] for i in self.pending) if vpc in c.vpcs]


INITIAL = State()


@dataclass(frozen=True, slots=True)
class VpcView:
    """All the log says about one VPC at one point: itself and its peerings."""

    vpc: Vpc | None
    peerings: tuple[Peering, ...] = ()


def view_of(state: State, name: str) -> VpcView:
    """One VPC's view of a state."""
    return VpcView(state.vpcs.get(name), tuple(state.peers_of(name)))
