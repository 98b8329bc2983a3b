"""The job queue, behind a thin module of our own (arq today; replaceable)."""

from __future__ import annotations

from collections.abc import Iterable

from arq.connections import ArqRedis

RECONCILE = "reconcile"


class JobQueue:
    """Enqueue level-triggered jobs: a job names a VPC, never a diff."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def reconcile(self, vpcs: Iterable[str], version: int) -> None:
        """Ask a worker to apply each VPC's pending commands; the job id dedupes repeats."""
        for vpc in vpcs:
            await self.redis.enqueue_job(RECONCILE, vpc, _job_id=f"reconcile:{vpc}:{version}")

    async def repair(self, vpcs: Iterable[str], version: int) -> None:
        """Ask a worker to also compare each VPC with the kernel and repair any drift."""
        for vpc in vpcs:
            await self.redis.enqueue_job(RECONCILE, vpc, True, _job_id=f"repair:{vpc}:{version}")
