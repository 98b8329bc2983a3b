"""The job loop: a job names a VPC, and the controller applies that VPC's pending commands
in log order, each group under the locks of the VPCs it touches, then wakes the VPCs whose
commands were waiting for them. The reconcile step itself is the Reconciler's.

Level-triggered: a job carries a VPC, never a diff, so a job that runs twice, or late,
finds nothing left to do. Consecutive commands on one VPC are applied together (one
observe, one diff); a group that fails is applied again one command at a time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence, Set
from typing import Any

from vpcq import config
from vpcq.config import DEFAULT_HOST
from vpcq.errors import DomainError
from vpcq.events.connection import connect
from vpcq.events.jobs import JobQueue
from vpcq.events.store import EventStore
from vpcq.orchestrator.diff import Step
from vpcq.orchestrator.state import CommandRecord, State, VpcView, view_of
from vpcq.workers.cache import LogCache
from vpcq.workers.faults import Faults
from vpcq.workers.kernel.kernel import Kernel
from vpcq.workers.locks import Busy, Locks
from vpcq.workers.reconciler import Reconciler


class NotReady(Exception):
    """An earlier pending command on another VPC must be applied first."""


class Controller:
    def __init__(self, store: EventStore, queue: JobQueue, locks: Locks, kernel: Kernel,
                 name: str = "worker", host: str = DEFAULT_HOST, faults: Faults | None = None) -> None:
        self.host = host  # this machine's VPCs are the ones placed on this host
        self.queue = queue
        self.locks = locks
        self.kernel = kernel
        self.cache = LogCache(store)
        self.reconciler = Reconciler(store, kernel, self.cache, f"{name}@{socket.gethostname()}",
                                     faults)
        self._one_at_a_time: set[str] = set()

    async def apply(self, vpc: str, repair: bool = False, attempt: int = 1) -> int:
        """Apply every pending command of `vpc` (then, with `repair`, any drift); returns how
        many commands were settled. `attempt` counts the job's tries (a deletion's progress
        says how many it took)."""
        settled = 0
        for _ in range(10_000):
            state = await self.cache.refresh()
            pending = state.pending_for(vpc)
            if not pending:
                if repair and self.cache.host_of(vpc) == self.host:
                    await self.repair([vpc])
                return settled
            host = pending[0].host
            if host != self.host:
                # its next command is another host's (the VPC is made again there, or still
                # to be deleted there): that host's workers apply it, and wake this one after
                await self.queue.apply([(vpc, host)], state.seq)
                return settled
            group = self._group(state, pending, vpc)
            names = sorted({v for c in group for v in c.vpcs})
            async with self.locks.hold(names) as lease:
                state = await self.cache.refresh()
                if any(c.id not in state.commands for c in group):
                    continue  # another worker got there first (a finished one has left it)
                outcome = await self.reconciler.apply(state, group, lease, attempt)
            if outcome.settled:
                self._one_at_a_time.difference_update(names)
            else:
                self._one_at_a_time.update(names)
            settled += len(outcome.settled)
            await self._wake_followers(outcome.touched | set(names), outcome.settled)
        return settled

    def _group(self, state: State, pending: list[CommandRecord], vpc: str) -> list[CommandRecord]:
        first = pending[0]
        for cid in state.pending:
            c = state.commands[cid]
            if c.seq >= first.seq:
                break
            if set(c.vpcs) & set(first.vpcs):
                raise NotReady(c.id)
        if first.vpcs != (vpc,) or vpc in self._one_at_a_time:
            return [first]
        group = []
        for c in pending:
            if c.vpcs != (vpc,) or c.host != self.host:
                break
            group.append(c)
        return group

    async def _wake_followers(self, names: Set[str], settled: Set[str]) -> None:
        """Queue the VPCs whose next pending command was waiting on these. The cache was
        read before the outcome of the `settled` commands was appended, so they still look
        pending there: counted, they queued a second job for every VPC of a batch."""
        state = self.cache.state
        wake: set[str] = set()
        for cid in state.pending:
            c = state.commands[cid]
            if cid not in settled and set(c.vpcs) & names:
                wake.update(c.vpcs)
        if wake:
            await self.queue.apply(self.cache.next_jobs(state, wake, settled), state.seq)

    # ---- balancers' health ---------------------------------------------------------------------

    async def follow_health(self, vpc: str) -> bool:
        """Bring the balancer rotations of one of this host's VPCs in line with the observed
        health of their targets. False if it cannot be done now: a change to the VPC is
        pending or being applied (that change plans with the health too; ask again)."""
        state = await self.cache.refresh()
        if state.pending_for(vpc) or self.cache.host_of(vpc) != self.host:
            return False
        try:
            async with self.locks.hold([vpc]) as lease:
                state = await self.cache.refresh()
                if state.pending_for(vpc):
                    return False
                await self.reconciler.follow_health(view_of(state, vpc), lease)
        except Busy:
            return False
        return True

    # ---- drift and repair --------------------------------------------------------------------

    async def drift(self, names: Sequence[str] = (), at: int | None = None,
                    all_rules: bool = True) -> list[Step]:
        """Every step that would bring the kernel to the log's state (now, or right after
        event `at`) for this host's VPCs; nothing is applied (see Reconciler.drift)."""
        state = await self.cache.refresh()
        names = self._mine(names)
        desired = ({v: view_of(state, v) for v in names} if at is None
                   else {v: self.cache.view_at(v, at) for v in names})
        return await self.reconciler.drift(desired, self._also(state, names), all_rules)

    async def repair(self, names: Sequence[str] = ()) -> list[Step]:
        """Bring this host's VPCs back to the log's current state (after a reboot, a hand
        edit). VPCs with pending commands are left to their jobs. Returns the steps taken;
        raises KernelError naming what could not be repaired."""
        state = await self.cache.refresh()
        names = [v for v in self._mine(names) if not state.pending_for(v)]
        if not names:
            return []
        async with self.locks.hold(names) as lease:
            state = await self.cache.refresh()
            desired = {v: view_of(state, v) for v in names}
            return await self.reconciler.repair(desired, self._also(state, names), lease)

    async def repair_when_free(self, names: Sequence[str] = (), wait: float = 15.0) -> list[Step]:
        """`repair`, waiting for a VPC that a worker is changing (or that a worker killed in
        the middle of a change still holds: its lock lapses within seconds)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return await self.repair(names)
            except Busy:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def _also(self, state: State, names: list[str]) -> list[dict[str, VpcView]]:
        """Views whose objects may be in the kernel besides the desired ones: now, and as
        each VPC last existed (what a deleted VPC may have left)."""
        return [{v: view_of(state, v) for v in names}, {v: self.cache.last_view(v) for v in names}]

    def _mine(self, names: Sequence[str]) -> list[str]:
        """`names`, or every VPC the log has named on this host; a VPC of another host is
        an error (its kernel objects are on that host)."""
        for v in names:
            if self.cache.last_view(v).vpc is not None and self.cache.host_of(v) != self.host:
                raise DomainError("vpc", f"{v} is on host {self.cache.host_of(v)}, not on this "
                                         f"one ({self.host}): run it there")
        return list(names) or [v for v in self.cache.known() if self.cache.host_of(v) == self.host]


def build_controller(redis: Any, name: str) -> Controller:
    """The controller of this host's workers, on `redis` (arq's, or a connection of its own)."""
    store = EventStore(redis, config.KEY_PREFIX)
    p = config.paths()
    kernel = Kernel(p.apps, p.run / "host-rules.lock", rules_dir=p.run / "rules", dns_dir=p.dns)
    return Controller(store, JobQueue(redis), Locks(redis, config.KEY_PREFIX), kernel, name,
                      config.host_id(), Faults.from_env())


async def make_controller(name: str) -> tuple[Controller, Any]:
    """A controller outside arq (for `drift` and `repair`: they load no arq)."""
    redis = await connect(config.redis_url())
    return build_controller(redis, name), redis
