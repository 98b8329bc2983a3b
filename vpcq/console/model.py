"""topology(scene, facts) -> Graph: the network as nodes and edges, and what changed between
two of them. Pure: no I/O.

A node is an object a network engineer points at (the internet, a host, a VPC, its router, a
subnet); an edge is a link between two (egress, uplink, a subnet on its router's bridge, a
peering). Each carries its `facts` (the object as the log has it: what time travel
compares and the details panel lists), its `status` (ok, pending, deleting) and its `notes`
(a failure, a drift repair, a deletion's progress, a warning), shown on the object itself.

New kinds of objects plug in by adding a case: a builder for the kind in `_CELLS` (the
objects that take a cell of a VPC's grid: subnets and balancers), its edges built beside it
(a balancer's targets, coloured by `Facts.health`; a public port, an edge from its host),
`scene.cells_of` and `scene.keys_of` for its place and its pending state, and its look in
`layout.LOOKS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol, TypeVar

from vpcq.config import DEFAULT_HOST
from vpcq.console.scene import (
    Ghost,
    Mark,
    Scene,
    balancer_key,
    exposure_key,
    peering_key,
    subnet_key,
    vpc_key,
)
from vpcq.events.schema import Firewall, Rule
from vpcq.orchestrator.naming import overlap
from vpcq.orchestrator.state import Balancer, Exposure, Peering, Subnet, Vpc, is_deletion, pair

Status = Literal["ok", "pending", "deleting"]
T = TypeVar("T")
Band = Literal["internet", "host", "vpc", "router", "cell"]


class Spot(NamedTuple):
    """Where a node goes, in the placement's terms (the layout turns it into pixels)."""

    band: Band
    column: int = 0  # a VPC's column, or a host's row
    cell: int = 0  # a cell of the VPC's grid


class Note(NamedTuple):
    kind: Literal["failed", "drift", "deleting", "pending", "warning"]
    text: str
    lines: tuple[str, ...] = ()


Facts_ = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    kind: str  # internet, host, vpc, router, subnet, balancer
    title: str
    spot: Spot
    lines: tuple[str, ...] = ()
    status: Status = "ok"
    notes: tuple[Note, ...] = ()
    facts: Facts_ = ()
    vpc: str | None = None  # the VPC it belongs to
    variant: str = ""  # a kind's sub-kind that looks different (a public or a private subnet)


@dataclass(frozen=True, slots=True)
class Edge:
    id: str
    kind: str  # egress, uplink, attach, peering, target (a balancer's), port (a public one)
    source: str
    target: str
    label: str = ""
    status: Status = "ok"
    notes: tuple[Note, ...] = ()
    facts: Facts_ = ()
    vpcs: tuple[str, ...] = ()
    variant: str = ""  # a kind's sub-kind that looks different (a target up, down, unknown)


@dataclass(frozen=True, slots=True)
class Graph:
    seq: int
    time: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    columns: int  # how many VPC columns the placement has
    hosts: int  # how many host rows


class Progress(Protocol):
    """A deletion's progress as the workers record it (vpcq.events.observed.Deleting)."""

    @property
    def sample(self) -> tuple[str, ...]: ...

    def describe(self) -> str: ...


class Check(Protocol):
    """A balancer target's last health check (vpcq.events.observed.Health)."""

    @property
    def up(self) -> bool: ...
    @property
    def since(self) -> str: ...
    @property
    def checked(self) -> str: ...
    @property
    def error(self) -> str | None: ...


class Facts(NamedTuple):
    """What workers observe and the log does not hold; None where it is not known (a picture
    of the past, or a Redis that did not answer)."""

    workers: Mapping[str, int] | None = None  # host -> workers up
    deleting: Mapping[str, Progress] = MappingProxyType({})  # deletion command id -> progress
    # VPC -> balancer -> "subnet:port" -> its last check; None: not known (the past), a
    # target missing from a known map: never checked yet
    health: Mapping[str, Mapping[str, Mapping[str, Check]]] | None = None


NO_FACTS = Facts()


def topology(scene: Scene, facts: Facts = NO_FACTS) -> Graph:
    """The picture of a scene: every host, VPC, router, subnet and peering, with what is
    pending, being deleted, failed or repaired shown on the objects it concerns."""
    return _Builder(scene, facts).build()


