"""The kernel seen and changed as plain records: `Kernel` dispatches each kind of object to
its driver (see `driver`: one small protocol, observe what is there, apply steps) by type,
the way `evolve` dispatches events. It is the only object the reconciler talks to.

Netlink drivers (namespaces, links, addresses, routes, sysctls) block: their requests wait
for the kernel's rtnl lock, held for seconds while it destroys removed namespaces. They run
on one thread of their own, a whole observation or run of steps per trip (a trip to a
thread can wait for the interpreter lock, so they are few). The others (rules, host chains,
apps) wait for processes and are awaited on the event loop, side by side across jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from vpcq.orchestrator.diff import Step
from vpcq.orchestrator.topology import HostChain, Topology
from vpcq.workers.kernel.addresses import Addresses
from vpcq.workers.kernel.apps import Apps
from vpcq.workers.kernel.driver import Before, Driver, NetlinkDriver, Observation, Run, Scope
from vpcq.workers.kernel.hostchains import HostChains
from vpcq.workers.kernel.links import Links
from vpcq.workers.kernel.namespaces import Namespaces
from vpcq.workers.kernel.netlink import Netlink
from vpcq.workers.kernel.nsrules import NamespaceRules
from vpcq.workers.kernel.routes import Routes
from vpcq.workers.kernel.sysctls import Sysctls

T = TypeVar("T")
BATCH = 500  # steps carried out together at most


class Kernel:
    """The only object that reads or changes the kernel: a dispatcher over the drivers."""

    def __init__(self, apps_dir: Path, lock_path: Path) -> None:
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
        self.drivers: list[Driver] = [self.rules, self.host_chains, self.apps]
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
            return isinstance(r0, HostChain) and isinstance(s.resource, HostChain) \
                and (s.op == "delete") == delete

        j = i + 1
        while j < len(steps) and j - i < BATCH and joins(steps[j]):
            j += 1
        return j
