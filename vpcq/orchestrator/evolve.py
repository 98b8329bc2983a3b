"""evolve(state, event) -> state: the pure fold of the log."""

from __future__ import annotations

from collections.abc import Iterable

from vpcq.events.schema import (
    AppDeployed,
    AppStopped,
    ChangeApplied,
    ChangeFailed,
    CommandAccepted,
    DriftRepaired,
    Envelope,
    FirewallApplied,
    SubnetAdded,
    SubnetDeleted,
    VpcCreated,
    VpcDeleted,
    VpcRestored,
    VpcsPeered,
    VpcsUnpeered,
)
from vpcq.orchestrator.naming import linknet_index
from vpcq.orchestrator.state import CommandRecord, Peering, State, Subnet, Vpc, pair

DomainEvent = (
    VpcCreated | SubnetAdded | SubnetDeleted | AppDeployed | AppStopped | FirewallApplied
    | VpcsPeered | VpcsUnpeered | VpcDeleted | VpcRestored
)  # fmt: skip


class Folder:
    """Mutable scratch copies of one State, so folding a batch copies each map once."""

    def __init__(self, state: State) -> None:
        self.seq = state.seq
        self.vpcs = dict(state.vpcs)
        self.peerings = dict(state.peerings)
        self.commands = dict(state.commands)
        self.pending = dict.fromkeys(state.pending)
        self.linknet_hwm = state.linknet_hwm

    def build(self) -> State:
        return State(
            seq=self.seq,
            vpcs=self.vpcs,
            peerings=self.peerings,
            commands=self.commands,
            pending=tuple(self.pending),
            linknet_hwm=self.linknet_hwm,
        )

    # -- bookkeeping -----------------------------------------------------------------------

    def envelope(self, env: Envelope) -> None:
        ev = env.event
        self.seq = env.seq
        if isinstance(ev, CommandAccepted):
            self.commands[env.command_id] = CommandRecord(
                id=env.command_id,
                kind=ev.kind,
                seq=env.seq,
                last_seq=env.seq + ev.events,
                vpcs=ev.vpcs,
                actor=env.actor,
                time=env.time,
                correlation_id=env.correlation_id,
            )
            self.pending[env.command_id] = None
        elif isinstance(ev, ChangeApplied):
            self._outcome(ev.command_id, "applied", None)
        elif isinstance(ev, ChangeFailed):
            self._outcome(ev.command_id, "failed", ev.reason)
        elif isinstance(ev, DriftRepaired):
            pass  # an audit record: the kernel changed, the desired state did not
        else:
            self.domain(ev)

    def _outcome(self, command_id: str, status: str, reason: str | None) -> None:
        rec = self.commands.get(command_id)
        if rec is None or rec.status != "pending":
            return  # a duplicate outcome (a job may run twice) changes nothing
        self.commands[command_id] = CommandRecord(
            rec.id, rec.kind, rec.seq, rec.last_seq, rec.vpcs, status, reason,  # type: ignore[arg-type]
            rec.actor, rec.time, rec.correlation_id,
        )
        self.pending.pop(command_id, None)

    # -- the domain --------------------------------------------------------------------------

    def domain(self, ev: DomainEvent) -> None:
        match ev:
            case VpcCreated():
                self.vpcs[ev.name] = Vpc(
                    name=ev.name,
                    cidr=ev.cidr,
                    key=ev.key,
                    router_ns=ev.router_ns,
                    interface=ev.interface,
                    uplink=ev.uplink,
                    host_route=ev.host_route,
                    subnets={},
                )
                self._linknet(ev.uplink.net)
            case SubnetAdded():
                vpc = self.vpcs[ev.vpc]
                sub = Subnet(
                    name=ev.name,
                    cidr=ev.cidr,
                    public=ev.public,
                    key=ev.key,
                    netns=ev.netns,
                    bridge=ev.bridge,
                    veth=ev.veth,
                    gateway=ev.gateway,
                    address=ev.address,
                    prefixlen=ev.prefixlen,
                )
                self.vpcs[ev.vpc] = vpc.with_subnets({**vpc.subnets, ev.name: sub})
            case SubnetDeleted():
                vpc = self.vpcs[ev.vpc]
                subnets = dict(vpc.subnets)
                del subnets[ev.name]
                self.vpcs[ev.vpc] = vpc.with_subnets(subnets)
            case AppDeployed():
                self._subnet(ev.vpc, self._sub(ev.vpc, ev.subnet).with_app(ev.port))
            case AppStopped():
                self._subnet(ev.vpc, self._sub(ev.vpc, ev.subnet).with_app(None))
            case FirewallApplied():
                self._subnet(ev.vpc, self._sub(ev.vpc, ev.subnet).with_firewall(ev.firewall))
            case VpcsPeered():
                self.peerings[pair(ev.a, ev.b)] = Peering(
                    a=ev.a, b=ev.b, link=ev.link, a_cidr=ev.a_cidr, b_cidr=ev.b_cidr
                )
                self._peer(ev.a, ev.b, add=True)
                self._peer(ev.b, ev.a, add=True)
                self._linknet(ev.link.net)
            case VpcsUnpeered():
                self.peerings.pop(pair(ev.a, ev.b), None)
                self._peer(ev.a, ev.b, add=False)
                self._peer(ev.b, ev.a, add=False)
            case VpcDeleted():
                self._drop_vpc(ev.name)
            case VpcRestored():
                self._drop_vpc(ev.vpc)
                for g in ev.genesis:
                    self.domain(g)

    def _linknet(self, net: str) -> None:
        self.linknet_hwm = max(self.linknet_hwm, linknet_index(net) + 1)

    def _sub(self, vpc: str, subnet: str) -> Subnet:
        return self.vpcs[vpc].subnets[subnet]

    def _subnet(self, vpc_name: str, sub: Subnet) -> None:
        vpc = self.vpcs[vpc_name]
        self.vpcs[vpc_name] = vpc.with_subnets({**vpc.subnets, sub.name: sub})

    def _peer(self, vpc_name: str, other: str, add: bool) -> None:
        vpc = self.vpcs.get(vpc_name)
        if vpc is None:
            return
        peers = tuple(p for p in vpc.peers if p != other)
        self.vpcs[vpc_name] = vpc.with_peers((*peers, other) if add else peers)

    def _drop_vpc(self, name: str) -> None:
        vpc = self.vpcs.pop(name, None)
        for other in vpc.peers if vpc is not None else ():
            self.peerings.pop(pair(name, other), None)
            self._peer(other, name, add=False)


def fold(state: State, envelopes: Iterable[Envelope]) -> State:
    """Apply envelopes in order; pure (the input state is never modified)."""
    f = Folder(state)
    for env in envelopes:
        f.envelope(env)
    return f.build()


def evolve(state: State, envelope: Envelope) -> State:
    """The state after one more event."""
    return fold(state, (envelope,))
