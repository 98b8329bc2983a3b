"""Observed state: what workers see of the kernel and the log does not hold.

A deletion's progress (what is left, the last error), drift, and later the health of
load-balancer targets are facts about the kernel at a moment, not decisions: they are kept
beside the log, in one hash, and are never appended to it. Losing them loses nothing; the
next attempt or check writes them again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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


@dataclass(frozen=True)
class Health:
    """A balancer target's last health check: whether it answered, since when it has been so,
    when it was last checked, and why it failed."""

    up: bool
    since: str
    checked: str
    error: str | None = None

    def json(self) -> dict[str, object]:
        return {"up": self.up, "since": self.since, "checked": self.checked, "error": self.error}


# VPC -> balancer -> "subnet:port" -> its health
VpcHealth = Mapping[str, Mapping[str, Health]]


def down_of(health: Mapping[str, VpcHealth]) -> frozenset[tuple[str, str, str]]:
    """(VPC, balancer, "subnet:port") of every target whose last check failed."""
    return frozenset((vpc, lb, target) for vpc, lbs in health.items() for lb, targets in lbs.items()
                     for target, h in targets.items() if not h.up)


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

    async def set_health(self, vpc: str, health: VpcHealth) -> None:
        """Record a VPC's balancer targets' health (none: it has no balancer any more)."""
        if health:
            value = json.dumps({lb: {t: h.json() for t, h in targets.items()}
                                for lb, targets in health.items()})
            await self.redis.hset(self.key, mapping={f"health:{vpc}": value})
        else:
            await self.redis.hdel(self.key, f"health:{vpc}")

    async def health(self, vpcs: Iterable[str]) -> dict[str, dict[str, dict[str, Health]]]:
        """The last recorded health of these VPCs' balancer targets (a target never checked
        has none)."""
        names = list(vpcs)
        if not names:
            return {}
        raw = await self.redis.hmget(self.key, [f"health:{v}" for v in names])
        out: dict[str, dict[str, dict[str, Health]]] = {}
        for vpc, value in zip(names, raw, strict=True):
            if value is None:
                continue
            try:
                out[vpc] = {str(lb): {str(t): Health(bool(h["up"]), str(h["since"]), str(h["checked"]),
                                                     None if h["error"] is None else str(h["error"]))
                                      for t, h in targets.items()}
                            for lb, targets in json.loads(value).items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not written by vpcq: no health known, never trusted
        return out
