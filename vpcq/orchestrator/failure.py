"""What the log says when a change cannot be applied: pure."""

from __future__ import annotations

from collections.abc import Callable

from vpcq.errors import DomainError
from vpcq.events.commands import parse_command
from vpcq.events.schema import ChangeFailed, CommandAccepted, CommandRedecided, VpcRestored
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import DomainEvent, Folder
from vpcq.orchestrator.genesis import genesis_of
from vpcq.orchestrator.state import CommandRecord, State, VpcView, is_deletion

ViewAt = Callable[[str, int], VpcView]
FailureEvent = ChangeFailed | VpcRestored | CommandRedecided | DomainEvent


def fail(
    state: State,
    view_at: ViewAt,
    failed: CommandRecord,
    reason: str,
    undo_errors: tuple[str, ...] = (),
) -> list[tuple[str, FailureEvent]]:
    """Events (each with the id of the command it belongs to) that record `failed` and
    remove it from the desired state.

    Every later pending change on the same VPCs was decided on top of the failed one, so it
    is cancelled too (and the VPCs it touches join the set to restore). Each affected VPC is
    restored to how it was just before the first cancelled command that touched it. A later
    deletion is not cancelled: it is decided again on the restored state and stays pending,
    so what the user removed is removed all the same.
    """
    restore_to: dict[str, int] = {v: failed.seq - 1 for v in failed.vpcs}
    cancelled: list[CommandRecord] = []
    kept: list[CommandRecord] = []
    changed = True
    while changed:
        changed = False
        for cid in state.pending:
            c = state.commands[cid]
            if c.seq <= failed.seq or c in cancelled or c in kept:
                continue
            if restore_to.keys() & set(c.vpcs):
                if is_deletion(c.kind):
                    kept.append(c)
                    continue
                cancelled.append(c)
                for v in c.vpcs:
                    if v not in restore_to:
                        restore_to[v] = c.seq - 1
                        changed = True
    out: list[tuple[str, FailureEvent]] = [(failed.id, ChangeFailed(
        command_id=failed.id, vpcs=failed.vpcs, reason=reason, undo_errors=undo_errors))]
    for c in sorted(cancelled, key=lambda c: c.seq):
        out.append((c.id, ChangeFailed(
            command_id=c.id, vpcs=c.vpcs,
            reason=f"cancelled: it depends on {failed.kind} {failed.id}, which failed",
            caused_by=failed.id,
        )))  # fmt: skip
    live = set(state.vpcs) | set(restore_to)
    for vpc in sorted(restore_to):
        seq = restore_to[vpc]
        out.append((failed.id, VpcRestored(
            vpc=vpc, to_seq=seq, reason=f"{failed.kind} {failed.id} failed",
            genesis=tuple(genesis_of(view_at(vpc, seq), live)),
        )))  # fmt: skip
    return out + _redecide(state, out, sorted(kept, key=lambda c: c.seq))


def _redecide(
    state: State, so_far: list[tuple[str, FailureEvent]], deletions: list[CommandRecord]
) -> list[tuple[str, FailureEvent]]:
    """Each deletion decided again on the state the failure leaves, in log order; it keeps
    to the VPCs it touched at first (a cleanup deletes what it deleted then, not a VPC made
    after it). One that finds nothing left to remove decides no event, and its job records
    it applied once the kernel agrees."""
    f = Folder(state)
    for cid, ev in so_far:
        f.event(ev, cid)
    out: list[tuple[str, FailureEvent]] = []
    for d in deletions:
        try:
            decided = decide(parse_command({"kind": d.kind, **d.args}), f.build())
        except DomainError:
            decided = []  # e.g. the subnet it deletes was made by a cancelled command
        events = [e for e in decided if not isinstance(e, CommandAccepted)
                  and set(e.aggregates()) <= set(d.vpcs)]
        redecided = CommandRedecided(kind=d.kind, vpcs=d.vpcs, events=len(events))
        for ev in (redecided, *events):
            out.append((d.id, ev))
            f.event(ev, d.id)
    return out
