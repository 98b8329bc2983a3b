"""The job queue, behind a thin module of our own (arq today; replaceable)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from vpcq.config import DEFAULT_HOST, queue_of
from vpcq.events.blocking import Requests

APPLY = "apply"  # the job: apply a VPC's pending commands

# arq's keys and payload, as arq 0.28 writes them (arq.constants, arq.jobs.serialize_job):
# spelled out so that a CLI that queues jobs needs not import arq, which loads redis-py and
# asyncio (tests/unit/test_jobs.py checks them against arq's own).
JOB_KEY_PREFIX = "arq:job:"
RESULT_KEY_PREFIX = "arq:result:"
EXPIRES_EXTRA_MS = 86_400_000


def job_dumps(obj: Any) -> bytes:
    """arq job payloads are JSON, not pickles."""
    return json.dumps(obj, separators=(",", ":")).encode()


def job_loads(data: bytes) -> Any:
    return json.loads(data)


def job_payload(function: str, args: tuple[object, ...], enqueue_time_ms: int) -> bytes:
    """A job as arq's serialize_job makes it (first try, no keyword arguments), in JSON."""
    return job_dumps({"t": None, "f": function, "a": args, "k": {}, "et": enqueue_time_ms})
LEGACY = ("reconcile",)  # its name before: jobs queued by an older vpcq are still taken

# KEYS: the queue, the wake channel, then per job its job key and result key.
# ARGV: expiry (ms), then per job its id, score and payload.
# What arq's enqueue_job does for one job (a job whose key or result exists is a repeat, and is
# not queued again), for every job of a batch in one round trip instead of four each; then one
# message on the wake channel, once all of them are queued. Returns how many were queued.
_ENQUEUE = """
local queued = 0
for i = 3, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i], KEYS[i + 1]) == 0 then
    local a = 2 + 3 * (i - 3) / 2
    redis.call('PSETEX', KEYS[i], ARGV[1], ARGV[a + 2])
    redis.call('ZADD', KEYS[1], ARGV[a + 1], ARGV[a])
    queued = queued + 1
  end
end
if queued > 0 then
  redis.call('PUBLISH', KEYS[2], queued)
end
return queued
"""


def _on(vpc: str, host: str) -> str:
    """A job's VPC, and its host unless the default: a VPC made again on another host while
    its deletion is pending has a job on each host at the same version."""
    return vpc if host == DEFAULT_HOST else f"{vpc}@{host}"


def _id(kind: str, vpc: str, host: str, version: int, tag: str) -> str:
    return f"{kind}:{_on(vpc, host)}:{version}" + (f":{tag}" if tag else "")


def wake_channel(queue: str) -> str:
    """Where idle workers of `queue` listen for "a job was queued"."""
    return f"{queue}:wake"


class JobQueue:
    """Enqueue level-triggered jobs: a job names a VPC, never a diff.

    After enqueuing, it publishes on the queue's wake channel, so an idle worker starts the
    job now instead of at its next poll (the poll stays, as the fallback).
    """

    def __init__(self, redis: Requests) -> None:
        self.redis = redis
        self._enqueue_script = redis.register_script(_ENQUEUE)

    async def apply(self, jobs: Iterable[tuple[str, str]], version: int, tag: str = "") -> int:
        """Ask a worker of a host to apply a VPC's pending commands, for each (VPC, host) of
        `jobs`; the job id dedupes repeats. Returns how many jobs were queued (not already
        queued or running). A `tag` makes the ids new (see `Worker` start-up)."""
        return await self._enqueue(
            [(host, (vpc,), _id("apply", vpc, host, version, tag)) for vpc, host in jobs])

    async def repair(self, jobs: Iterable[tuple[str, str]], version: int, tag: str = "") -> int:
        """Ask a worker of a host to also compare a VPC with the kernel and repair any drift."""
        return await self._enqueue(
            [(host, (vpc, True), _id("repair", vpc, host, version, tag)) for vpc, host in jobs])

    async def listening(self, hosts: Iterable[str]) -> dict[str, int]:
        """How many workers of each host are up: each listens on its queue's wake channel
        from its first poll on, until it stops (or its connection drops)."""
        hosts = list(dict.fromkeys(hosts))
        if not hosts:
            return {}
        counts = await self.redis.pubsub_numsub(*(wake_channel(queue_of(h)) for h in hosts))
        return {h: int(n) for h, (_channel, n) in zip(hosts, counts, strict=True)}

    async def _enqueue(self, jobs: list[tuple[str, tuple[object, ...], str]]) -> int:
        by_queue: dict[str, list[tuple[tuple[object, ...], str]]] = {}
        for host, job_args, job_id in jobs:
            by_queue.setdefault(queue_of(host), []).append((job_args, job_id))
        queued = 0
        for queue, some in by_queue.items():  # one queue, one call, in a single-host setup
            queued += await self._enqueue_on(queue, some)
        return queued

    async def _enqueue_on(self, queue: str, jobs: list[tuple[tuple[object, ...], str]]) -> int:
        now = round(time.time() * 1000)
        keys = [queue, wake_channel(queue)]
        args: list[str | int | bytes] = [EXPIRES_EXTRA_MS]
        for job_args, job_id in jobs:
            keys += [JOB_KEY_PREFIX + job_id, RESULT_KEY_PREFIX + job_id]
            args += [job_id, now, job_payload(APPLY, job_args, now)]
        return int(await self._enqueue_script(keys=keys, args=args))