class _Builder:
    def __init__(self, scene: Scene, facts: Facts) -> None:
        self.scene = scene
        self.facts = facts
        self.state = scene.state
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.pending: dict[str, list[str]] = {}  # object key -> the pending commands changing it
        for cid, keys in scene.changing.items():
            for k in keys:
                self.pending.setdefault(k, []).append(cid)
        self.ghost_vpcs: dict[str, Ghost] = {}
        self.ghost_subnets: dict[tuple[str, str], tuple[Ghost, Subnet]] = {}
        self.ghost_balancers: dict[tuple[str, str], tuple[Ghost, Balancer]] = {}
        for g in scene.ghosts.values():
            for name in g.vpcs:
                self.ghost_vpcs[name] = g
            for where, sub in g.subnets.items():
                self.ghost_subnets[where] = (g, sub)
            for where, lb in g.balancers.items():
                self.ghost_balancers[where] = (g, lb)

    def build(self) -> Graph:
        places = self.scene.places
        self._internet()
        for host, row in places.hosts.items():
            self._host(host, row)
        for name, column in places.columns.items():
            self._vpc(name, column)
        self._peerings()
        self._ports()
        return Graph(self.scene.seq, self.scene.time, tuple(self.nodes), tuple(self.edges),
                     max(places.columns.values(), default=-1) + 1,
                     max(places.hosts.values(), default=-1) + 1)

    # -- status and notes ------------------------------------------------------------------------

    def _changing(self, key: str) -> tuple[Status, list[Note]]:
        notes = []
        for cid in self.pending.get(key, ()):
            rec = self.state.commands.get(cid)
            # a deletion is drawn by what it deletes (deleting), not as a pending change
            if rec is not None and not is_deletion(rec.kind):
                notes.append(Note("pending", f"pending: {rec.kind}", (f"command {cid}",)))
        return ("pending" if notes else "ok"), notes

    def _deleting(self, g: Ghost) -> Note:
        p = self.facts.deleting.get(g.command_id)
        head = (f"command {g.command_id} ({g.kind})",)
        if p is None:
            return Note("deleting", f"deleting: {g.kind}", head)
        return Note("deleting", p.describe(), (*head, *p.sample))

    # -- nodes -----------------------------------------------------------------------------------

    def _internet(self) -> None:
        self.nodes.append(Node("internet", "internet", "internet", Spot("internet"),
                               ("public subnets reach it through SNAT",)))

    def _host(self, host: str, row: int) -> None:
        notes: list[Note] = []
        lines: tuple[str, ...] = ()
        workers = self.facts.workers
        if workers is not None:
            n = workers.get(host, 0)
            lines = (f"{n} worker{'s' if n != 1 else ''} up",)
            if n == 0:
                notes.append(Note("warning", "no worker is up: changes wait (vpcq up)"))
        node = Node(f"host:{host}", "host", f"host {host}", Spot("host", row), lines,
                    notes=tuple(notes), facts=(("host", host),))
        self.nodes.append(node)
        self.edges.append(Edge(f"egress:{host}", "egress", "internet", node.id))

    def _vpc(self, name: str, column: int) -> None:
        live = self.state.vpcs.get(name)
        ghost = self.ghost_vpcs.get(name)
        vpc = live if live is not None else ghost.vpcs[name] if ghost is not None else None
        if vpc is None:
            return
        key = vpc_key(name)
        status, notes = self._changing(key)
        if live is None and ghost is not None:
            status, notes = "deleting", [self._deleting(ghost)]
        elif ghost is not None:  # made again while its earlier self is still being deleted
            notes.append(Note("deleting", f"an earlier {name} is still being deleted",
                              (f"command {ghost.command_id} ({ghost.kind})",)))
        mark = self.scene.failed.get(name)
        if mark is not None:
            notes.append(Note("failed", f"last change failed: {mark.text}",
                              (f"command {mark.command_id} at seq {mark.seq}", *mark.lines)))
        drift = self.scene.drift.get(name)
        attributed = self._drift_lines(vpc) if drift is not None else {}
        if drift is not None and attributed.get(None):
            notes.append(_drift_note(drift, attributed[None]))
        if not vpc.host_route:
            notes.append(Note("warning", self._unreachable(vpc)))
        multi = len(self.scene.places.hosts) > 1 or vpc.host != DEFAULT_HOST
        self.nodes.append(Node(
            key, "vpc", f"VPC {name} · {vpc.cidr}", Spot("vpc", column),
            (f"host {vpc.host}",) if multi else (), status, tuple(notes),
            (("cidr", vpc.cidr), ("host", vpc.host), ("key", vpc.key),
             ("router namespace", vpc.router_ns), ("reachable from the host", _yes(vpc.host_route))),
            name,
        ))  # fmt: skip
        up = vpc.uplink
        router = f"router:{name}"
        self.nodes.append(Node(
            router, "router", f"router {vpc.router_ns}", Spot("router", column),
            (f"uplink {up.b_addr} → host {up.a_addr}",
             f"NAT out via {vpc.interface or 'the default route'}"),
            status, (), (("namespace", vpc.router_ns), ("uplink", f"{up.net} ({up.a_if} ⇄ {up.b_if})"),
                         ("router address", up.b_addr), ("host address", up.a_addr),
                         ("internet interface", vpc.interface or "the default route's")),
            name,
        ))  # fmt: skip
        self.edges.append(Edge(f"uplink:{name}", "uplink", router, f"host:{vpc.host}",
                               status=status, facts=(("link-net", up.net),), vpcs=(name,)))
        for cell_key, index in self.scene.places.cells.get(name, {}).items():
            kind = cell_key.split(":", 1)[0]
            build = _CELLS.get(kind)
            if build is not None:
                build(self, vpc, live, cell_key, index, column, attributed)

    def _cell(self, vpc: Vpc, live: Vpc | None, key: str, of: Callable[[Vpc], Mapping[str, T]],
              ghosts: Mapping[tuple[str, str], tuple[Ghost, T]]) -> tuple[T, Status, list[Note]] | None:
        """A cell's object (a subnet, a balancer) as the state has it, or as a pending deletion
        of it or of its whole VPC kept it; its status and notes."""
        name = key.split("/", 1)[1]
        obj = of(live).get(name) if live is not None else None
        ghost: Ghost | None = None
        if obj is None:
            if live is None:
                ghost = self.ghost_vpcs.get(vpc.name)
                obj = of(vpc).get(name)
            if obj is None and (vpc.name, name) in ghosts:
                ghost, obj = ghosts[(vpc.name, name)]
        if obj is None:
            return None
        if ghost is not None:
            return obj, "deleting", [self._deleting(ghost)]
        return (obj, *self._changing(key))

    def _subnet(self, vpc: Vpc, live: Vpc | None, key: str, index: int, column: int,
                attributed: Mapping[str | None, list[str]]) -> None:
        name = key.split("/", 1)[1]
        found = self._cell(vpc, live, key, lambda v: v.subnets, self.ghost_subnets)
        if found is None:
            return
        sub, status, notes = found
        stopping = self._stopping(vpc.name, name)
        if stopping is not None:
            notes.append(stopping)
        drift = self.scene.drift.get(vpc.name)
        if drift is not None and attributed.get(key):
            notes.append(_drift_note(drift, attributed[key]))
        app = f"app :{sub.app_port}" if sub.app_port else "no app"
        fw = _firewall_summary(sub.firewall)
        self.nodes.append(Node(
            key, "subnet", sub.name, Spot("cell", column, index),
            (f"{'public' if sub.public else 'private'} · {sub.cidr}",
             f"host {sub.address} · gw {sub.gateway}", f"{app} · {fw}"),
            status, tuple(notes),
            (("type", "public" if sub.public else "private"), ("cidr", sub.cidr),
             ("address", f"{sub.address}/{sub.prefixlen}"), ("gateway", sub.gateway),
             ("namespace", sub.netns), ("bridge", sub.bridge), ("router veth", sub.veth),
             ("app", f":{sub.app_port}" if sub.app_port else "none"), ("firewall", fw),
             *((f"rule {i + 1}", r) for i, r in enumerate(_rules(sub.firewall)))),
            vpc.name, "public" if sub.public else "private",
        ))  # fmt: skip
        self.edges.append(Edge(f"attach:{vpc.name}/{sub.name}", "attach", f"router:{vpc.name}", key,
                               status=status, facts=(("bridge", sub.bridge), ("gateway", sub.gateway)),
                               vpcs=(vpc.name,)))

    def _stopping(self, vpc: str, subnet: str) -> Note | None:
        for g in self.scene.ghosts.values():
            port = g.apps.get((vpc, subnet))
            if port is not None:
                return self._deleting(g)._replace(text=f"stopping app :{port}")
        return None

    def _balancer(self, vpc: Vpc, live: Vpc | None, key: str, index: int, column: int,
                  attributed: Mapping[str | None, list[str]]) -> None:
        found = self._cell(vpc, live, key, lambda v: v.balancers, self.ghost_balancers)
        if found is None:
            return
        lb, status, notes = found
        health = self.facts.health
        checks = health.get(vpc.name, {}).get(lb.name, {}) if health is not None else None
        targets = [f"{t.subnet}:{t.port}" for t in lb.targets]
        n = len(targets)
        count = f"{n} target{'s' if n != 1 else ''}"
        if checks is not None:
            up = sum(1 for t in targets if t in checks and checks[t].up)
            down = sum(1 for t in targets if t in checks and not checks[t].up)
            count += f" · {up} up" + (f" · {down} down" if down else "")
            if down == n and status == "ok":
                notes.append(Note("warning", "every target is down: connections are refused"))
        dns = f"{lb.name}.{vpc.name}.internal"
        self.nodes.append(Node(
            key, "balancer", f"balancer {lb.name}", Spot("cell", column, index),
            (dns, f"{lb.address}:{lb.port}", count), status, tuple(notes),
            (("name", dns), ("address", f"{lb.address}:{lb.port}"), ("key", lb.key),
             *((f"target {i + 1}", t) for i, t in enumerate(targets))),
            vpc.name,
        ))  # fmt: skip
        self.edges.append(Edge(f"attach:{vpc.name}/{lb.name}", "attach", f"router:{vpc.name}", key,
                               status=status, facts=(("address", lb.address),), vpcs=(vpc.name,)))
        for t in lb.targets:
            target = f"{t.subnet}:{t.port}"
            # no health at all in a picture of the past: nothing was observed there
            variant, label, lines = ("", "", ()) if checks is None else _health(checks.get(target))
            self.edges.append(Edge(
                f"target:{vpc.name}/{lb.name}/{target}", "target", key, subnet_key(vpc.name, t.subnet),
                f":{t.port}" + (f" {label}" if label else ""), status, (),
                (("balancer", lb.name), ("target", target), *(("health", x) for x in lines)),
                (vpc.name,), variant,
            ))  # fmt: skip

    def _ports(self) -> None:
        """Each public port: an edge from its VPC's host to the subnet or balancer it reaches."""
        present = {n.id for n in self.nodes}
        seen: set[tuple[str, str]] = set()
        for vpc in self.state.vpcs.values():
            for k, e in vpc.exposures.items():
                seen.add((vpc.name, k))
                self._port(vpc, e, *self._changing(exposure_key(vpc.name, e.host_port, e.protocol)),
                           present)
        for g in self.scene.ghosts.values():
            for name, vpc in g.vpcs.items():
                for k, e in vpc.exposures.items():
                    if (name, k) not in seen:
                        seen.add((name, k))
                        self._port(vpc, e, "deleting", [self._deleting(g)], present)
            for (name, k), e in g.exposures.items():
                owner = self.state.vpcs.get(name)
                if owner is not None and (name, k) not in seen:
                    seen.add((name, k))
                    self._port(owner, e, "deleting", [self._deleting(g)], present)

    def _port(self, vpc: Vpc, e: Exposure, status: Status, notes: list[Note], present: set[str]) -> None:
        target = (balancer_key if e.balancer else subnet_key)(vpc.name, e.target)
        host = f"host:{vpc.host}"
        if target not in present or host not in present:
            return
        self.edges.append(Edge(
            exposure_key(vpc.name, e.host_port, e.protocol), "port", host, target,
            f"{e.key} → {e.target}:{e.port}", status, tuple(notes),
            (("public port", f"host {vpc.host} {e.key}"),
             ("reaches", f"{'balancer' if e.balancer else 'subnet'} {e.target} port {e.port}")),
            (vpc.name,),
        ))  # fmt: skip

    def _peerings(self) -> None:
        present = {n.id for n in self.nodes}
        seen: set[str] = set()
        for p in self.state.peerings.values():
            seen.add(pair(p.a, p.b))
            status, notes = self._changing(peering_key(p.a, p.b))
            self._peering(p, status, notes, present)
        for g in self.scene.ghosts.values():
            for k, p in g.peerings.items():
                if k not in seen:
                    seen.add(k)
                    self._peering(p, "deleting", [self._deleting(g)], present)

    def _peering(self, p: Peering, status: Status, notes: list[Note], present: set[str]) -> None:
        a, b = f"router:{p.a}", f"router:{p.b}"
        if a not in present or b not in present:
            return
        link = p.link
        self.edges.append(Edge(
            peering_key(p.a, p.b), "peering", a, b, f"peered · {link.net}", status, tuple(notes),
            ((f"{p.a} side", f"{link.a_if} {link.a_addr}"), (f"{p.b} side", f"{link.b_if} {link.b_addr}"),
             ("routes", f"{p.a} → {p.b_cidr}, {p.b} → {p.a_cidr}")),
            (p.a, p.b),
        ))  # fmt: skip

    # -- helpers ---------------------------------------------------------------------------------

    def _drift_lines(self, vpc: Vpc) -> dict[str | None, list[str]]:
        """A drift repair's steps by the object they concern: a subnet's (its namespace,
        bridge or veth is named in the step), else the VPC's own (None)."""
        mark = self.scene.drift[vpc.name]
        names = {n: subnet_key(vpc.name, s.name) for s in vpc.subnets.values()
                 for n in (s.netns, s.bridge, s.veth)}
        out: dict[str | None, list[str]] = {}
        for line in mark.lines:
            owner = next((names[w] for w in line.split() if w in names), None)
            out.setdefault(owner, []).append(line)
        return out

    def _unreachable(self, vpc: Vpc) -> str:
        others = [o.name for o in self.state.vpcs.values()
                  if o.name != vpc.name and o.host == vpc.host and overlap(o.cidr, vpc.cidr)]
        return (f"not reachable from the host: {vpc.cidr} overlaps "
                f"{', '.join(others) or 'a VPC that existed at its creation'}")


