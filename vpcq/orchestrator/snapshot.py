"""Snapshots: a cache of the folded state (JSON), never a source of truth."""

from __future__ import annotations

import json
from functools import cache

from pydantic import TypeAdapter

from vpcq.events.types import hidden_text, plain_json, show
from vpcq.orchestrator.state import State


@cache
def _adapter() -> TypeAdapter[State]:
    """Built on first use: a command that reads no snapshot does not pay for its validator."""
    return TypeAdapter(State)


def dump_state(state: State) -> bytes:
    """Serialize a state to JSON."""
    return _adapter().dump_json(state)


def load_state(data: bytes) -> State:
    """Rebuild a state from `dump_state`'s JSON, checked as the log is (its fields have the
    events' types, and its shown strings no hidden character); ValueError if it is not."""
    if not plain_json(data):
        hidden = hidden_text(json.loads(data))
        if hidden is not None:
            raise ValueError(f"{show(hidden)} holds a control or format character")
    return _adapter().validate_json(data)
