"""The console's fold of the log: the folded State, and what a picture of it needs that the
State does not keep. Pure: no I/O.

* **Where each object sits.** A VPC takes the lowest free column when it appears and keeps
  it while it lives (or is being deleted); inside it, every object takes the lowest free
  cell the same way; a host takes the lowest free row. So nothing that exists moves when
  something is added or removed, and the placement is a function of the log alone: the same
  seq draws the same picture anywhere, and an object keeps its place across time travel.
* **What a pending deletion removes**, as it was just before: the State drops a VPC at its
  VpcDeleted, the kernel only by the time the deletion's outcome is written.
* **What each pending command changes**, drawn as pending until its outcome.
* **Each VPC's last failed change and last drift repair**, until a later change to it applies.

New kinds of objects plug in here in two places: `keys_of` (which objects an event changes)
and `cells_of` (the objects of a VPC that take a cell of its grid: subnets and balancers; a
public port is an edge, it takes no cell).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

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
    SubnetAdded,
    SubnetDeleted,
    VpcCreated,
    VpcDeleted,
    VpcRestored,
    VpcsPeered,
    VpcsUnpeered,
)
from vpcq.orchestrator.evolve import Folder
from vpcq.orchestrator.state import (
    INITIAL,
    Balancer,
    Exposure,
    Peering,
    State,
    Subnet,
    Vpc,
    is_deletion,
    pair,
    port_key,
)

# ---- object keys: an object's id in the picture -----------------------------------------------


def vpc_key(name: str) -> str:
    return f"vpc:{name}"


def subnet_key(vpc: str, name: str) -> str:
    return f"subnet:{vpc}/{name}"


def peering_key(a: str, b: str) -> str:
    return f"peering:{pair(a, b)}"


def balancer_key(vpc: str, name: str) -> str:
    return f"balancer:{vpc}/{name}"


def exposure_key(vpc: str, host_port: int, protocol: str) -> str:
    """A public port's key: it is an edge from its VPC's host (ports are the host's)."""
    return f"port:{vpc}/{port_key(host_port, protocol)}"


def keys_of(event: object) -> tuple[str, ...]:
    """The objects a domain event changes (one case per kind of event)."""
    match event:
        case VpcCreated() | VpcDeleted():
            return (vpc_key(event.name),)
        case VpcRestored():
            return (vpc_key(event.vpc),)
        case SubnetAdded() | SubnetDeleted():
            return (subnet_key(event.vpc, event.name),)
        case AppDeployed() | AppStopped() | FirewallApplied():
            return (subnet_key(event.vpc, event.subnet),)
        case VpcsPeered() | VpcsUnpeered():
            return (peering_key(event.a, event.b),)
        case LoadBalancerCreated() | LoadBalancerTargetsSet() | LoadBalancerDeleted():
            return (balancer_key(event.vpc, event.name),)
        case PortExposed() | PortUnexposed():
            return (exposure_key(event.vpc, event.host_port, event.protocol),)
    return ()


def cells_of(vpc: Vpc) -> list[str]:
    """The objects of a VPC that take a cell of its grid, in the order they were added (one
    case per kind of object; a public port is an edge from the host, not a cell)."""
    return [subnet_key(vpc.name, s) for s in vpc.subnets] + [balancer_key(vpc.name, b) for b in vpc.balancers]


# ---- the records ------------------------------------------------------------------------------


class Mark(NamedTuple):
    """A failed change or a drift repair recorded on a VPC."""

    seq: int
    time: str
    command_id: str
    text: str  # one line
    lines: tuple[str, ...] = ()  # a drift repair's steps


_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Mapping[Any, Any]:
    return _EMPTY


@dataclass(frozen=True, slots=True)
class Ghost:
    """What a pending deletion removes, as it was just before it was decided."""

    command_id: str
    kind: str
    seq: int
    vpcs: Mapping[str, Vpc] = field(default_factory=_empty)  # whole VPCs
    # (vpc, subnet) -> a subnet deleted from a VPC that stays
    subnets: Mapping[tuple[str, str], Subnet] = field(default_factory=_empty)
    peerings: Mapping[str, Peering] = field(default_factory=_empty)  # by pair(a, b)
    # (vpc, subnet) -> the port of the app it stops
    apps: Mapping[tuple[str, str], int] = field(default_factory=_empty)
    # (vpc, balancer) -> a balancer deleted from a VPC that stays
    balancers: Mapping[tuple[str, str], Balancer] = field(default_factory=_empty)
    # (vpc, "8080/tcp") -> a public port it removes from a VPC that stays
    exposures: Mapping[tuple[str, str], Exposure] = field(default_factory=_empty)

    def touches(self, vpc: str) -> bool:
        return (vpc in self.vpcs or any(v == vpc for v, _s in self.subnets)
                or any(v == vpc for v, _b in self.balancers))

    def cells(self, vpc: str) -> list[str]:
        """The cells of `vpc` this deletion still holds."""
        out = cells_of(self.vpcs[vpc]) if vpc in self.vpcs else []
        return (out + [subnet_key(v, s) for v, s in self.subnets if v == vpc]
                + [balancer_key(v, b) for v, b in self.balancers if v == vpc])


@dataclass(frozen=True, slots=True)
class Places:
    """Rows of hosts, columns of VPCs, cells inside each VPC."""

    hosts: Mapping[str, int] = field(default_factory=_empty)
    columns: Mapping[str, int] = field(default_factory=_empty)
    cells: Mapping[str, Mapping[str, int]] = field(default_factory=_empty)  # VPC -> object key -> cell


@dataclass(frozen=True, slots=True)
class Scene:
    state: State = INITIAL
    places: Places = field(default_factory=Places)
    # pending deletions, by command id, in log order
    ghosts: Mapping[str, Ghost] = field(default_factory=_empty)
    # pending command -> the objects it changes
    changing: Mapping[str, frozenset[str]] = field(default_factory=_empty)
    failed: Mapping[str, Mark] = field(default_factory=_empty)  # VPC -> its last failed change
    drift: Mapping[str, Mark] = field(default_factory=_empty)  # VPC -> its last drift repair
    time: str = ""  # when the last event was written

    @property
    def seq(self) -> int:
        return self.state.seq


EMPTY = Scene()


def _lowest_free(used: Iterable[int]) -> int:
    taken = set(used)
    n = 0
    while n in taken:
        n += 1
    return n


class SceneFolder:
    """Folds envelopes into a Scene; `build` hands out an immutable one."""

    def __init__(self, scene: Scene = EMPTY) -> None:
        self.folder = Folder(scene.state)
        self.time = scene.time
        self.hosts = dict(scene.places.hosts)
        self.columns = dict(scene.places.columns)
        self.cells = {v: dict(c) for v, c in scene.places.cells.items()}
        self.ghosts = dict(scene.ghosts)
        self.changing = {c: set(k) for c, k in scene.changing.items()}
        self.failed = dict(scene.failed)
        self.drift = dict(scene.drift)

    @property
    def seq(self) -> int:
        return self.folder.seq

    def build(self) -> Scene:
        """The scene so far. The folder keeps folding into copies: the scene stays as it is."""
        f = self.folder
        state = State(seq=f.seq, vpcs=dict(f.vpcs), peerings=dict(f.peerings),
                      commands=dict(f.commands), pending=tuple(f.pending),
                      linknet_hwm=f.linknet_hwm)
        places = Places(MappingProxyType(dict(self.hosts)), MappingProxyType(dict(self.columns)),
                        MappingProxyType({v: MappingProxyType(dict(c)) for v, c in self.cells.items()}))
        return Scene(
            state, places, MappingProxyType(dict(self.ghosts)),
            MappingProxyType({c: frozenset(k) for c, k in self.changing.items()}),
            MappingProxyType(dict(self.failed)), MappingProxyType(dict(self.drift)), self.time,
        )  # fmt: skip

    def commits(self, commits: Iterable[Commit]) -> None:
        for c in commits:
            for env in c.envelopes():
                self.envelope(env)

    def envelope(self, env: Envelope) -> None:
        ev = env.event
        cid = env.command_id
        rec = self.folder.commands.get(cid)
        if rec is not None and is_deletion(rec.kind):
            self._capture(cid, rec.kind, env.seq, ev)  # before the event removes it
        self.folder.envelope(env)
        self.time = env.time
        handler = _ON.get(type(ev))
        if handler is not None:
            handler(self, ev, env)
        keys = self.changing.get(cid)
        if keys is not None:
            keys.update(keys_of(ev))
        self._place(ev.aggregates())

    # -- bookkeeping -------------------------------------------------------------------------

    def _accepted(self, ev: CommandAccepted, env: Envelope) -> None:
        self.changing[env.command_id] = set()

    def _applied(self, ev: ChangeApplied, env: Envelope) -> None:
        self._finished(ev.command_id)
        for v in ev.vpcs:
            self.failed.pop(v, None)
            self.drift.pop(v, None)

    def _failed(self, ev: ChangeFailed, env: Envelope) -> None:
        self._finished(ev.command_id)
        for v in ev.vpcs:
            self.failed[v] = Mark(env.seq, env.time, ev.command_id, ev.reason, ev.undo_errors)

    def _drift(self, ev: DriftRepaired, env: Envelope) -> None:
        n = len(ev.steps)
        text = f"drift repaired: {n} step{'s' if n != 1 else ''}"
        for v in ev.vpcs:
            self.drift[v] = Mark(env.seq, env.time, env.command_id, text, ev.steps)

    def _finished(self, command_id: str) -> None:
        self.changing.pop(command_id, None)
        self.ghosts.pop(command_id, None)

    def _capture(self, cid: str, kind: str, seq: int, ev: object) -> None:
        """Keep what a deletion's event removes, as it is before the event."""
        g = self.ghosts.get(cid) or Ghost(cid, kind, seq)
        f = self.folder
        match ev:
            case CommandRedecided():  # decided again on a restored state: captured anew
                g = Ghost(cid, kind, seq)
            case VpcDeleted() if ev.name in f.vpcs:
                g = _with(g, vpcs={**g.vpcs, ev.name: f.vpcs[ev.name]})
            case SubnetDeleted() if ev.vpc in f.vpcs and ev.name in f.vpcs[ev.vpc].subnets:
                sub = f.vpcs[ev.vpc].subnets[ev.name]
                g = _with(g, subnets={**g.subnets, (ev.vpc, ev.name): sub})
            case VpcsUnpeered() if pair(ev.a, ev.b) in f.peerings:
                k = pair(ev.a, ev.b)
                g = _with(g, peerings={**g.peerings, k: f.peerings[k]})
            case AppStopped():
                g = _with(g, apps={**g.apps, (ev.vpc, ev.subnet): ev.port})
            case LoadBalancerDeleted() if ev.vpc in f.vpcs and ev.name in f.vpcs[ev.vpc].balancers:
                lb = f.vpcs[ev.vpc].balancers[ev.name]
                g = _with(g, balancers={**g.balancers, (ev.vpc, ev.name): lb})
            case PortUnexposed() if ev.vpc in f.vpcs:
                k = port_key(ev.host_port, ev.protocol)
                e = f.vpcs[ev.vpc].exposures.get(k)
                if e is None:
                    return
                g = _with(g, exposures={**g.exposures, (ev.vpc, k): e})
            case _:
                return
        self.ghosts[cid] = g

    # -- placement -----------------------------------------------------------------------------

    def _place(self, vpcs: Iterable[str]) -> None:
        """Give what appeared in these VPCs a place, and take back the places of what is gone."""
        moved = False
        for name in vpcs:
            live = self.folder.vpcs.get(name)
            ghosts = [g for g in self.ghosts.values() if g.touches(name)]
            if live is None and not any(name in g.vpcs for g in ghosts):
                if self.columns.pop(name, None) is not None:
                    self.cells.pop(name, None)
                    moved = True
                continue
            if name not in self.columns:
                self.columns[name] = _lowest_free(self.columns.values())
                moved = True
            wanted = dict.fromkeys(cells_of(live) if live is not None else [])
            for g in ghosts:
                wanted.update(dict.fromkeys(g.cells(name)))
            cells = self.cells.setdefault(name, {})
            for k in [k for k in cells if k not in wanted]:
                del cells[k]
            for k in wanted:
                if k not in cells:
                    cells[k] = _lowest_free(cells.values())
        if moved or any(self._host_of(v) not in self.hosts for v in vpcs if v in self.columns):
            self._place_hosts()

    def _host_of(self, vpc: str) -> str:
        live = self.folder.vpcs.get(vpc)
        if live is not None:
            return live.host
        for g in self.ghosts.values():
            if vpc in g.vpcs:
                return g.vpcs[vpc].host
        return ""

    def _place_hosts(self) -> None:
        used = dict.fromkeys(self._host_of(v) for v in sorted(self.columns, key=self.columns.__getitem__))
        for h in [h for h in self.hosts if h not in used]:
            del self.hosts[h]
        for h in used:
            if h not in self.hosts:
                self.hosts[h] = _lowest_free(self.hosts.values())


def _with(g: Ghost, vpcs: Mapping[str, Vpc] | None = None,
          subnets: Mapping[tuple[str, str], Subnet] | None = None,
          peerings: Mapping[str, Peering] | None = None,
          apps: Mapping[tuple[str, str], int] | None = None,
          balancers: Mapping[tuple[str, str], Balancer] | None = None,
          exposures: Mapping[tuple[str, str], Exposure] | None = None) -> Ghost:
    """The ghost with some of its maps replaced (each frozen)."""
    def frozen(m: Mapping[Any, Any] | None, old: Mapping[Any, Any]) -> Mapping[Any, Any]:
        return old if m is None else MappingProxyType(dict(m))

    return Ghost(g.command_id, g.kind, g.seq, frozen(vpcs, g.vpcs), frozen(subnets, g.subnets),
                 frozen(peerings, g.peerings), frozen(apps, g.apps), frozen(balancers, g.balancers),
                 frozen(exposures, g.exposures))


_ON: dict[type, Callable[[SceneFolder, Any, Envelope], None]] = {
    CommandAccepted: SceneFolder._accepted,
    ChangeApplied: SceneFolder._applied,
    ChangeFailed: SceneFolder._failed,
    DriftRepaired: SceneFolder._drift,
}


def scene_of(envelopes: Iterable[Envelope], start: Scene = EMPTY) -> Scene:
    """The scene after `envelopes` (for tests and one-off pictures)."""
    f = SceneFolder(start)
    for env in envelopes:
        f.envelope(env)
    return f.build()
