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
