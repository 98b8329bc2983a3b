"""evolve(state, event) -> state: the pure fold of the log."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from vpcq.events.schema import (
    AppDeployed,
    AppStopped,
    ChangeApplied,
    ChangeFailed,
    CommandAccepted,
    CommandRedecided,
    Commit,
    DriftRepaired,
    Envelope,
    FirewallApplied,
    LoadBalancerCreated,
    LoadBalancerDeleted,
    LoadBalancerTargetsSet,
    PortExposed,
    PortUnexposed,
    Rejected,
    SubnetAdded,
    SubnetDeleted,
    VpcCreated,
    VpcDeleted,
    VpcRestored,
    VpcsPeered,
    VpcsUnpeered,
)
from vpcq.orchestrator.naming import linknet_index
from vpcq.orchestrator.state import (
    Balancer,
    CommandRecord,
    Exposure,
    Peering,
    State,
    Status,
    Subnet,
    Vpc,
    pair,
    port_key,
)

DomainEvent = (
    VpcCreated | SubnetAdded | SubnetDeleted | AppDeployed | AppStopped | FirewallApplied
    | VpcsPeered | VpcsUnpeered | VpcDeleted | VpcRestored
    | LoadBalancerCreated | LoadBalancerTargetsSet | LoadBalancerDeleted | PortExposed | PortUnexposed
)  # fmt: skip


class Header(Protocol):
    """Who, when and why: what an Envelope or a Commit says about the command it carries."""

    command_id: str
    correlation_id: str
    actor: str
    time: str


class _Head(NamedTuple):
    command_id: str
    correlation_id: str = ""
    actor: str = ""
    time: str = ""


class Folder:
    """Mutable scratch copies of one State, so folding a batch copies each map once."""

    def __init__(self, state: State) -> None:
        self.seq = state.seq
        self.vpcs = dict(state.vpcs)
        self.peerings = dict(state.peerings)
        self.commands = dict(state.commands)
        self.pending = dict.fromkeys(state.pending)
        self.linknet_hwm = state.linknet_hwm
        self._unplaced: set[str] = set()  # old commands waiting for their VpcCreated

    def build(self) -> State:
        return State(
            seq=self.seq,
            vpcs=self.vpcs,
            peerings=self.peerings,
            commands=self.commands,
            pending=tuple(self.pending),
            linknet_hwm=self.linknet_hwm,
        )

    def envelope(self, env: Envelope) -> None:
        self.seq = env.seq
        ev = env.event
        _ON[type(ev)](self, ev, env)

    def commit(self, c: Commit | Rejected) -> None:
        """All of a commit's events, without an envelope for each (a rejected entry: none,
        but the numbers it takes)."""
        if isinstance(c, Rejected):
            self.skip(c)
            return
        seq = c.seq
        for ev in c.events:
            self.seq = seq
            _ON[type(ev)](self, ev, c)
            seq += 1

    def skip(self, r: Rejected) -> None:
        """A quarantined entry: nothing of it is folded, but the log goes on after it."""
        self.seq = max(self.seq, r.last)

    def domain(self, ev: DomainEvent) -> None:
        _ON[type(ev)](self, ev, None)

    def event(self, ev: object, command_id: str) -> None:
        """One event of `command_id`, as the next in the log (for a decision made on events
        that are not appended yet)."""
        self.seq += 1
        _ON[type(ev)](self, ev, _Head(command_id))

    # -- bookkeeping -----------------------------------------------------------------------

    def _accepted(self, ev: CommandAccepted, head: Header) -> None:
        cid = head.command_id
        host = ev.host
        if host is None and ev.vpcs:  # written before commands named their host: as decide
            known = next((v for v in ev.vpcs if v in self.vpcs), None)  # would have chosen
            host = self.vpcs[known].host if known is not None else None
            if host is None:  # where its VPC is made, by the events that follow
                self._unplaced.add(cid)
        self.commands[cid] = CommandRecord(
            cid, ev.kind, self.seq, self.seq + ev.events, ev.vpcs, "pending", None,
            head.actor, head.time, head.correlation_id, ev.args, host or "",
        )  # fmt: skip
        self.pending[cid] = None

    def _placed(self, head: Header | None, made: VpcCreated) -> None:
        """An old command with no host of its own is applied where its VPC is made."""
        if not self._unplaced or head is None or head.command_id not in self._unplaced:
            return
        self._unplaced.discard(head.command_id)
        rec = self.commands.get(head.command_id)
        if rec is not None:
            self.commands[head.command_id] = rec._replace(host=made.host)

    def _redecided(self, ev: CommandRedecided, head: Header) -> None:
        rec = self.commands.get(head.command_id)
        if rec is not None:  # its target is now what follows this event
            self.commands[head.command_id] = rec._replace(last_seq=self.seq + ev.events)

    def _applied(self, ev: ChangeApplied, head: Header) -> None:
        self._finished(ev.command_id)

    def _failed(self, ev: ChangeFailed, head: Header) -> None:
        self._finished(ev.command_id)

    def _drift(self, ev: DriftRepaired, head: Header) -> None:
        pass  # an audit record: the kernel changed, the desired state did not

    def _finished(self, command_id: str) -> None:
        """A finished command leaves the state, which holds the work still to do, not every
        command ever given (which would grow with the log, and every snapshot and CLI call
        with it). `vpcq status` finds a finished one in the log. A duplicate
        outcome (a job may run twice) finds nothing to remove."""
        if self.commands.pop(command_id, None) is not None:
            self.pending.pop(command_id, None)

    # -- the domain --------------------------------------------------------------------------

    def _vpc_created(self, ev: VpcCreated, head: Header | None) -> None:
        self.vpcs[ev.name] = Vpc(
            ev.name, ev.cidr, ev.key, ev.router_ns, ev.interface, ev.uplink, ev.host_route, {}, (),
            ev.host, ev.dns_upstream, {}, {},
        )
        self._linknet(ev.uplink.net)
        self._placed(head, ev)

    def _subnet_added(self, ev: SubnetAdded, head: Header | None) -> None:
        vpc = self.vpcs[ev.vpc]
        sub = Subnet(
            ev.name, ev.cidr, ev.public, ev.key, ev.netns, ev.bridge, ev.veth, ev.gateway,
            ev.address, ev.prefixlen,
        )  # fmt: skip
        self.vpcs[ev.vpc] = vpc.with_subnets({**vpc.subnets, ev.name: sub})

    def _subnet_deleted(self, ev: SubnetDeleted, head: Header | None) -> None:
        vpc = self.vpcs[ev.vpc]
        subnets = dict(vpc.subnets)
        del subnets[ev.name]
        self.vpcs[ev.vpc] = vpc.with_subnets(subnets)

    def _app_deployed(self, ev: AppDeployed, head: Header | None) -> None:
        self._subnet(ev.vpc, self._sub(ev.vpc, ev.subnet).with_app(ev.port))

    def _app_stopped(self, ev: AppStopped, head: Header | None) -> None:
        self._subnet(ev.vpc, self._sub(ev.vpc, ev.subnet).with_app(None))

    def _firewall_applied(self, ev: FirewallApplied, head: Header | None) -> None:
        self._subnet(ev.vpc, self._sub(ev.vpc, ev.subnet).with_firewall(ev.firewall))

    def _peered(self, ev: VpcsPeered, head: Header | None) -> None:
        self.peerings[pair(ev.a, ev.b)] = Peering(ev.a, ev.b, ev.link, ev.a_cidr, ev.b_cidr)
        self._peer(ev.a, ev.b, add=True)
        self._peer(ev.b, ev.a, add=True)
        self._linknet(ev.link.net)

    def _unpeered(self, ev: VpcsUnpeered, head: Header | None) -> None:
        self.peerings.pop(pair(ev.a, ev.b), None)
        self._peer(ev.a, ev.b, add=False)
        self._peer(ev.b, ev.a, add=False)

    def _lb_created(self, ev: LoadBalancerCreated, head: Header | None) -> None:
        self._put_lb(ev.vpc, Balancer(ev.name, ev.key, ev.address, ev.port, ev.targets))

    def _lb_targets_set(self, ev: LoadBalancerTargetsSet, head: Header | None) -> None:
        self._put_lb(ev.vpc, self.vpcs[ev.vpc].balancers[ev.name].with_targets(ev.targets))

    def _put_lb(self, name: str, lb: Balancer) -> None:
        vpc = self.vpcs[name]
        self.vpcs[name] = vpc.with_balancers({**vpc.balancers, lb.name: lb})

    def _lb_deleted(self, ev: LoadBalancerDeleted, head: Header | None) -> None:
        vpc = self.vpcs[ev.vpc]
        self.vpcs[ev.vpc] = vpc.with_balancers({k: b for k, b in vpc.balancers.items() if k != ev.name})

    def _port_exposed(self, ev: PortExposed, head: Header | None) -> None:
        vpc = self.vpcs[ev.vpc]
        e = Exposure(ev.host_port, ev.protocol, ev.target, ev.balancer, ev.port)
        self.vpcs[ev.vpc] = vpc.with_exposures({**vpc.exposures, e.key: e})

    def _port_unexposed(self, ev: PortUnexposed, head: Header | None) -> None:
        vpc = self.vpcs[ev.vpc]
        gone = port_key(ev.host_port, ev.protocol)
        self.vpcs[ev.vpc] = vpc.with_exposures({k: e for k, e in vpc.exposures.items() if k != gone})

    def _vpc_deleted(self, ev: VpcDeleted, head: Header | None) -> None:
        self._drop_vpc(ev.name)

    def _vpc_restored(self, ev: VpcRestored, head: Header | None) -> None:
        self._drop_vpc(ev.vpc)
        for g in ev.genesis:
            self.domain(g)
            if isinstance(g, VpcCreated):
                self._placed(head, g)

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


# One handler per event type, found by the event's class: a replay folds 100k events, and a
# dict lookup costs less than a chain of isinstance checks.
_ON: dict[type, Callable[[Folder, Any, Any], None]] = {
    CommandAccepted: Folder._accepted,
    ChangeApplied: Folder._applied,
    ChangeFailed: Folder._failed,
    CommandRedecided: Folder._redecided,
    DriftRepaired: Folder._drift,
    VpcCreated: Folder._vpc_created,
    SubnetAdded: Folder._subnet_added,
    SubnetDeleted: Folder._subnet_deleted,
    AppDeployed: Folder._app_deployed,
    AppStopped: Folder._app_stopped,
    FirewallApplied: Folder._firewall_applied,
    VpcsPeered: Folder._peered,
    VpcsUnpeered: Folder._unpeered,
    VpcDeleted: Folder._vpc_deleted,
    VpcRestored: Folder._vpc_restored,
    LoadBalancerCreated: Folder._lb_created,
    LoadBalancerTargetsSet: Folder._lb_targets_set,
    LoadBalancerDeleted: Folder._lb_deleted,
    PortExposed: Folder._port_exposed,
    PortUnexposed: Folder._port_unexposed,
}


def command_record(accepted: Commit, outcome: Commit | None) -> CommandRecord:
    """A command's record from its commits in the log (see EventStore.command): what the
    state held while it was pending, with how it ended."""
    ev = accepted.events[0]
    assert isinstance(ev, CommandAccepted), ev
    end = outcome.events[0] if outcome is not None else None
    status: Status = "pending" if end is None else "failed" if isinstance(end, ChangeFailed) else "applied"
    reason = end.reason if isinstance(end, ChangeFailed) else None
    return CommandRecord(
        accepted.command_id, ev.kind, accepted.seq, accepted.seq + ev.events, ev.vpcs, status,
        reason, accepted.actor, accepted.time, accepted.correlation_id, ev.args, ev.host or "",
    )  # fmt: skip


def fold(state: State, envelopes: Iterable[Envelope]) -> State:
    """Apply envelopes in order; pure (the input state is never modified)."""
    f = Folder(state)
    for env in envelopes:
        f.envelope(env)
    return f.build()


def fold_commits(state: State, commits: Iterable[Commit | Rejected]) -> State:
    """`fold` over the log's commits (the replay path)."""
    f = Folder(state)
    for c in commits:
        f.commit(c)
    return f.build()


def evolve(state: State, envelope: Envelope) -> State:
    """The state after one more event."""
    return fold(state, (envelope,))
