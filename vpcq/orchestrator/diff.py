"""diff(desired, actual) -> ordered steps: the one mechanism behind applying commands, undoing
a failed one, rollback, repair (of drift, or after a reboot) and delete. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vpcq.orchestrator.rules import EMPTY_FILTER
from vpcq.orchestrator.topology import (
    Addr,
    App,
    Bridge,
    HostChain,
    LinkState,
    Netns,
    Resource,
    Route,
    Rules,
    Sysctl,
    Topology,
    Veth,
)

Op = Literal["create", "delete", "update"]


@dataclass(frozen=True, slots=True)
class Step:
    op: Op
    resource: Resource
    # the new link's own state, set by the request that creates it (see `fuse`)
    state: LinkState | None = None

    def describe(self) -> str:
        """One line: `create veth vs-1a2b3c in vpcq_my-vpc`, `delete netns my-vpc-db`."""
        r = self.resource
        kind = type(r).__name__.lower()
        if isinstance(r, Netns):
            return f"{self.op} netns {r.name}"
        where = r.ns or "host"
        name = " ".join(str(k) for k in r.key[1:] if k is not None and k != r.ns)
        extra = ""
        if self.state is not None:
            extra = " (up" + (f", master {self.state.master})" if self.state.master else ")")
        return f"{self.op} {kind}{' ' + name if name else ''} in {where}{extra}"


def diff(desired: Topology, actual: Topology) -> list[Step]:
    """Steps that turn `actual` into `desired`: deletes (inside out), then creates/updates."""
    doomed_ns = {r.name for k, r in actual.items() if isinstance(r, Netns) and k not in desired}
    dying_links: set[tuple[str | None, str]] = set()
    for key, r in actual.items():
        if isinstance(r, Veth | Bridge) and desired.get(key) != r:
            dying_links.add((r.ns, r.name))
            if isinstance(r, Veth):
                dying_links.add((r.peer_ns, r.peer_name))
    deletes: list[Step] = []
    for key, r in actual.items():
        want = desired.get(key)
        if want == r or (want is not None and _updatable(r)):
            continue  # equal, or changed in place below
        if not _dies_with(r, doomed_ns, dying_links):
            deletes.append(Step("delete", r))
    born = {r.name for k, r in desired.items() if isinstance(r, Netns) and k not in actual}
    ups: list[Step] = []
    for key, r in desired.items():
        have = actual.get(key)
        if have == r:
            continue
        if isinstance(r, Rules) and r.ns in born and r.text == EMPTY_FILTER:
            continue  # a new namespace starts with exactly these (empty) tables
        ups.append(Step("update" if have is not None and _updatable(r) else "create", r))
    deletes.sort(key=lambda s: -s.resource.rank)
    ups.sort(key=lambda s: s.resource.rank)
    return deletes + ups


def fuse(steps: list[Step]) -> list[Step]:
    """Steps to apply: a link created up (and in its bridge) by one request, as `ip link add
    vs-1 master vb-1 up type veth ...` does, instead of a create and then a set. The link
    state steps it absorbs are dropped; the order of the others is kept. Pure."""
    states = {s.resource.key: s.resource for s in steps
              if s.op != "delete" and isinstance(s.resource, LinkState) and s.resource.up}
    fused: set[tuple[str | None, ...]] = set()
    out: list[Step] = []
    for s in steps:
        r = s.resource
        if s.op == "create" and isinstance(r, Veth | Bridge):
            st = states.get(("linkstate", r.ns, r.name))
            if st is not None:
                fused.add(st.key)
                s = Step(s.op, r, st)
        out.append(s)
    return [s for s in out if not (isinstance(s.resource, LinkState) and s.resource.key in fused
                                   and s.op != "delete")]


def _updatable(r: Resource) -> bool:
    # these are changed in place; everything else is deleted and created again
    return isinstance(r, Sysctl | LinkState | Route | Rules | HostChain)


def _dies_with(
    r: Resource, doomed: set[str], dying_links: set[tuple[str | None, str]]
) -> bool:
    """True when another step (a namespace or link removal) takes `r` with it."""
    match r:
        case Netns() | App() | HostChain():
            return False  # apps hold a namespace alive; host chains live on the host
        case Sysctl():
            return r.ns is None or r.ns in doomed  # host sysctls are left as they are
        case LinkState():
            return True  # a link's state goes with the link; nothing to undo
        case Veth():
            # only when both ends go: a pair whose other end survives is deleted explicitly,
            # because the kernel destroys a namespace's interfaces asynchronously and the
            # surviving end would linger into the next steps
            return r.ns in doomed and r.peer_ns in doomed
        case Addr() | Route():
            return r.ns in doomed or (r.ns, r.dev) in dying_links
        case _:
            return r.ns in doomed
