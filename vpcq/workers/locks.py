"""Per-VPC locks in Redis, with expiry (a crashed holder's lock lapses)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Busy(Exception):
    """Another worker holds one of the locks."""


class Locks:
    def __init__(self, redis: Redis, prefix: str = "vpcq", ttl_ms: int = 30_000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self._release = redis.register_script(_RELEASE)

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
            yield
        finally:
            for key in reversed(taken):
                await self._release(keys=[key], args=[token])
