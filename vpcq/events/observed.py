"""Observed state: what workers see of the kernel and the log does not hold.

A deletion's progress (what is left, the last error), drift, and later the health of
load-balancer targets are facts about the kernel at a moment, not decisions: they are kept
beside the log, in one hash, and are never appended to it. Losing them loses nothing; the
next attempt or check writes them again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vpcq.events.blocking import Requests

KEY = "vpcq:observed"
LEFT_SHOWN = 20  # lines of what is left that a progress record keeps


@dataclass(frozen=True)
class Deleting:
    """A deletion that is not done yet: how many objects are left (a few named), the last
    error, and how many attempts were made."""

    left: int
    sample: tuple[str, ...]
    error: str | None
    tries: int
    at: str

    def describe(self) -> str:
        """One line: `deleting: 3 left (netns a-web, ...); last error: ...`."""
        shown = ", ".join(self.sample[:3]) + (", ..." if self.left > 3 else "")
        text = f"deleting: {self.left} left" + (f" ({shown})" if shown else "")
        return text + (f"; last error: {self.error}" if self.error else "")


class Observed:
    """Reads and writes the observed-state hash."""

    def __init__(self, redis: Requests, key: str = KEY) -> None:
        self.redis = redis
        self.key = key

    async def set_deleting(self, command_ids: Iterable[str], left: Sequence[str], error: str | None,
                           tries: int, at: str) -> None:
        """Record that these deletions are still in progress."""
        value = json.dumps({"left": len(left), "sample": list(left[:LEFT_SHOWN]), "error": error,
                            "tries": tries, "at": at})
        mapping = {f"deleting:{cid}": value for cid in command_ids}
        if mapping:
            await self.redis.hset(self.key, mapping=mapping)

    async def clear_deleting(self, command_ids: Iterable[str]) -> None:
        """Forget the progress of deletions that are done."""
        fields = [f"deleting:{cid}" for cid in command_ids]
        if fields:
            await self.redis.hdel(self.key, *fields)

    async def deleting(self, command_ids: Iterable[str]) -> dict[str, Deleting]:
        """The progress of those of these deletions that have had a failed attempt."""
        ids = list(command_ids)
        if not ids:
            return {}
        raw = await self.redis.hmget(self.key, [f"deleting:{cid}" for cid in ids])
        out: dict[str, Deleting] = {}
        for cid, value in zip(ids, raw, strict=True):
            if value is None:
                continue
            try:
                d = json.loads(value)
                out[cid] = Deleting(int(d["left"]), tuple(str(x) for x in d["sample"]),
                                    None if d["error"] is None else str(d["error"]),
                                    int(d["tries"]), str(d["at"]))
            except (ValueError, KeyError, TypeError):
                continue  # not written by vpcq: shown as no progress, never trusted
        return out
