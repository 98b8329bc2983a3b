"""The kernel seen and changed as plain records: one driver per kind of object, behind one
small protocol (observe what is there, apply steps), dispatched by type the way `evolve`
dispatches events. `Kernel` is the only object the reconciler talks to.

Netlink drivers (namespaces, links, addresses, routes, sysctls) block: their requests wait
for the kernel's rtnl lock, held for seconds while it destroys removed namespaces. They run
on one thread of their own, a whole observation or run of steps per trip (a trip to a
thread can wait for the interpreter lock, so they are few). The others (rules, host chains,
apps) wait for processes and are awaited on the event loop, side by side across jobs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from vpcq.orchestrator.diff import Step
from vpcq.orchestrator.rules import EMPTY_FILTER
from vpcq.orchestrator.topology import (
    HostChain,
    HostPorts,
    Netns,
    Resource,
    Rules,
    Sysctl,
    Topology,
    Veth,
)
from vpcq.workers.kernel.netlink import LinkInfo, Netlink

T = TypeVar("T")
Before = Callable[[int, Step], Coroutine[Any, Any, None]]
BATCH = 500  # steps carried out together at most


@dataclass(frozen=True)
class Scope:
    """Where to look: what vpcq may have made for the VPCs being planned."""

    namespaces: frozenset[str] = frozenset()
    host_links: frozenset[str] = frozenset()
    host_chains: frozenset[str] = frozenset()
    host_ports: frozenset[str] = frozenset()  # chains of the host's public ports
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
        ports: set[str] = set()
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
                    case HostPorts():
                        ports.add(r.chain)
                    case Rules() if r.text != EMPTY_FILTER:
                        rules_ns.add(r.ns)
                    case Sysctl():
                        sysctls.add((r.ns, r.name))
        return cls(frozenset(namespaces), frozenset(host_links), frozenset(chains), frozenset(ports),
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


class Kernel:
    """The only object that reads or changes the kernel: a dispatcher over the drivers."""

    def __init__(self, apps_dir: Path, lock_path: Path, dns_dir: Path | None = None) -> None:
        from vpcq.workers.kernel.addresses import Addresses
        from vpcq.workers.kernel.apps import Apps
        from vpcq.workers.kernel.hostchains import HostChains
        from vpcq.workers.kernel.links import Links
        from vpcq.workers.kernel.namespaces import Namespaces
        from vpcq.workers.kernel.nsrules import NamespaceRules
        from vpcq.workers.kernel.resolvconf import ResolvConfs
        from vpcq.workers.kernel.resolvers import Resolvers
        from vpcq.workers.kernel.routes import Routes
        from vpcq.workers.kernel.sysctls import Sysctls

        self.nl = Netlink()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vpcq-netlink")
        self.rules = NamespaceRules(self.nl, self.netlink)
        # in the order they observe: each may use what the ones before it found
        self.netlink_drivers: list[NetlinkDriver] = [
            Namespaces(self.nl, self.rules), Links(self.nl), Addresses(self.nl), Routes(self.nl),
            Sysctls(),
        ]
        self.host_chains = HostChains(self.nl, self.netlink, lock_path)
        self.apps = Apps(apps_dir)
        # the resolvers' files live beside the apps' (both under $VPCQ_HOME), made absolute:
        # dnsmasq starts in /
        dns_dir = Path(os.path.abspath(dns_dir or apps_dir.with_name("dns")))
        self.resolvers = Resolvers(dns_dir)
        self.drivers: list[Driver] = [self.rules, self.host_chains, self.apps, self.resolvers,
                                      ResolvConfs()]
        self._netlink_kinds: dict[type, NetlinkDriver] = {
            k: d for d in self.netlink_drivers for k in d.kinds}
        self._kinds: dict[type, Driver] = {k: d for d in self.drivers for k in d.kinds}

    def close(self) -> None:
        for d in self.drivers:
            d.close()
        self._thread.submit(self.nl.close).result()
        self._thread.shutdown()

    async def netlink(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the netlink thread; the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def default_internet_if(self) -> str | None:
        """The interface of the host's default route."""
        def read() -> str | None:
            links = self.nl.links(None)
            return next((dev for dst, _gw, dev in self.nl.routes(None, links) if dst == "default"),
                        None)

        return await self.netlink(read)

    async def observe(self, scope: Scope, desired: Topology, *, all_rules: bool = False) -> Topology:
        """What exists now of everything in `scope`, as the same records `plan` makes."""
        obs = Observation(scope, desired, all_rules)

        def here() -> None:
            for d in self.netlink_drivers:
                d.observe(obs)

        await self.netlink(here)
        for d in self.drivers:
            await d.observe(obs)
        return obs.found

    async def apply(self, steps: Sequence[Step], first: int, guard: Callable[[], None],
                    before: Before | None = None) -> None:
        """Carry out a run of steps that `batch_end` found can go together (the first is
        step number `first` of its change). `guard()` is called before each step and stops
        the run by raising (a lost lease); `before(n, step)`, if given, is awaited on the
        event loop before each (fault injection, a line per step)."""
        run = Run(steps, first, guard, before, asyncio.get_running_loop())
        kind = type(steps[0].resource)
        if kind in self._netlink_kinds:
            await self.netlink(self._netlink_run, run)
        else:
            await self._kinds[kind].apply(run)

    def _netlink_run(self, run: Run) -> None:
        i = 0
        while i < len(run.steps):  # the part of the run each driver takes
            driver = self._netlink_kinds[type(run.steps[i].resource)]
            end = i + 1
            while end < len(run.steps) and type(run.steps[end].resource) in driver.kinds:
                end += 1
            driver.apply(run, i, end)
            i = end

    def batch_end(self, steps: Sequence[Step], i: int) -> int:
        """The end of the run of steps from `i` that `apply` carries out together: steps on
        netlink objects (one trip to their thread), or host chains all created or all
        deleted (one restore for them all); any other step alone."""
        r0 = steps[i].resource
        delete = steps[i].op == "delete"

        def joins(s: Step) -> bool:
            if type(r0) in self._netlink_kinds:
                return type(s.resource) in self._netlink_kinds
            return isinstance(r0, HostChain | HostPorts) and isinstance(s.resource, HostChain | HostPorts) \
                and (s.op == "delete") == delete

        j = i + 1
        while j < len(steps) and j - i < BATCH and joins(steps[j]):
            j += 1
        return j
