"""Per-VPC locks in Redis, with expiry (a crashed holder's lock lapses), held as leases.

A lock is renewed by a task on the holder's event loop. If that loop stalls (a long
blocking call) or Redis cannot be reached, the lock can lapse while the holder still works,
and another worker takes it. So a holder checks its lease before every kernel step and the
log's append script checks the tokens (fencing): a worker that lost a lock changes nothing
more and records nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis

from vpcq.errors import LockLost, VpcqError

# Every lock of a change in one round trip: a repair of a whole host holds one per VPC.
# Taken in one script, so two holders never deadlock (nothing runs between its SETs); the
# index of the first one held by someone else is returned (0: all taken), and those this
# call took before it are let go.
_TAKE = """
for i, key in ipairs(KEYS) do
  if not redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    for j = 1, i - 1 do
      redis.call('DEL', KEYS[j])
    end
    return i
  end
end
return 0
"""
_RELEASE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    n = n + redis.call('DEL', key)
  end
end
return n
"""
_RENEW = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    n = n + 1
  end
end
return n
"""


class Busy(VpcqError):
    """Another worker holds one of the locks."""

    def __init__(self, name: str) -> None:
        super().__init__(f"vpc {name} is busy: a worker is applying a change to it")
        self.name = name


@dataclass
class Lease:
    """The locks one holder has, while it has them."""

    names: list[str]
    keys: list[str]
    token: str
    ttl: float  # seconds
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False

    @property
    def valid(self) -> bool:
        # a margin under the TTL: the last renewal may have been read late by a busy loop
        return not self.lost and time.monotonic() - self.renewed_at < self.ttl * 0.8

    def check(self) -> None:
        """Raise LockLost unless every lock is surely still held."""
        if not self.valid:
            raise LockLost(self.names)


class Locks:
    """Short-lived locks, renewed while held: a worker killed with SIGKILL holds nothing for
    longer than `ttl_ms`, so the VPC's next job starts soon after."""

    def __init__(self, redis: Redis, prefix: str = "vpcq", ttl_ms: int = 5_000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    def key(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    @asynccontextmanager
    async def hold(self, names: Sequence[str]) -> AsyncIterator[Lease]:
        """Hold every lock (all taken at once) or raise Busy naming one held by another."""
        token = secrets.token_hex(8)
        ordered = sorted(set(names))
        keys = [self.key(name) for name in ordered]
        try:
            # inside the try: a take cancelled after Redis ran it still lets its locks go
            # (the release deletes only what holds this token)
            busy = int(await self._take(keys=keys, args=[token, self.ttl_ms])) if keys else 0
            if busy:
                raise Busy(ordered[busy - 1])
            lease = Lease(ordered, keys, token, self.ttl_ms / 1000)
            renew = asyncio.create_task(self._keep(lease))
            try:
                yield lease
            finally:
                renew.cancel()
        finally:
            try:
                if keys:
                    await self._release(keys=keys, args=[token])
            except Exception:  # Redis gone: the locks lapse by themselves
                pass

    async def _keep(self, lease: Lease) -> None:
        while not lease.lost:
            await asyncio.sleep(lease.ttl / 3)
            sent = time.monotonic()  # the lock runs for a TTL from when Redis renewed it, later
            try:
                held = await self._renew(keys=lease.keys, args=[lease.token, self.ttl_ms])
            except Exception:  # Redis unreachable: the lease runs out unless a renewal lands
                continue
            if int(held) < len(lease.keys):
                lease.lost = True
            else:
                lease.renewed_at = sent
