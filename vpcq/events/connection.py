"""One way to open the Redis connection that carries the log and the job queue."""

from __future__ import annotations

import json
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from vpcq.config import QUEUE, describe_url
from vpcq.errors import ConfigError


def job_dumps(obj: Any) -> bytes:
    """arq job payloads are JSON, not pickles."""
    return json.dumps(obj, separators=(",", ":")).encode()


def job_loads(data: bytes) -> Any:
    return json.loads(data)


async def connect(url: str, *, check: bool = True) -> ArqRedis:
    """An ArqRedis client (a redis.asyncio.Redis) on `url`; ConfigError if unreachable."""
    pool = ConnectionPool.from_url(url, socket_connect_timeout=2)
    redis = ArqRedis(
        pool_or_conn=pool,
        job_serializer=job_dumps,
        job_deserializer=job_loads,
        default_queue_name=QUEUE,
    )
    if check:
        try:
            await redis.ping()
        except (RedisConnectionError, OSError, RedisError) as e:
            await redis.aclose()
            raise ConfigError(
                f"cannot reach Redis at {describe_url(url)} ({_short(e)}); run `vpcq up`"
            ) from e
    return redis


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
