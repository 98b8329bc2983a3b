"""The worker process: arq's worker with one job kind, `apply(vpc)` (a VPC's pending
commands, and with `repair` its drift); JSON payloads; short timeouts; woken by a message
when a job is queued; and, at start, a repair of every VPC of its host (a reboot empties the
kernel, not the log)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from typing import Any

import structlog
from arq import Retry
from arq.constants import in_progress_key_prefix
from arq.worker import Worker as ArqWorker
from redis.exceptions import RedisError

from vpcq import config
from vpcq.errors import KernelError, LockLost, VpcqError
from vpcq.events.connection import connect
from vpcq.events.jobs import (
    ANSWER_TTL_MS,
    APPLY,
    LEGACY,
    OBSERVE,
    Answer,
    answer_key,
    dump_answer,
    job_dumps,
    job_loads,
    wake_channel,
)
from vpcq.events.text import escape
from vpcq.events.types import NAME_RULE, is_name, show
from vpcq.orchestrator.state import State
from vpcq.workers.controller import Controller, NotReady, build_controller
from vpcq.workers.health import HealthChecker
from vpcq.workers.locks import Busy
from vpcq.workers.reconciler import DeleteIncomplete

log = structlog.get_logger("vpcq.worker")
JOB_TIMEOUT = 60
# On SIGTERM a worker takes no new job and gives the ones it runs this long to finish (then
# arq cancels them). A job cancelled mid-change leaves a half-applied change for the next
# worker to finish, and its VPC locked until the lock lapses. Under Docker's 10 s stop grace.
STOP_GRACE = 8


def backoff(attempt: int, first: float, most: float) -> float:
    """Seconds before try `attempt` + 1: `first`, growing by half each try, at most `most`."""
    return float(min(first * 1.5 ** max(attempt - 1, 0), most))


async def apply(ctx: dict[str, Any], vpc: str, repair: bool = False) -> int:
    """Bring one VPC to the state the log wants."""
    controller: Controller = ctx["controller"]
    attempt = int(ctx.get("job_try") or 1)
    structlog.contextvars.bind_contextvars(vpc=vpc, job_id=ctx.get("job_id"))
    try:
        return await controller.apply(vpc, repair, attempt)
    except Busy:
        # another worker applies a change to it; a long one (a cleanup) is not polled for at
        # the first pace all the while it runs
        raise Retry(defer=backoff(attempt, 0.05, 2.0)) from None
    except DeleteIncomplete:
        raise Retry(defer=backoff(attempt, 0.2, 5.0)) from None
    except LockLost as e:
        log.warning("lock lost while applying; another worker may have taken over", error=str(e))
        raise Retry(defer=0.5) from None
    except NotReady:
        return 0  # the command it waits for wakes this VPC when it is settled
    except KernelError as e:
        # only a repair raises here (a command's failure is recorded in the log instead);
        # e.g. a peer's router is not back yet after a reboot: try again shortly
        if ctx.get("job_try", 1) < 30:
            log.warning("repair incomplete, retrying", error=str(e))
            raise Retry(defer=1.0) from None
        raise


async def observe(ctx: dict[str, Any], request: object, what: object, vpcs: Any,
                  at: Any) -> int:
    """`vpcq drift` or `vpcq repair`, in a worker: its log cache, netlink sockets and rules
    cache are warm, where a process of its own would start, read the log from event 1 and
    open a socket in every namespace first. The answer goes to `answer_key(request)`."""
    if not (isinstance(request, str) and len(request) == 16
            and all(c in "0123456789abcdef" for c in request)):
        # anyone who can write to Redis can queue a job: this one has no answer key of ours
        log.warning("observe job refused: its request id is not one the CLI makes",
                    job_id=ctx.get("job_id"))
        return 0
    refused = _refused(what, vpcs, at)
    if refused is not None:
        log.warning("observe refused", reason=refused)
        await _answer(ctx["redis"], request, Answer([], refused, 2))
        return 0
    controller: Controller = ctx["controller"]
    try:
        if what == "drift":
            steps = await controller.drift(vpcs, at)
        else:
            steps = await controller.repair_when_free(vpcs)
        # a step may name what someone else put in the kernel (a link name may hold an
        # escape sequence): shown escaped
        answer = Answer([(s.op, escape(s.describe())) for s in steps])
    except VpcqError as e:
        answer = Answer([], escape(f"{e.where + ': ' if e.where else ''}{e}"), e.exit_code)
    except asyncio.CancelledError:  # its timeout, or the worker stopping: said, then let go
        stopped = Answer([], f"the worker stopped it (after at most {JOB_TIMEOUT} s, or on "
                             f"its way down): `vpcq {what} --here` runs it in a process of its own", 3)
        await asyncio.shield(_answer(ctx["redis"], request, stopped))
        raise
    except Exception as e:  # said to the client, not only logged: it waits for an answer
        log.exception("observe failed", what=what)
        answer = Answer([], escape(f"the worker failed: {type(e).__name__}: {e}", 300), 3)
    await _answer(ctx["redis"], request, answer)
    log.info("observed", what=what, vpcs=len(vpcs) or "all", steps=len(answer.steps),
             error=answer.error)
    return len(answer.steps)


def _refused(what: object, vpcs: object, at: object) -> str | None:
    """Why an observe job's arguments are not what the CLI sends (None: they are)."""
    if what not in ("drift", "repair"):
        return "the job asks for neither drift nor repair"
    if not isinstance(vpcs, list) or not all(isinstance(v, str) for v in vpcs):
        return "the job's VPCs are not a list of names"
    bad = next((v for v in vpcs if not is_name(v)), None)
    if bad is not None:
        return f"vpc: {show(bad)} is not a valid name ({NAME_RULE})"
    if not (at is None or (type(at) is int and 0 <= at <= 2**53)):
        return "the job's --at is not a sequence number"
    return None


