"""Per-VPC locks in Redis, with expiry (a crashed holder's lock lapses)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from vpcq.errors import VpcqError

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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


class Locks:
    """Short-lived locks, renewed while held: a worker killed with SIGKILL holds nothing for
    longer than `ttl_ms`, so the VPC's next job starts soon after."""

    def __init__(self, redis: Redis, prefix: str = "vpcq", ttl_ms: int = 5_000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    @asynccontextmanager
    async def hold(self, names: Sequence[str]) -> AsyncIterator[None]:
        """Hold every lock (taken in sorted order, so two holders never deadlock) or raise Busy."""
        token = secrets.token_hex(8)
        taken: list[str] = []
        try:
            for name in sorted(set(names)):
                key = f"{self.prefix}:lock:{name}"
                if not await self.redis.set(key, token, nx=True, px=self.ttl_ms):
                    raise Busy(name)
                taken.append(key)
            renew = asyncio.create_task(self._keep(taken, token))
            try:
                yield
            finally:
                renew.cancel()
        finally:
            for key in reversed(taken):
                await self._release(keys=[key], args=[token])

    async def _keep(self, keys: list[str], token: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self._renew(keys=keys, args=[token, self.ttl_ms])