def _drift_note(mark: Mark, lines: list[str]) -> Note:
    n = len(lines)
    return Note("drift", f"drift repaired at {_clock(mark.time)}: {n} step{'s' if n != 1 else ''}",
                tuple(lines))


def _health(check: Check | None) -> tuple[str, str, tuple[str, ...]]:
    """A target's look, label and lines: up, down (with why), unknown (never checked)."""
    if check is None:
        return "unknown", "unknown", ("not checked yet",)
    if check.up:
        return "up", "up", (f"up since {check.since}", f"checked {check.checked}")
    why = check.error or "no answer"
    return "down", f"down: {why}", (f"down since {check.since}: {why}", f"checked {check.checked}")


def _clock(time: str) -> str:
    """HH:MM:SS of an ISO time (the date is in the details)."""
    return time[11:19] if len(time) >= 19 else time


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _firewall_summary(fw: Firewall | None) -> str:
    if fw is None:
        return "no firewall"
    n = len(fw.ingress) + len(fw.egress)
    return f"fw {n} rule{'s' if n != 1 else ''}, default {fw.default}"


def _rule(direction: str, r: Rule) -> str:
    port = f" port {r.port}" if r.port else ""
    peer = r.cidr or "anywhere"
    return f"{direction} {r.action} {r.protocol}{port} {'from' if direction == 'in' else 'to'} {peer}"