async def _answer(redis: Any, request: str, answer: Answer) -> None:
    key = answer_key(request)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, dump_answer(answer))
        pipe.pexpire(key, ANSWER_TTL_MS)
        await pipe.execute()


async def startup(ctx: dict[str, Any]) -> None:
    controller = build_controller(ctx["redis"], ctx.get("name", "worker"))
    queue = controller.queue
    ctx["controller"] = controller
    # a worker that starts (after a crash or a reboot) re-queues every VPC with work to do,
    # and checks every VPC against the kernel (a reboot leaves the log, not the kernel). The
    # jobs get ids of their own: a job of the same id that a killed worker was running is
    # held by arq (its in-progress key) until the longest job timeout has passed
    state = await controller.cache.refresh()
    behind = sorted({v for cid in state.pending for v in state.commands[cid].vpcs})
    start = secrets.token_hex(3)
    await queue.apply(controller.cache.next_jobs(state, behind), state.seq, tag=start)
    # (VPCQ_RESTORE_ON_START: the same, as older setups spell it)
    if os.environ.get("VPCQ_REPAIR_ON_START", os.environ.get("VPCQ_RESTORE_ON_START", "1")) == "1":
        await queue.repair(_mine(controller, state), state.seq, tag=start)
    interval = float(os.environ.get("VPCQ_DRIFT_INTERVAL", "0"))
    if interval > 0:
        ctx["drift_timer"] = asyncio.create_task(_drift_timer(controller, interval))
    ctx["stall_watch"] = asyncio.create_task(_watch_stalls())
    # every worker of the host runs one; the one that holds the host's lease checks
    ctx["health"] = asyncio.create_task(HealthChecker(controller, ctx["redis"]).run())
    log.info("worker ready", seq=state.seq, queued=behind, host=controller.host)


async def _watch_stalls(every: float = 0.5, warn: float = 1.0) -> None:
    """Log when the event loop was kept from running for over `warn` seconds: the VPC locks
    are renewed on it, and a stall as long as their lifetime lets another worker take them."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(every)
        late = loop.time() - t - every
        if late > warn:
            log.warning("event loop stalled", seconds=round(late, 2))


async def _drift_timer(controller: Controller, interval: float) -> None:
    """Re-check every VPC against the kernel every `interval` seconds ($VPCQ_DRIFT_INTERVAL)."""
    while True:
        await asyncio.sleep(interval)
        state = await controller.cache.refresh()
        await controller.queue.repair(_mine(controller, state), int(time.time()))


def _mine(controller: Controller, state: State) -> list[tuple[str, str]]:
    """(VPC, this host) for each VPC placed on this worker's host."""
    return [(v, controller.host) for v in sorted(state.vpcs)
            if state.vpcs[v].host == controller.host]


