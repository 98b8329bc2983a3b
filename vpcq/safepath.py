"""Paths made from names: a name is one component, and the path stays in its directory."""

from __future__ import annotations

import os


def component(name: str) -> str:
    """`name` if it is one safe path component (not empty, `.` or `..`; no `/`, NUL, newline
    or other control character); else ValueError naming it."""
    if (not name or name in (".", "..") or "/" in name or len(name) > 255
            or not name.isprintable()):
        raise ValueError(f"{name!r} is not a name for a file"[:120])
    return name


def under(directory: str, name: str) -> str:
    """`directory`/`name`, checked to stay in `directory` (names come from the log: a name
    vpcq did not make must not reach another directory through it)."""
    path = os.path.join(directory, component(name))
    if os.path.dirname(path) != directory.rstrip("/"):
        raise ValueError(f"{name!r} leaves {directory}"[:120])  # pragma: no cover - component
    return path