def _rules(fw: Firewall | None) -> list[str]:
    if fw is None:
        return []
    return [_rule("in", r) for r in fw.ingress] + [_rule("out", r) for r in fw.egress] + [
        f"then {fw.default} (ingress{', egress' if fw.egress else ''})"]


# The builders of the objects that take a cell of a VPC's grid, by the prefix of their key.
CellBuilder = Callable[[_Builder, Vpc, "Vpc | None", str, int, int, Mapping[str | None, list[str]]], None]
_CELLS: dict[str, CellBuilder] = {
    "subnet": _Builder._subnet,
    "balancer": _Builder._balancer,
}


# ---- what changed between two pictures ----------------------------------------------------------


class Change(NamedTuple):
    op: Literal["added", "removed", "changed"]
    id: str
    kind: str
    title: str
    details: tuple[str, ...] = ()  # "app: none → :8000"


def changes(then: Graph, now: Graph) -> list[Change]:
    """What is in `now` and not in `then`, the other way round, and what differs in its facts
    (objects being deleted count as there: their status says the rest)."""
    a = _objects(then)
    b = _objects(now)
    out: list[Change] = []
    for oid, (kind, title, facts) in b.items():
        if oid not in a:
            out.append(Change("added", oid, kind, title))
            continue
        before = dict(a[oid][2])
        after = dict(facts)
        details = tuple(
            f"{k}: {before.get(k, '—')} → {after.get(k, '—')}"
            for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)
        )
        if details:
            out.append(Change("changed", oid, kind, title, details))
    out += [Change("removed", oid, kind, title) for oid, (kind, title, _f) in a.items() if oid not in b]
    return out


def _objects(g: Graph) -> dict[str, tuple[str, str, Facts_]]:
    """The objects time travel compares: VPCs, subnets, peerings, hosts (not the drawing's
    routers and links, whose facts are their VPC's and subnet's)."""
    out: dict[str, tuple[str, str, Facts_]] = {}
    routers = {n.vpc: n.facts for n in g.nodes if n.kind == "router"}
    for n in g.nodes:
        if n.kind in ("internet", "router"):
            continue
        facts = n.facts + routers.get(n.vpc, ()) if n.kind == "vpc" else n.facts  # its router's are its own
        out[n.id] = (n.kind, n.title, facts)
    for e in g.edges:
        if e.kind == "peering":
            out[e.id] = (e.kind, f"peering {' ⇄ '.join(e.vpcs)}", e.facts)
        elif e.kind == "port":
            out[e.id] = (e.kind, f"public port {e.label}", e.facts)
    return out

