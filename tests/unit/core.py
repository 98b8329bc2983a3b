"""given/when/then on the pure core: no Redis, no kernel."""

from __future__ import annotations

from typing import Any

import pytest

from vpcq.errors import DomainError
from vpcq.events.commands import Command, parse_command
from vpcq.events.schema import ChangeApplied, Envelope
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import fold
from vpcq.orchestrator.state import INITIAL, State


def cmd(kind: str, **args: Any) -> Command:
    return parse_command({"kind": kind, **args})


def envelopes(state: State, events: list[Any], command_id: str) -> list[Envelope]:
    return [
        Envelope(seq=state.seq + 1 + i, command_id=command_id, correlation_id="c",
                 actor="t@h", time="2026-01-01T00:00:00Z", event=ev)
        for i, ev in enumerate(events)
    ]  # fmt: skip


def pairs_envelopes(state: State, pairs: list[tuple[str, Any]]) -> list[Envelope]:
    """Envelopes for (command id, event) pairs, as a worker appends a failure."""
    return [
        Envelope(seq=state.seq + 1 + i, command_id=cid, correlation_id="c", actor="w@h",
                 time="2026-01-01T00:00:00Z", event=ev)
        for i, (cid, ev) in enumerate(pairs)
    ]  # fmt: skip


def apply(state: State, command: Command, command_id: str = "", applied: bool = True) -> State:
    """Decide and fold one command (and, by default, a worker's ChangeApplied)."""
    cid = command_id or f"c{state.seq}"
    state = fold(state, envelopes(state, decide(command, state), cid))
    if applied:
        rec = state.commands[cid]
        state = fold(state, envelopes(state, [ChangeApplied(command_id=cid, vpcs=rec.vpcs)], cid))
    return state


def given(*commands: Command) -> State:
    state = INITIAL
    for c in commands:
        state = apply(state, c)
    return state


def rejected(state: State, command: Command, field: str, fragment: str) -> None:
    with pytest.raises(DomainError) as e:
        decide(command, state)
    assert e.value.field == field, e.value
    assert fragment in e.value.reason, e.value