async def shutdown(ctx: dict[str, Any]) -> None:
    tasks = [t for t in (ctx.get("drift_timer"), ctx.get("stall_watch"), ctx.get("health")) if t]
    for task in tasks:
        task.cancel()
    # the health checker may be changing a router's rules: let it end before the kernel closes
    await asyncio.wait(tasks, timeout=5)
    controller: Controller | None = ctx.get("controller")
    if controller is not None:
        controller.kernel.close()


class Worker(ArqWorker):
    """arq's worker, started by a message when a job is queued instead of only by its poll.

    arq finds jobs by polling its queue: a fast poll keeps an idle worker busy, a slow one
    makes every new job wait. JobQueue publishes on the queue's wake channel after it
    enqueues: an idle worker waits for that
    (at most IDLE_POLL, or until the earliest deferred job is due); a busy one polls every
    BUSY_POLL as before, and at once when one of its jobs finishes. A lost message costs
    latency, never a job.
    """

    BUSY_POLL = 0.02
    IDLE_POLL = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, poll_delay=0, **kwargs)
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._busy = True

    async def _poll_iteration(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        wait = self.BUSY_POLL if self._busy else await self._idle_wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), wait)
        self._woken.clear()  # a message or a finished job from now on means another poll
        started = self._jobs_started()
        await super()._poll_iteration()
        self._busy = self.job_counter > 0 or self._jobs_started() != started

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, given only the ids no worker is running. For every queued id,
        arq spends four round trips (WATCH, EXISTS, ZSCORE, UNWATCH) finding out whether a
        worker runs it; a running job stays queued until it ends, so every poll would pay
        that for each job running here or on another worker. One pipelined EXISTS drops them
        first (arq checks again as it claims)."""
        mine = {j for j, t in self.tasks.items() if not t.done()}
        ids = [j for j in job_ids if j.decode() not in mine]
        if ids:
            async with self.pool.pipeline(transaction=False) as pipe:
                for j in ids:
                    pipe.exists(in_progress_key_prefix + j.decode())
                running = await pipe.execute()
            ids = [j for j, r in zip(ids, running, strict=True) if not r]
        await super().start_jobs(ids)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._woken.set()  # a slot is free: take the next queued job now

    async def _idle_wait(self) -> float:
        """Seconds until the earliest queued job is due (a Retry's defer), at most IDLE_POLL.
        A job already due that the last poll did not start (arq skips one that another
        worker holds) is polled for at the busy pace, never in a tight loop."""
        first = await self.pool.zrange(self.queue_name, 0, 0, withscores=True)
        if not first:
            return self.IDLE_POLL
        due = float(first[0][1]) / 1000 - time.time()
        return min(max(due, self.BUSY_POLL), self.IDLE_POLL)

    async def _listen(self) -> None:
        channel = wake_channel(self.queue_name)
        while True:
            try:
                async with self.pool.pubsub() as sub:
                    await sub.subscribe(channel)
                    while True:
                        # a read with a timeout of its own: the connection's socket timeout
                        # would take a quiet channel for a lost server
                        message = await sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and message["type"] == "message":
                            self._woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarting: the poll goes on meanwhile
                log.warning("wake channel lost, listening again", error=str(e))
                await asyncio.sleep(1)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        try:
            await super().close()
        except (RedisError, OSError):
            # Redis went away (arq's close removes its health key there): what is ours to
            # release is released all the same
            await shutdown(self.ctx)
            with contextlib.suppress(RedisError, OSError):
                await self.pool.close(close_connection_pool=True)


async def make_worker(name: str, burst: bool = False) -> Worker:
    redis = await connect(config.redis_url())
    return Worker(
        functions=_functions(),
        redis_pool=redis,
        queue_name=config.queue_of(config.host_id()),
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"name": name},
        burst=burst,
        max_jobs=int(os.environ.get("VPCQ_WORKER_JOBS", "4")),
        job_timeout=JOB_TIMEOUT,
        max_tries=10_000,  # Retry(defer) on a busy lock counts as a try
        keep_result=0,
        handle_signals=True,
        job_completion_wait=STOP_GRACE,
        health_check_interval=10,
        job_serializer=job_dumps,
        job_deserializer=job_loads,
    )


def _functions() -> list[Any]:
    from arq.worker import func

    return [*(func(apply, name=name, timeout=JOB_TIMEOUT) for name in (APPLY, *LEGACY)),
            # the same timeout as apply's: arq holds any job of a killed worker for the
            # longest timeout of all its functions
            func(observe, name=OBSERVE, timeout=JOB_TIMEOUT, max_tries=1)]
