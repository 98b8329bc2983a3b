"""The one small protocol every kernel driver speaks: observe what is there of its kinds of
object into an Observation, and apply a Run of steps on them.

Drivers whose calls block (netlink, namespaces, sysctls) are `NetlinkDriver`s: the
dispatcher (`kernel.Kernel`) runs them on its netlink thread, a whole observation or run of
steps per trip. The others (`Driver`: rules, host chains, apps) wait for processes and are
awaited on the event loop, their waits on threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from vpcq.orchestrator.diff import Step
from vpcq.orchestrator.rules import EMPTY_FILTER
from vpcq.orchestrator.topology import HostChain, Netns, Resource, Rules, Sysctl, Topology, Veth
from vpcq.workers.kernel.netlink import LinkInfo

Before = Callable[[int, Step], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Scope:
    """Where to look: what vpcq may have made for the VPCs being planned."""

    namespaces: frozenset[str] = frozenset()
    host_links: frozenset[str] = frozenset()
    host_chains: frozenset[str] = frozenset()
    rules_ns: frozenset[str] = frozenset()  # namespaces whose rule tables vpcq fills
    sysctls: frozenset[tuple[str | None, str]] = frozenset()
    veths: tuple[Veth, ...] = ()  # every pair planned
    # rule tables and sysctls a change leaves as they were: taken as desired, not read
    # (reading a rule table is an iptables-save process; drift is for `repair` to find)
    trusted: frozenset[tuple[object, ...]] = frozenset()

    @classmethod
    def of(cls, *topologies: Topology, trusted: Iterable[tuple[object, ...]] = ()) -> Scope:
        """What the given topologies (the target, what was, what is wanted now) could have
        in the kernel."""
        namespaces: set[str] = set()
        host_links: set[str] = set()
        chains: set[str] = set()
        rules_ns: set[str] = set()
        sysctls: set[tuple[str | None, str]] = set()
        veths: dict[tuple[object, ...], Veth] = {}
        for t in topologies:
            for r in t.values():
                match r:
                    case Netns():
                        namespaces.add(r.name)
                    case Veth():
                        veths[r.key] = r
                        host_links.update(n for ns, n in ((r.ns, r.name), (r.peer_ns, r.peer_name))
                                          if ns is None)
                    case HostChain():
                        chains.add(r.chain)
                    case Rules() if r.text != EMPTY_FILTER:
                        rules_ns.add(r.ns)
                    case Sysctl():
                        sysctls.add((r.ns, r.name))
        return cls(frozenset(namespaces), frozenset(host_links), frozenset(chains),
                   frozenset(rules_ns), frozenset(sysctls), tuple(veths.values()), frozenset(trusted))


@dataclass
class Observation:
    """One look at the kernel: what to look for, what has been found so far, and the facts
    drivers share (the namespaces that exist, their links)."""

    scope: Scope
    desired: Topology
    all_rules: bool = False  # read every rule table, trusted or not (drift)
    found: Topology = field(default_factory=dict)
    present: set[str] = field(default_factory=set)  # the namespaces in scope that exist
    links: dict[str | None, dict[str, LinkInfo]] = field(default_factory=dict)  # of each looked into

    def put(self, r: Resource) -> None:
        self.found[r.key] = r

    def trusted(self, key: tuple[object, ...]) -> bool:
        """Whether the object at `key` is taken as desired without reading it."""
        return not self.all_rules and key in self.scope.trusted and key in self.desired

    @property
    def namespaces(self) -> list[str]:
        """The namespaces in scope that exist, in order."""
        return sorted(self.present)


@dataclass
class Run:
    """A run of steps handed to one driver: each is checked before it is carried out."""

    steps: Sequence[Step]
    first: int  # the number of the first step in its change
    guard: Callable[[], None]  # raises to stop the run (a lost lease)
    before: Before | None  # awaited on the event loop before each step (faults, a log line)
    loop: asyncio.AbstractEventLoop

    async def check(self, n: int, step: Step) -> None:
        """Before a step, on the event loop."""
        self.guard()
        if self.before is not None:
            await self.before(self.first + n, step)

    def check_here(self, n: int, step: Step) -> None:
        """Before a step, on another thread."""
        self.guard()
        if self.before is not None:
            asyncio.run_coroutine_threadsafe(self.before(self.first + n, step), self.loop).result()


class NetlinkDriver(Protocol):
    """A kind of object made with blocking calls, on the netlink thread."""

    kinds: ClassVar[tuple[type, ...]]

    def observe(self, obs: Observation) -> None: ...

    def apply(self, run: Run, lo: int, hi: int) -> None:
        """Steps `lo` to `hi` of the run (checking each first with `run.check_here`)."""


class Driver(Protocol):
    """A kind of object made by processes (rules, apps), awaited on the event loop."""

    kinds: ClassVar[tuple[type, ...]]

    async def observe(self, obs: Observation) -> None: ...

    async def apply(self, run: Run) -> None:
        """The steps of the run (checking each first with `run.check`)."""

    def close(self) -> None: ...
