"""Upcasters: stored events are never edited; old schema versions are lifted on read.

An upcaster takes the JSON dict of an event at version N and returns it at version N + 1.
Register one per step as `UPCASTERS[(type, N)]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vpcq.events.schema import SCHEMA_VERSIONS

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcast_event(event: dict[str, Any], version: int) -> dict[str, Any]:
    """Lift one event dict stored at `version` to today's schema, one step at a time."""
    kind = event["type"]
    current = SCHEMA_VERSIONS.get(kind) if isinstance(kind, str) else None
    if current is None:
        raise ValueError(f"unknown event type {kind!r}"[:120])
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= current:
        raise ValueError(f"{kind} at schema version {version!r}, which this vpcq does not know "
                         f"(0 to {current})"[:160])
    while version < current:
        step = UPCASTERS.get((kind, version))
        if step is None:
            raise ValueError(f"no upcaster for {kind} v{version} -> v{version + 1}")
        event = step(event)
        version += 1
    return event


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Lift an envelope dict (the log's first layout) whose event is older than today's."""
    event = raw["event"]
    return {**raw, "event": upcast_event(event, raw.get("schema_version", 1)),
            "schema_version": SCHEMA_VERSIONS[event["type"]]}
