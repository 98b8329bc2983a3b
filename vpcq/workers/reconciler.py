"""The reconcile step: bring the kernel to a target the log gives, and record the outcome.

One mechanism for every use: applying commands (target: the state after them), undoing a
failed change (target: the state before it), repairing drift and restoring after a reboot
(target: the state now). It plans the target, observes the kernel, diffs, and applies the
steps through the kernel's drivers, checking its lease before each.

A failed change is undone and recorded failed, with the restore (the log is never
rewritten). A deletion goes forward instead: it is not undone, it is tried again until the
kernel holds none of what it removes, and it is recorded applied only once that is checked;
meanwhile its progress is observed state (`Observed`), shown by `vpcq status` and `list`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from vpcq.errors import ConcurrencyError, KernelError, LockLost, VpcqError
from vpcq.events.observed import Observed
from vpcq.events.schema import ChangeApplied, DriftRepaired, Envelope
from vpcq.events.store import EventStore
from vpcq.orchestrator.decide import is_deletion
from vpcq.orchestrator.diff import Step, diff, fuse
from vpcq.orchestrator.failure import fail
from vpcq.orchestrator.service import utc_now
from vpcq.orchestrator.state import CommandRecord, State, VpcView, view_of
from vpcq.orchestrator.topology import Rules, Sysctl, Topology, changed_namespaces, narrow, plan
from vpcq.workers.cache import LogCache
from vpcq.workers.faults import Fault, Faults
from vpcq.workers.kernel.driver import Scope
from vpcq.workers.kernel.kernel import Kernel
from vpcq.workers.locks import Lease

log = structlog.get_logger("vpcq.reconciler")
Views = Mapping[str, VpcView]


class DeleteIncomplete(VpcqError):
    """A deletion left something in the kernel; its job tries again later."""

    def __init__(self, commands: Sequence[str], left: Sequence[str], error: str | None) -> None:
        what = f"{len(left)} object(s) left" + (f", e.g. {left[0]}" if left else "")
        super().__init__(f"deleting {', '.join(commands)}: {what}" + (f" ({error})" if error else ""))
        self.left = list(left)
        self.error = error


@dataclass(frozen=True)
class Outcome:
    """What applying a group of commands settled, and which VPCs the outcome touched."""

    settled: frozenset[str]  # the command ids with an outcome now (none: try one at a time)
    touched: frozenset[str]  # VPCs whose pending commands may have been waiting for these


class Reconciler:
    def __init__(self, store: EventStore, kernel: Kernel, cache: LogCache, actor: str,
                 faults: Faults | None = None) -> None:
        self.store = store
        self.kernel = kernel
        self.cache = cache
        self.actor = actor
        self.faults = faults or Faults()
        self.observed = Observed(store.redis)
        self._inet: str | None = None
        self._inet_known = False
        self._plans: deque[tuple[tuple[Views, str | None], Topology]] = deque(maxlen=8)

    async def internet_if(self) -> str | None:
        """$VPCQ_UPLINK, else the interface of the host's default route (looked up once)."""
        if not self._inet_known:
            self._inet = os.environ.get("VPCQ_UPLINK") or await self.kernel.default_internet_if()
            self._inet_known = True
        return self._inet

    def plan(self, views: Views, inet: str | None) -> Topology:
        """`plan`, remembered for the last few view sets: one job's target is usually the
        next job's `before`, and `now` is the target when nothing else is pending. Views are
        compared by value (a VPC's view is a new object after every event that names it)."""
        for (seen, seen_inet), topology in self._plans:
            if seen_inet == inet and seen == views:
                return topology  # shared: plans are never modified (narrow makes new ones)
        topology = plan(views, inet)
        self._plans.appendleft(((dict(views), inet), topology))
        return topology

    # ---- commands ----------------------------------------------------------------------------

    async def apply(self, state: State, group: list[CommandRecord], lease: Lease,
                    attempt: int = 1) -> Outcome:
        """Apply a group of pending commands (consecutive, on the same VPCs) and record the
        outcome. A group that fails settles nothing: its commands are then applied one at a
        time, so that the failing one is the one recorded."""
        names = sorted({v for c in group for v in c.vpcs})
        inet = await self.internet_if()
        target = self.plan({v: self.cache.view_at(v, group[-1].last_seq) for v in names}, inet)
        before = self.plan({v: self.cache.view_at(v, group[0].seq - 1) for v in names}, inet)
        now = self.plan({v: view_of(state, v) for v in names}, inet)
        # look only where the change is: a new subnet does not need every other namespace of
        # its VPC dumped (drift elsewhere is what `repair` is for)
        where = changed_namespaces(before, target, now)
        target, before, now = (narrow(t, where) for t in (target, before, now))
        scope = Scope.of(target, before, now, trusted=[
            k for k, r in target.items()
            if isinstance(r, Rules | Sysctl) and before.get(k) == r and now.get(k) == r])
        bound = log.bind(vpcs=names, commands=[c.id for c in group])
        deleting = [c.id for c in group if is_deletion(c.kind)]
        try:
            steps = await self.converge(scope, target, where, lease, inject=True)
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
                return Outcome(frozenset(), frozenset())
            if deleting:
                await self._still_deleting(group[0], scope, target, where, e, attempt, lease)
            lease.check()
            undo_errors = await self._undo(scope, before, where, lease)
            bound.warning("change failed", error=str(e), undo_errors=undo_errors)
            touched = await self._record_failure(group[0], str(e), undo_errors, lease)
            return Outcome(frozenset({group[0].id}), frozenset(touched))
        bound.info("applied", steps=steps)  # before its record: whoever sees that can read this
        outcomes = [ChangeApplied(command_id=c.id, vpcs=c.vpcs, steps=steps if i == 0 else 0)
                    for i, c in enumerate(group)]
        await self.store.append(self._envelopes([(c.command_id, c) for c in outcomes], group[0]),
                                expected_version=None, fence=lease)
        if deleting:
            await self.observed.clear_deleting(deleting)
        return Outcome(frozenset(c.id for c in group), frozenset(names))

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

    async def _undo(self, scope: Scope, before: Topology, where: set[str],
                    lease: Lease) -> tuple[str, ...]:
        """Bring the kernel back to `before`; errors are returned, never swallowed."""
        errors: list[str] = []
        for _ in range(2):
            try:
                await self.converge(scope, before, where, lease)
                return tuple(errors)
            except LockLost:
                raise
            except Exception as e:  # recorded in the outcome, never swallowed
                errors.append(str(e))
        return tuple(errors)

    async def _record_failure(self, failed: CommandRecord, reason: str,
                              undo_errors: tuple[str, ...], lease: Lease) -> set[str]:
        """Append the failure (the restore, what it cancels, what it decides again); the
        VPCs it touched."""
        for _ in range(50):
            state = await self.cache.refresh()
            if failed.id not in state.commands:  # finished meanwhile
                return set()
            events = fail(state, self.cache.view_at, failed, reason, undo_errors)
            try:
                await self.store.append(self._envelopes(events, failed), expected_version=state.seq,
                                        fence=lease)
            except ConcurrencyError:
                continue
            return {v for _cid, e in events for v in e.aggregates()}
        raise ConcurrencyError(-1, -1)

    # ---- drift -----------------------------------------------------------------------------

    async def drift(self, desired: Views, also: Sequence[Views], all_rules: bool = True) -> list[Step]:
        """Every step that would bring the kernel to `desired`; nothing is applied. `also`:
        other views of the same VPCs, whose objects may be in the kernel too. Without
        `all_rules`, only the rule tables vpcq fills are read (as a change reads them)."""
        target, scope = await self._scope(desired, also)
        return diff(target, await self.kernel.observe(scope, target, all_rules=all_rules))

    async def repair(self, desired: Views, also: Sequence[Views], lease: Lease) -> list[Step]:
        """Bring the kernel to `desired` in one converge (so peered routers come up before
        their peering) and record what was done in the log. Goes on after a failed step
        (later ones may not depend on it); raises KernelError naming what failed."""
        target, scope = await self._scope(desired, also)
        steps = fuse(diff(target, await self.kernel.observe(scope, target, all_rules=True)))
        errors = await self.run(steps, lease, None, keep_going=True)
        if steps:
            lines = tuple(s.describe() for s in steps[:100])
            touched = tuple(sorted(desired))
            repair = CommandRecord(id="repair", kind="repair", seq=0, last_seq=0, vpcs=touched)
            await self.store.append(self._envelopes(
                [(repair.id, DriftRepaired(vpcs=touched, steps=lines))], repair),
                expected_version=None, fence=lease)
            log.info("drift repaired", vpcs=touched, steps=len(steps), errors=errors)
        if errors:
            names = list(desired)
            what = ",".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise KernelError("repair", what, "; ".join(errors[:3]), transient=True)
        return steps

    async def _scope(self, desired: Views, also: Sequence[Views]) -> tuple[Topology, Scope]:
        inet = await self.internet_if()
        target = plan(desired, inet)
        return target, Scope.of(target, *(plan(v, inet) for v in also))

    # ---- steps -----------------------------------------------------------------------------

    async def converge(self, scope: Scope, desired: Topology, where: set[str] | None,
                       lease: Lease | None, inject: bool = False) -> int:
        """Observe, diff and apply: the kernel as `desired` (within `where`); the steps taken."""
        t0 = time.perf_counter()
        actual = await self.kernel.observe(scope, desired)
        if where is not None:
            actual = narrow(actual, where)  # what lies outside the change is not its business
        steps = fuse(diff(desired, actual))
        t1 = time.perf_counter()
        spent: dict[str, float] = {}
        await self.run(steps, lease, self.faults.current() if inject else None, spent=spent)
        log.info("converged", steps=len(steps), observe_ms=round((t1 - t0) * 1000, 1),
                 apply_ms={k: round(v * 1000, 1) for k, v in sorted(spent.items())})
        return len(steps)

    async def run(self, steps: list[Step], lease: Lease | None, fault: Fault | None,
                  keep_going: bool = False, spent: dict[str, float] | None = None) -> list[str]:
        """Apply steps in order, a run at a time (see Kernel.batch_end), checking the lease
        before each; with `keep_going`, an error is collected (returned) and the next run
        tried, else it is raised. `spent` gets the seconds spent per kind of object."""
        debug = log.isEnabledFor(logging.DEBUG)  # a line per step is only made when wanted

        async def before(n: int, step: Step) -> None:
            if fault is not None:
                await self.faults.check(fault, n, step)
            if debug:
                log.debug("step", n=n, step=step.describe())

        guard = lease.check if lease is not None else _nothing
        errors: list[str] = []
        i = 0
        while i < len(steps):
            end = self.kernel.batch_end(steps, i)
            s0 = time.perf_counter()
            try:
                await self.kernel.apply(steps[i:end], i, guard,
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

    def _envelopes(self, events: Sequence[tuple[str, object]], cmd: CommandRecord) -> list[Envelope]:
        """Envelopes for (command id, event) pairs; the store numbers them."""
        now = utc_now()
        return [
            Envelope(command_id=cid, correlation_id=cmd.correlation_id, actor=self.actor,
                     time=now, event=ev)
            for cid, ev in events
        ]


def _nothing() -> None:
    pass
