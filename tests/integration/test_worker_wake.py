"""The worker is started by the wake message, not only by its poll (real Redis, no kernel)."""

from __future__ import annotations

import asyncio
import time

from arq import Retry
from arq.worker import func

from vpcq.events.connection import connect
from vpcq.events.jobs import APPLY, JobQueue, job_dumps, job_loads, wake_channel
from vpcq.workers.process import Worker


def _worker(redis, started: dict[str, float], retry_first: float = 0) -> Worker:
    async def apply(ctx, vpc, repair=False):
        if retry_first and ctx["job_try"] == 1:
            raise Retry(defer=retry_first)  # as a job does when another worker holds the VPC
        started[vpc] = time.monotonic()

    w = Worker(functions=[func(apply, name=APPLY)], redis_pool=redis,
               queue_name=redis.default_queue_name, handle_signals=False, keep_result=0,
               job_serializer=job_dumps, job_deserializer=job_loads)
    w.IDLE_POLL = 30.0  # without the wake message a job would wait this long
    return w


async def _idle(worker: Worker) -> None:
    deadline = time.monotonic() + 5
    while worker._busy or worker._listener is None:
        assert time.monotonic() < deadline, "the worker never went idle"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # now waiting on the wake channel


async def _stop(worker: Worker, task: asyncio.Task) -> None:
    deadline = time.monotonic() + 5
    while any(not t.done() for t in worker.tasks.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # let the last job finish: close() cancels running jobs
    task.cancel()
    await worker.close()


async def _time_to_start(redis_url: str, vpc: str, retry_first: float = 0) -> float:
    """Seconds from JobQueue.apply([vpc]) on an idle worker to the job's (last) start."""
    redis = await connect(redis_url)
    started: dict[str, float] = {}
    worker = _worker(redis, started, retry_first)
    task = asyncio.create_task(worker.async_run())
    try:
        await _idle(worker)
        t0 = time.monotonic()
        await JobQueue(redis).apply([(vpc, "default")], 1)
        while vpc not in started:
            assert time.monotonic() - t0 < 5, "the job waited for the idle poll (30 s)"
            await asyncio.sleep(0.005)
        return started[vpc] - t0
    finally:
        await _stop(worker, task)


def test_a_queued_job_starts_at_once_on_an_idle_worker(redis_url):
    assert asyncio.run(_time_to_start(redis_url, "a")) < 5


def test_a_retried_job_starts_when_due_though_nothing_is_published(redis_url):
    # the job runs at once and asks to be retried in 0.4 s, as on a VPC another worker holds
    took = asyncio.run(_time_to_start(redis_url, "b", retry_first=0.4))
    assert 0.35 < took < 5


def test_a_due_job_held_elsewhere_is_polled_for_not_spun_on(redis_url):
    async def go():
        redis = await connect(redis_url)
        started: dict[str, float] = {}
        worker = _worker(redis, started)
        polls = 0
        poll = worker._poll_iteration

        async def counted():
            nonlocal polls
            polls += 1
            await poll()

        worker._poll_iteration = counted  # type: ignore[method-assign]
        # a job another worker is running: queued and due, but arq will not start it here
        await redis.set("arq:in-progress:held", b"1", px=60_000)
        await redis.enqueue_job(APPLY, "c", _job_id="held")
        task = asyncio.create_task(worker.async_run())
        try:
            await asyncio.sleep(0.5)
            before, watches = polls, await _watches(redis)
            await asyncio.sleep(1.0)
            return polls - before, await _watches(redis) - watches, started
        finally:
            await redis.delete("arq:in-progress:held")
            await _stop(worker, task)

    polls, watches, started = asyncio.run(go())
    assert "c" not in started
    assert 10 <= polls <= 1 / Worker.BUSY_POLL * 1.5, polls  # polled at the busy pace
    assert watches == 0  # a job running elsewhere costs a poll no claim (WATCH, EXISTS, ...)


async def _watches(redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_watch", {}).get("calls", 0))


def test_a_batch_of_jobs_is_queued_in_one_round_trip_with_one_wake_message(redis_url):
    async def go():
        redis = await connect(redis_url)
        await redis.flushall()
        sub = redis.pubsub()
        await sub.subscribe(wake_channel(redis.default_queue_name))
        await sub.get_message(timeout=1)  # the subscribe confirmation
        await redis.config_resetstat()
        queue = JobQueue(redis)
        first = await queue.apply(dict.fromkeys("abc", "default").items(), 7)
        calls = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        again = await queue.apply(dict.fromkeys("bd", "default").items(), 7)  # only d is new
        messages = []
        while (m := await sub.get_message(timeout=0.5)) is not None:
            messages.append(int(m["data"]))
        jobs = {k.decode(): job_loads(v) for k in await redis.keys("arq:job:*")
                if (v := await redis.get(k)) is not None}
        queued = [j.decode() for j in await redis.zrange(redis.default_queue_name, 0, -1)]
        ttl = await redis.pttl("arq:job:apply:a:7")
        await sub.aclose()
        await redis.aclose()
        return first, calls, again, messages, jobs, queued, ttl

    first, calls, again, messages, jobs, queued, ttl = asyncio.run(go())
    assert (first, again) == (3, 1)
    assert calls == 1  # the three jobs, their keys and the wake message: one script call
    assert messages == [3, 1]
    assert sorted(queued) == [f"apply:{v}:7" for v in "abcd"]
    # what arq's enqueue_job would have written, so arq's worker runs it as its own
    assert jobs["arq:job:apply:d:7"] | {"et": 0} == {"t": None, "f": APPLY, "a": ["d"],
                                                          "k": {}, "et": 0}
    assert 86_000_000 < ttl <= 86_400_000


def test_jobs_go_to_the_queue_of_their_vpcs_host(redis_url):
    """Hosts that share one Redis each take jobs from a queue of their own: a VPC's job is
    queued for its host, and wakes only that host's workers. The default host's queue is
    the one a single-host setup always had."""
    async def go():
        redis = await connect(redis_url)
        await redis.flushall()
        sub = redis.pubsub()
        await sub.subscribe(wake_channel("vpcq:jobs@edge-1"))
        await sub.get_message(timeout=1)
        queued = await JobQueue(redis).apply([("a", "default"), ("b", "edge-1"), ("c", "edge-1")], 3)
        default = [j.decode() for j in await redis.zrange("vpcq:jobs", 0, -1)]
        edge = [j.decode() for j in await redis.zrange("vpcq:jobs@edge-1", 0, -1)]
        message = await sub.get_message(timeout=1)
        await sub.aclose()
        await redis.aclose()
        return queued, default, edge, message

    queued, default, edge, message = asyncio.run(go())
    assert queued == 3
    assert default == ["apply:a:3"]
    assert sorted(edge) == ["apply:b@edge-1:3", "apply:c@edge-1:3"]
    assert message is not None and int(message["data"]) == 2
