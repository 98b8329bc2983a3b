"""One way to open the Redis connection that carries the log and the job queue."""

from __future__ import annotations

import json
import os
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vpcq.config import QUEUE, describe_url
from vpcq.errors import ConfigError


def job_dumps(obj: Any) -> bytes:
    """arq job payloads are JSON, not pickles."""
    return json.dumps(obj, separators=(",", ":")).encode()


def job_loads(data: bytes) -> Any:
    return json.loads(data)


# Every request has a bounded wait: a paused or lost Redis is an error within this many
# seconds (exit 3 in the CLI), never a hang. Blocking reads (XREAD BLOCK) ask for less.
TIMEOUT = 5.0


async def connect(url: str, *, check: bool = True) -> ArqRedis:
    """An ArqRedis client (a redis.asyncio.Redis) on `url`; ConfigError if unreachable."""
    try:
        pool = ConnectionPool.from_url(url, socket_connect_timeout=2, socket_timeout=TIMEOUT)
    except ValueError as e:  # redis-py's words, which never repeat the URL
        raise ConfigError(f"the Redis URL {describe_url(url)!r} does not parse: {_short(e)} "
                          "(set VPCQ_REDIS_URL to redis://HOST:PORT/DB or unix://PATH)") from None
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


def unreachable(url: str, e: BaseException) -> ConfigError:
    """One line saying what went wrong with Redis (never its password)."""
    where = describe_url(url)
    if _timed_out(e):
        why = f"Redis at {where} did not answer within {TIMEOUT:.0f} s (paused? overloaded?)"
    elif isinstance(e, RedisConnectionError | OSError):
        why = f"cannot reach Redis at {where} ({_short(e)})"
    else:
        why = f"Redis at {where} refused: {_short(e)}"
    embedded = "VPCQ_REDIS_URL" not in os.environ
    return ConfigError(why + ("; `vpcq up` starts the embedded instance again" if embedded else ""))


def _timed_out(e: BaseException) -> bool:
    """Whether `e` is, or wraps, a timeout (redis-py wraps one met while connecting)."""
    seen: set[int] = set()
    todo: list[object] = [e]
    while todo:
        x = todo.pop()
        if not isinstance(x, BaseException) or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, RedisTimeoutError | TimeoutError):
            return True
        todo += [x.__cause__, x.__context__, *x.args]
    return False


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
