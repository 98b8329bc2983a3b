"""Snapshots: a cache of the folded state (JSON), never a source of truth."""

from __future__ import annotations

from functools import cache

from pydantic import TypeAdapter

from vpcq.orchestrator.state import State


@cache
def _adapter() -> TypeAdapter[State]:
    """Built on first use: a command that reads no snapshot does not pay for its validator."""
    return TypeAdapter(State)


def dump_state(state: State) -> bytes:
    """Serialize a state to JSON."""
    return _adapter().dump_json(state)


def load_state(data: bytes) -> State:
    """Rebuild a state from `dump_state`'s JSON."""
    return _adapter().validate_json(data)
