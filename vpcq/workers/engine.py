"""The reconcile engine: fold the log, plan, observe, diff, apply, record the outcome.

Level-triggered: a job names a VPC; the engine applies that VPC's pending commands in log
order. Consecutive commands on one VPC are applied together (one observe, one diff); if
that fails, they are applied one at a time so the failing command is the one recorded.
A failed change is undone by the same diff with an earlier target, and the log records
the failure plus the restore (never a rewrite). A deletion goes forward instead: it is not
undone, it is tried again (with backoff) until the kernel holds none of what it removes,
and it is recorded applied only once that is checked; meanwhile its progress is observed
state (`Observed`), shown by `vpcq status` and `vpcq list`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from vpcq.config import DEFAULT_HOST
from vpcq.errors import ConcurrencyError, DomainError, KernelError, LockLost, VpcqError
from vpcq.events.jobs import JobQueue
from vpcq.events.observed import Observed
from vpcq.events.schema import ChangeApplied, DriftRepaired, Envelope
from vpcq.events.store import EventStore
from vpcq.orchestrator.decide import is_deletion
from vpcq.orchestrator.diff import Step, diff, fuse
from vpcq.orchestrator.failure import fail
from vpcq.orchestrator.service import utc_now
from vpcq.orchestrator.state import CommandRecord, State, VpcView, view_of
from vpcq.orchestrator.topology import (
    Rules,
    Sysctl,
    Topology,
    changed_namespaces,
    narrow,
    plan,
)
from vpcq.workers.cache import LogCache
from vpcq.workers.kernel.adapter import Kernel, Scope, batch_end
from vpcq.workers.locks import Lease, Locks

log = structlog.get_logger("vpcq.engine")
_REPAIR = CommandRecord(id="repair", kind="repair", seq=0, last_seq=0, vpcs=())


def _nothing() -> None:
    pass


class NotReady(Exception):
    """An earlier pending command on another VPC must be applied first."""


class DeleteIncomplete(VpcqError):
    """A deletion left something in the kernel; its job tries again later."""

    def __init__(self, commands: Sequence[str], left: Sequence[str], error: str | None) -> None:
        what = f"{len(left)} object(s) left" + (f", e.g. {left[0]}" if left else "")
        super().__init__(f"deleting {', '.join(commands)}: {what}" + (f" ({error})" if error else ""))
        self.left = list(left)
        self.error = error


@dataclass(frozen=True)
class Fault:
    """Fault injection for tests: VPCQ_FAULT=step:N (the Nth step of an apply, from 0) or
    VPCQ_FAULT=kind:Bridge (every step on that kind of resource), optionally :create etc.
    A `hold:` in front (`hold:step:1`) makes that step wait, instead of fail, for as long as
    the spec stays the same: a test can stop a worker in the middle of a change.
    VPCQ_FAULT_FILE=path reads the same spec from a file before every apply, so a test can
    move the fault from step to step without restarting the worker."""

    index: int | None = None
    kind: str | None = None
    op: str | None = None
    hold: bool = False

    @classmethod
    def from_env(cls) -> Fault | None:
        spec = os.environ.get("VPCQ_FAULT", "")
        path = os.environ.get("VPCQ_FAULT_FILE")
        if path:
            try:
                with open(path) as f:
                    spec = f.read().strip()
            except FileNotFoundError:
                spec = ""
        return cls.parse(spec) if spec else None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        hold = spec.startswith("hold:")
        what, _, rest = spec.removeprefix("hold:").partition(":")
        arg, _, op = rest.partition(":")
        if what == "step" and arg.isdigit():
            return cls(index=int(arg), hold=hold)
        if what == "kind" and arg:
            return cls(kind=arg, op=op or None, hold=hold)
        raise ValueError(f"VPCQ_FAULT={spec!r}: expected [hold:]step:N or [hold:]kind:Name[:op]")

    def matches(self, i: int, step: Step) -> bool:
        return (
            (self.index is None or i == self.index)
            and (self.kind is None or type(step.resource).__name__ == self.kind)
            and (self.op is None or step.op == self.op)
        )

    async def check(self, i: int, step: Step) -> None:
        if not self.matches(i, step):
            return
        if not self.hold:
            raise KernelError("inject", step.describe(), "injected fault (VPCQ_FAULT)")
        log.info("holding at a step (VPCQ_FAULT)", n=i, step=step.describe())
        while Fault.from_env() == self:
            await asyncio.sleep(0.02)


class Engine:
    def __init__(
        self,
        store: EventStore,
        queue: JobQueue,
        locks: Locks,
        kernel: Kernel,
        name: str = "worker",
        host: str = DEFAULT_HOST,
    ) -> None:
        self.host = host  # this machine's VPCs are the ones placed on this host
        self.store = store
        self.queue = queue
        self.locks = locks
        self.kernel = kernel
        self.observed = Observed(store.redis)
        self.cache = LogCache(store)
        self.actor = f"{name}@{socket.gethostname()}"
        self._one_at_a_time: set[str] = set()
        self._inet: str | None = None
        self._inet_known = False
        self._plans: deque[tuple[tuple[dict[str, VpcView], str | None], Topology]] = deque(maxlen=8)

    async def internet_if(self) -> str | None:
        if not self._inet_known:
            self._inet = await self.kernel.default_internet_if()
            self._inet_known = True
        return self._inet

    # ---- the job ---------------------------------------------------------------------------

    async def reconcile(self, vpc: str, repair: bool = False, attempt: int = 1) -> int:
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
            host = self.cache.command_host(pending[0], vpc)
            if host != self.host:
                # its next command is another host's (the VPC is made again there, or still
                # to be deleted there): that host's workers apply it, and wake this one after
                await self.queue.reconcile([(vpc, host)], state.seq)
                return settled
            group = self._group(state, pending, vpc)
            names = sorted({v for c in group for v in c.vpcs})
            async with self.locks.hold(names) as lease:
                state = await self.cache.refresh()
                if any(c.id not in state.commands for c in group):
                    continue  # another worker got there first (a finished one has left it)
                n = await self._apply(state, group, names, lease, attempt)
            settled += n
            await self._wake_followers(names, {c.id for c in group} if n else set())
        return settled

    def _group(
        self, state: State, pending: list[CommandRecord], vpc: str
    ) -> list[CommandRecord]:
        first = pending[0]
        earlier = [state.commands[i] for i in state.pending]
        for c in earlier:
            if c.seq >= first.seq:
                break
            if set(c.vpcs) & set(first.vpcs):
                raise NotReady(c.id)
        if first.vpcs != (vpc,) or vpc in self._one_at_a_time:
            return [first]
        group = []
        for c in pending:
            if c.vpcs != (vpc,) or self.cache.command_host(c, vpc) != self.host:
                break
            group.append(c)
        return group

    async def _wake_followers(self, names: Sequence[str], settled: set[str]) -> None:
        """Queue the VPCs whose next pending command was waiting on these. The cache was
        read before the outcome of the `settled` commands was appended, so they still look
        pending there: counted, they queued a second job for every VPC of a batch."""
        state = self.cache.state
        wake: set[str] = set()
        for cid in state.pending:
            c = state.commands[cid]
            if cid not in settled and set(c.vpcs) & set(names):
                wake.update(c.vpcs)
        if wake:
            await self.queue.reconcile(self.cache.next_jobs(state, wake, settled), state.seq)

    # ---- drift --------------------------------------------------------------------------

    async def drift(self, names: Sequence[str] = (), at: int | None = None) -> list[Step]:
        """Every step that would bring the kernel to the log's state (now, or right after
        event `at`); nothing is applied."""
        desired, scope = await self._target(names, at)
        actual = await self.kernel.observe(scope, desired, all_rules=True)
        return diff(desired, actual)

    async def repair(self, names: Sequence[str] = ()) -> list[Step]:
        """Bring VPCs back to the log's current state (after a reboot, a hand edit) in one
        converge (so peered routers come up before their peering), and record what was done
        in the log. VPCs with pending commands are left to their jobs. Returns the steps
        taken; raises KernelError naming what could not be repaired."""
        state = await self.cache.refresh()
        names = [v for v in self._mine(names) if not state.pending_for(v)]
        if not names:
            return []
        async with self.locks.hold(names) as lease:
            desired, scope = await self._target(names, None)
            actual = await self.kernel.observe(scope, desired, all_rules=True)
            steps = fuse(diff(desired, actual))
            # go on after an error: later steps may not depend on it
            errors = await self._run(steps, lease, None, keep_going=True)
            if steps:
                lines = tuple(s.describe() for s in steps[:100])
                touched = tuple(sorted({v for v in names}))
                envs = self._envelopes([(_REPAIR.id, DriftRepaired(vpcs=touched, steps=lines))], _REPAIR)
                await self.store.append(envs, expected_version=None, fence=lease)
                log.info("drift repaired", vpcs=touched, steps=len(steps), errors=errors)
        if errors:
            what = ",".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise KernelError("repair", what, "; ".join(errors[:3]), transient=True)
        return steps

    def _mine(self, names: Sequence[str]) -> list[str]:
        """`names`, or every VPC the log has named on this host; a VPC of another host is
        an error (its kernel objects are on that host)."""
        for v in names:
            if self.cache.last_view(v).vpc is not None and self.cache.host_of(v) != self.host:
                raise DomainError("vpc", f"{v} is on host {self.cache.host_of(v)}, not on this "
                                         f"one ({self.host}): run it there")
        return list(names) or [v for v in self.cache.known() if self.cache.host_of(v) == self.host]

    async def _target(self, names: Sequence[str], at: int | None) -> tuple[Topology, Scope]:
        state = await self.cache.refresh()
        names = self._mine(names)
        inet = await self.internet_if()
        if at is None:
            views = {v: view_of(state, v) for v in names}
        else:
            views = {v: self.cache.view_at(v, at) for v in names}
        desired = plan(views, inet)
        scope = Scope()
        scope.add(desired)
        scope.add(plan({v: view_of(state, v) for v in names}, inet))
        scope.add(plan({v: self.cache.last_view(v) for v in names}, inet))
        return desired, scope

    # ---- apply, or fail and undo ------------------------------------------------------------

    def _views(self, names: Sequence[str], seq: int) -> dict[str, VpcView]:
        return {v: self.cache.view_at(v, seq) for v in names}

    def _plan(self, views: dict[str, VpcView], inet: str | None) -> Topology:
        """`plan`, remembered for the last few view sets: one job's target is usually the
        next job's `before`, and `now` is the target when nothing else is pending. Views are
        compared by value (a VPC's view is a new object after every event that names it)."""
        for (seen, seen_inet), topology in self._plans:
            if seen_inet == inet and seen == views:
                return topology  # shared: plans are never modified (narrow makes new ones)
        topology = plan(views, inet)
        self._plans.appendleft(((views, inet), topology))
        return topology

    async def _apply(self, state: State, group: list[CommandRecord], names: list[str],
                     lease: Lease, attempt: int = 1) -> int:
        inet = await self.internet_if()
        target = self._plan(self._views(names, group[-1].last_seq), inet)
        before = self._plan(self._views(names, group[0].seq - 1), inet)
        now = self._plan({v: view_of(state, v) for v in names}, inet)
        # look only where the change is: a new subnet does not need every other namespace of
        # its VPC dumped (drift elsewhere is what `repair` is for)
        where = changed_namespaces(before, target, now)
        target, before, now = (narrow(t, where) for t in (target, before, now))
        scope = Scope()
        for t in (target, before, now):
            scope.add(t)
        scope.trusted = {k for k, r in target.items() if isinstance(r, Rules | Sysctl)
                         and before.get(k) == r and now.get(k) == r}
        bound = log.bind(vpcs=names, commands=[c.id for c in group])
        deleting = [c.id for c in group if is_deletion(c.kind)]
        try:
            steps = await self._converge(scope, target, inject=True, where=where, lease=lease)
            if deleting:  # applied only once checked: nothing of what it removes is left
                left = await self._left(scope, target, where)
                if left:
                    raise DeleteIncomplete(deleting, left, None)
        except LockLost:
            raise  # another worker may be applying this now: touch nothing more
        except Exception as e:
            if not isinstance(e, KernelError | DeleteIncomplete):
                bound.exception("unexpected error while applying")
                e = KernelError("apply", ",".join(names), f"internal error: {type(e).__name__}: {e}")
            if len(group) > 1:
                bound.info("group failed; applying one at a time", error=str(e))
                self._one_at_a_time.update(names)
                return 0
            if deleting:
                await self._still_deleting(group[0], scope, target, where, e, attempt, lease)
            lease.check()
            undo_errors = await self._undo(scope, before, where, lease)
            bound.warning("change failed", error=str(e), undo_errors=undo_errors)
            await self._record_failure(group[0], str(e), undo_errors, lease)
            self._one_at_a_time.difference_update(names)
            return 1
        self._one_at_a_time.difference_update(names)
        bound.info("applied", steps=steps)  # before its record: whoever sees that can read this
        outcomes = [ChangeApplied(command_id=c.id, vpcs=c.vpcs, steps=steps if i == 0 else 0)
                    for i, c in enumerate(group)]
        await self.store.append(self._envelopes([(c.command_id, c) for c in outcomes], group[0]),
                                expected_version=None, fence=lease)
        if deleting:
            await self.observed.clear_deleting(deleting)
        return len(group)

    async def _left(self, scope: Scope, target: Topology, where: set[str]) -> list[str]:
        """What the kernel still holds that `target` does not want, one line each."""
        actual = narrow(await self.kernel.observe(scope, target), where)
        return [s.describe() for s in diff(target, actual)]

    async def _still_deleting(self, cmd: CommandRecord, scope: Scope, target: Topology,
                              where: set[str], error: Exception, attempt: int,
                              lease: Lease) -> None:
        """Record how far a deletion got and why it stopped, then raise DeleteIncomplete: its
        job tries again later. Nothing is undone."""
        if isinstance(error, DeleteIncomplete):
            left, reason = error.left, None
        else:
            reason = str(error)
            try:
                left = await self._left(scope, target, where)
            except KernelError as e:
                left = [f"(could not look: {e})"]
        lease.check()
        await self.observed.set_deleting([cmd.id], left, reason, attempt, utc_now())
        log.warning("deletion incomplete, trying again later", command=cmd.id, left=len(left),
                    error=reason, attempt=attempt)
        raise DeleteIncomplete([cmd.id], left, reason)

    async def _converge(
        self, scope: Scope, desired: Topology, inject: bool, where: set[str] | None = None,
        lease: Lease | None = None,
    ) -> int:
        t0 = time.perf_counter()
        actual = await self.kernel.observe(scope, desired)
        if where is not None:
            actual = narrow(actual, where)  # what lies outside the change is not its business
        steps = fuse(diff(desired, actual))
        t1 = time.perf_counter()
        spent: dict[str, float] = {}
        await self._run(steps, lease, Fault.from_env() if inject else None, spent=spent)
        log.info("converged", steps=len(steps), observe_ms=round((t1 - t0) * 1000, 1),
                 apply_ms={k: round(v * 1000, 1) for k, v in sorted(spent.items())})
        return len(steps)

    async def _run(self, steps: list[Step], lease: Lease | None, fault: Fault | None,
                   keep_going: bool = False, spent: dict[str, float] | None = None) -> list[str]:
        """Apply steps in order, checking the lease before each; with `keep_going`, an error
        is collected (returned) and the next run of steps tried, else it is raised. `spent`
        gets the seconds spent per kind of object (of the first step of each run)."""
        debug = log.isEnabledFor(logging.DEBUG)  # a line per step is only made when wanted

        async def before(n: int, step: Step) -> None:
            if fault is not None:
                await fault.check(n, step)
            if debug:
                log.debug("step", n=n, step=step.describe())

        guard = lease.check if lease is not None else _nothing
        errors: list[str] = []
        i = 0
        while i < len(steps):
            end = batch_end(steps, i)
            s0 = time.perf_counter()
            try:
                await self.kernel.apply_batch(steps[i:end], i, guard,
                                              before if fault is not None or debug else None)
            except KernelError as e:
                if not keep_going:
                    raise
                errors.append(str(e))
            if spent is not None:
                kinds = {type(s.resource).__name__ for s in steps[i:end]}
                kind = kinds.pop() if len(kinds) == 1 else "links"
                spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - s0
            i = end
            # a run may not have waited at all: let the lease be renewed between runs
            await asyncio.sleep(0)
        return errors

    async def _undo(self, scope: Scope, before: Topology, where: set[str],
                    lease: Lease) -> tuple[str, ...]:
        """Bring the kernel back to `before`; errors are returned, never swallowed."""
        errors: list[str] = []
        for _ in range(2):
            try:
                await self._converge(scope, before, inject=False, where=where, lease=lease)
                return tuple(errors)
            except LockLost:
                raise
            except Exception as e:  # recorded in the outcome, never swallowed
                errors.append(str(e))
        return tuple(errors)

    async def _record_failure(
        self, failed: CommandRecord, reason: str, undo_errors: tuple[str, ...], lease: Lease
    ) -> None:
        for _ in range(50):
            state = await self.cache.refresh()
            if failed.id not in state.commands:  # finished meanwhile
                return
            events = fail(state, self.cache.view_at, failed, reason, undo_errors)
            envs = self._envelopes(events, failed)
            try:
                await self.store.append(envs, expected_version=state.seq, fence=lease)
            except ConcurrencyError:
                continue
            touched = sorted({v for _cid, e in events for v in e.aggregates()})
            await self.queue.reconcile(self.cache.next_jobs(state, touched, {failed.id}),
                                       state.seq + len(envs))
            return
        raise ConcurrencyError(-1, -1)

    def _envelopes(self, events: Sequence[tuple[str, object]], cmd: CommandRecord) -> list[Envelope]:
        """Envelopes for (command id, event) pairs; the store numbers them."""
        now = utc_now()
        return [
            Envelope(command_id=cid, correlation_id=cmd.correlation_id, actor=self.actor,
                     time=now, event=ev)
            for cid, ev in events
        ]
