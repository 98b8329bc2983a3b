"""The worker's `observe` job (`vpcq drift` and `vpcq repair` in a warm worker) takes only
the arguments the CLI sends: anyone who can write to Redis can queue a job."""

from __future__ import annotations

import asyncio

import pytest

from vpcq.events.connection import connect
from vpcq.events.jobs import answer_key, load_answer
from vpcq.workers.process import observe

REQUEST = "0123456789abcdef"


@pytest.mark.parametrize(("what", "vpcs", "at", "why"), [
    ("drift", ["../../etc"], None, "vpc: '../../etc' is not a valid name"),
    ("drift", ["a\nb"], None, "is not a valid name"),
    ("rm -rf", [], None, "neither drift nor repair"),
    ("drift", "a", None, "not a list of names"),
    ("repair", [7], None, "not a list of names"),
    ("drift", [], -1, "not a sequence number"),
    ("drift", [], True, "not a sequence number"),
    ("drift", [], 2**60, "not a sequence number"),
])  # fmt: skip
def test_arguments_the_cli_never_sends_are_answered_with_the_reason(redis_url, what, vpcs, at, why):
    async def go() -> None:
        r = await connect(redis_url)
        await r.flushdb()
        # no controller in the context: a refused job never gets as far as the kernel
        assert await observe({"redis": r}, REQUEST, what, vpcs, at) == 0
        assert 0 < await r.pttl(answer_key(REQUEST)) <= 60_000  # gone if nobody reads it
        answer = load_answer(await r.lpop(answer_key(REQUEST)))
        assert answer.exit_code == 2 and why in (answer.error or ""), answer
        await r.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("request_id", ["../../x", "0123456789ABCDEF", "abc", 7, None, "0" * 17])
def test_a_request_id_the_cli_never_makes_gets_no_answer_at_all(redis_url, request_id):
    async def go() -> None:
        r = await connect(redis_url)
        await r.flushdb()
        assert await observe({"redis": r}, request_id, "drift", [], None) == 0
        assert await r.keys("*") == []
        await r.aclose()

    asyncio.run(go())


def test_a_job_cancelled_by_its_timeout_or_a_stopping_worker_still_answers(redis_url):
    """arq cancels a job at its timeout and when the worker stops: the client waiting for
    the answer is told so (exit 3), instead of waiting for one that never comes."""

    class Stuck:  # a controller whose drift never ends (the kernel is not what is tested)
        async def drift(self, vpcs: list[str], at: int | None) -> list[object]:
            await asyncio.sleep(3600)
            return []

    async def go() -> None:
        r = await connect(redis_url)
        await r.flushdb()
        task = asyncio.create_task(observe({"redis": r, "controller": Stuck()}, REQUEST, "drift",
                                           [], None))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        answer = load_answer(await r.lpop(answer_key(REQUEST)))
        assert answer.exit_code == 3 and "vpcq drift --here" in (answer.error or ""), answer
        await r.aclose()

    asyncio.run(go())


def test_the_client_stops_waiting_when_the_job_ends_without_an_answer(redis_url):
    """A worker that drops the job (one that does not know `observe`, or the job's second
    try after its worker was killed: arq deletes its key) leaves no answer: the client sees
    the job gone within a second and runs it itself; a job still queued is waited for, and
    an answer pushed meanwhile is the one taken. Ctrl-C or a fallback takes the job back."""
    import threading
    import time

    import redis as sync_redis

    from vpcq.cli.observe import _wait
    from vpcq.config import QUEUE
    from vpcq.events.blocking import BlockingRedis, drive
    from vpcq.events.jobs import JOB_KEY_PREFIX, JobQueue, wake_channel

    b = BlockingRedis.connect(redis_url)
    q = JobQueue(b)
    drive(b.execute_command("FLUSHDB"))
    worker = sync_redis.Redis.from_url(redis_url).pubsub()  # a worker of the host listening
    worker.subscribe(wake_channel(QUEUE))
    try:
        key = answer_key(REQUEST)
        t0 = time.monotonic()
        assert drive(_wait(b, q, "default", "observe:gone", key, "drift")) is None
        assert time.monotonic() - t0 < 3

        drive(q.observe("default", REQUEST, "drift", [], None))
        pusher = threading.Timer(1.5, lambda: sync_redis.Redis.from_url(redis_url).rpush(key, b"late"))
        pusher.start()
        assert drive(_wait(b, q, "default", f"observe:{REQUEST}", key, "drift")) == b"late"
        pusher.join()

        drive(q.withdraw("default", f"observe:{REQUEST}"))
        assert drive(b.execute_command("EXISTS", JOB_KEY_PREFIX + f"observe:{REQUEST}")) == 0
        assert drive(b.execute_command("ZSCORE", QUEUE, f"observe:{REQUEST}")) is None
    finally:
        worker.close()
        drive(b.aclose())
