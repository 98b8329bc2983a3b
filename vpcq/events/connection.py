"""The asyncio connection to the Redis that carries the log and the job queue (the workers'
and `vpcq up`'s; the CLI's other commands use `vpcq.events.blocking`)."""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from vpcq.config import QUEUE
from vpcq.events.blocking import CONNECT_TIMEOUT, TIMEOUT, bad_url, unreachable
from vpcq.events.jobs import job_dumps, job_loads


async def connect(url: str, *, check: bool = True) -> ArqRedis:
    """An ArqRedis client (a redis.asyncio.Redis) on `url`; ConfigError if unreachable."""
    try:
        pool = ConnectionPool.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                       socket_timeout=TIMEOUT)
    except ValueError as e:  # redis-py's words, which never repeat the URL
        raise bad_url(url, e) from None
    redis = ArqRedis(
        pool_or_conn=pool,
        job_serializer=job_dumps,
        job_deserializer=job_loads,
        default_queue_name=QUEUE,
    )
    if check:
        try:
            await redis.ping()
        except (OSError, RedisError) as e:
            await redis.aclose()
            raise unreachable(url, e) from e
    return redis
