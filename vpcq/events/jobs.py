"""The job queue, behind a thin module of our own (arq today; replaceable)."""

from __future__ import annotations

from collections.abc import Iterable

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

RECONCILE = "reconcile"

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

    async def reconcile(self, vpcs: Iterable[str], version: int) -> int:
        """Ask a worker to apply each VPC's pending commands; the job id dedupes repeats.
        Returns how many jobs were queued (not already queued or running)."""
        return await self._enqueue([((vpc,), f"reconcile:{vpc}:{version}") for vpc in vpcs])

    async def repair(self, vpcs: Iterable[str], version: int) -> int:
        """Ask a worker to also compare each VPC with the kernel and repair any drift."""
        return await self._enqueue([((vpc, True), f"repair:{vpc}:{version}") for vpc in vpcs])

    async def _enqueue(self, jobs: list[tuple[tuple[object, ...], str]]) -> int:
        if not jobs:
            return 0
        queue = self.redis.default_queue_name
        now = timestamp_ms()
        keys = [queue, wake_channel(queue)]
        args: list[str | int | bytes] = [expires_extra_ms]
        for job_args, job_id in jobs:
            keys += [job_key_prefix + job_id, result_key_prefix + job_id]
            payload = serialize_job(RECONCILE, job_args, {}, None, now,
                                    serializer=self.redis.job_serializer)
            args += [job_id, now, payload]
        return int(await self._enqueue_script(keys=keys, args=args))
