"""The arq worker: one job kind, `reconcile(vpc)`; JSON payloads; short timeouts."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import structlog
from arq import Retry
from arq.worker import Worker

from vpcq import config
from vpcq.errors import KernelError
from vpcq.events.connection import connect, job_dumps, job_loads
from vpcq.events.jobs import RECONCILE, JobQueue
from vpcq.events.store import EventStore
from vpcq.workers.engine import Engine, NotReady
from vpcq.workers.kernel.adapter import Kernel
from vpcq.workers.locks import Busy, Locks

log = structlog.get_logger("vpcq.worker")
JOB_TIMEOUT = 60


async def reconcile(ctx: dict[str, Any], vpc: str, repair: bool = False) -> int:
    """Bring one VPC to the state the log wants."""
    engine: Engine = ctx["engine"]
    structlog.contextvars.bind_contextvars(vpc=vpc, job_id=ctx.get("job_id"))
    try:
        return await engine.reconcile(vpc, repair)
    except Busy:
        raise Retry(defer=0.05) from None
    except NotReady:
        return 0  # the command it waits for wakes this VPC when it is settled
    except KernelError as e:
        # only a repair raises here (a command's failure is recorded in the log instead);
        # e.g. a peer's router is not back yet after a reboot: try again shortly
        if ctx.get("job_try", 1) < 30:
            log.warning("repair incomplete, retrying", error=str(e))
            raise Retry(defer=1.0) from None
        raise


def build_engine(redis: Any, name: str) -> Engine:
    store = EventStore(redis, config.KEY_PREFIX)
    kernel = Kernel(config.paths().apps, config.paths().run / "host-rules.lock")
    return Engine(store, JobQueue(redis), Locks(redis, config.KEY_PREFIX), kernel, name)


async def make_engine(name: str) -> tuple[Engine, Any]:
    """An engine outside arq (for `drift` and `repair`)."""
    redis = await connect(config.redis_url())
    return build_engine(redis, name), redis


async def startup(ctx: dict[str, Any]) -> None:
    engine = build_engine(ctx["redis"], ctx.get("name", "worker"))
    queue = engine.queue
    ctx["engine"] = engine
    # a worker that starts (after a crash or a reboot) re-queues every VPC with work to do,
    # and checks every VPC against the kernel (a reboot leaves the log, not the kernel)
    state = await engine.cache.refresh()
    behind = sorted({v for cid in state.pending for v in state.commands[cid].vpcs})
    await queue.reconcile(behind, state.seq)
    if os.environ.get("VPCQ_RESTORE_ON_START", "1") == "1":
        await queue.repair(sorted(state.vpcs), state.seq)
    interval = float(os.environ.get("VPCQ_DRIFT_INTERVAL", "0"))
    if interval > 0:
        ctx["drift_timer"] = asyncio.create_task(_drift_timer(engine, interval))
    log.info("worker ready", seq=state.seq, queued=behind)


async def _drift_timer(engine: Engine, interval: float) -> None:
    """Re-check every VPC against the kernel every `interval` seconds ($VPCQ_DRIFT_INTERVAL)."""
    while True:
        await asyncio.sleep(interval)
        state = await engine.cache.refresh()
        await engine.queue.repair(sorted(state.vpcs), int(time.time()))


async def shutdown(ctx: dict[str, Any]) -> None:
    timer = ctx.get("drift_timer")
    if timer is not None:
        timer.cancel()
    engine: Engine | None = ctx.get("engine")
    if engine is not None:
        engine.kernel.close()


async def make_worker(name: str, burst: bool = False) -> Worker:
    redis = await connect(config.redis_url())
    return Worker(
        functions=[_func()],
        redis_pool=redis,
        queue_name=config.QUEUE,
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"name": name},
        burst=burst,
        max_jobs=int(os.environ.get("VPCQ_WORKER_JOBS", "4")),
        job_timeout=JOB_TIMEOUT,
        max_tries=10_000,  # Retry(defer) on a busy lock counts as a try
        keep_result=0,
        poll_delay=0.02,
        handle_signals=True,
        health_check_interval=10,
        job_serializer=job_dumps,
        job_deserializer=job_loads,
    )


def _func() -> Any:
    from arq.worker import func

    return func(reconcile, name=RECONCILE, timeout=JOB_TIMEOUT)
