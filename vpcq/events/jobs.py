"""The job queue, behind a thin module of our own (arq today; replaceable)."""

from __future__ import annotations

from collections.abc import Iterable

from arq.connections import ArqRedis

RECONCILE = "reconcile"


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

    async def reconcile(self, vpcs: Iterable[str], version: int) -> None:
        """Ask a worker to apply each VPC's pending commands; the job id dedupes repeats."""
        await self._enqueue([((vpc,), f"reconcile:{vpc}:{version}") for vpc in vpcs])

    async def repair(self, vpcs: Iterable[str], version: int) -> None:
        """Ask a worker to also compare each VPC with the kernel and repair any drift."""
        await self._enqueue([((vpc, True), f"repair:{vpc}:{version}") for vpc in vpcs])

    async def _enqueue(self, jobs: list[tuple[tuple[object, ...], str]]) -> None:
        queued = 0
        for args, job_id in jobs:
            queued += await self.redis.enqueue_job(RECONCILE, *args, _job_id=job_id) is not None
        if queued:
            await self.redis.publish(wake_channel(self.redis.default_queue_name), queued)
