"""What the log says when a change cannot be applied: pure."""

from __future__ import annotations

from collections.abc import Callable

from vpcq.events.schema import ChangeFailed, VpcRestored
from vpcq.orchestrator.genesis import genesis_of
from vpcq.orchestrator.state import CommandRecord, State, VpcView

ViewAt = Callable[[str, int], VpcView]


def fail(
    state: State,
    view_at: ViewAt,
    failed: CommandRecord,
    reason: str,
    undo_errors: tuple[str, ...] = (),
) -> list[ChangeFailed | VpcRestored]:
    """Events that record `failed` and remove it from the desired state.

    Every later pending command on the same VPCs was decided on top of the failed one, so
    it is cancelled too (and the VPCs it touches join the set to restore). Each affected
    VPC is restored to how it was just before the first cancelled command that touched it.
    """
    restore_to: dict[str, int] = {v: failed.seq - 1 for v in failed.vpcs}
    cancelled: list[CommandRecord] = []
    changed = True
    while changed:
        changed = False
        for cid in state.pending:
            c = state.commands[cid]
            if c.seq <= failed.seq or c in cancelled:
                continue
            if restore_to.keys() & set(c.vpcs):
                cancelled.append(c)
                for v in c.vpcs:
                    if v not in restore_to:
                        restore_to[v] = c.seq - 1
                        changed = True
    events: list[ChangeFailed | VpcRestored] = [
        ChangeFailed(
            command_id=failed.id, vpcs=failed.vpcs, reason=reason, undo_errors=undo_errors
        )
    ]
    for c in sorted(cancelled, key=lambda c: c.seq):
        events.append(
            ChangeFailed(
                command_id=c.id,
                vpcs=c.vpcs,
                reason=f"cancelled: it depends on {failed.kind} {failed.id}, which failed",
                caused_by=failed.id,
            )
        )
    live = set(state.vpcs) | set(restore_to)
    for vpc in sorted(restore_to):
        seq = restore_to[vpc]
        view = view_at(vpc, seq)
        events.append(
            VpcRestored(
                vpc=vpc,
                to_seq=seq,
                reason=f"{failed.kind} {failed.id} failed",
                genesis=tuple(genesis_of(view, live)),
            )
        )
    return events
