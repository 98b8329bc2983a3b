"""Snapshots: a cache of the folded state (JSON), never a source of truth."""

from __future__ import annotations

from pydantic import TypeAdapter

from vpcq.orchestrator.state import State

_STATE: TypeAdapter[State] = TypeAdapter(State)


def dump_state(state: State) -> bytes:
    """Serialize a state to JSON."""
    return _STATE.dump_json(state)


def load_state(data: bytes) -> State:
    """Rebuild a state from `dump_state`'s JSON."""
    return _STATE.validate_json(data)
