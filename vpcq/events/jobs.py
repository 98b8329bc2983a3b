"""The job queue, behind a thin module of our own (arq today; replaceable)."""

from __future__ import annotations

from collections.abc import Iterable

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from vpcq.config import DEFAULT_HOST, queue_of

APPLY = "apply"  # the job: apply a VPC's pending commands
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

    def __init__(self, redis: ArqRedis) -> None:
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
        now = timestamp_ms()
        keys = [queue, wake_channel(queue)]
        args: list[str | int | bytes] = [expires_extra_ms]
        for job_args, job_id in jobs:
            keys += [job_key_prefix + job_id, result_key_prefix + job_id]
            payload = serialize_job(APPLY, job_args, {}, None, now,
                                    serializer=self.redis.job_serializer)
            args += [job_id, now, payload]
        return int(await self._enqueue_script(keys=keys, args=args))
