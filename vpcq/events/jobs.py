"""The job queue, behind a thin module of our own (arq today; replaceable)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from vpcq.config import DEFAULT_HOST, KEY_PREFIX, queue_of
from vpcq.events.blocking import Requests
from vpcq.events.text import hidden

APPLY = "apply"  # the job: apply a VPC's pending commands
OBSERVE = "observe"  # the job: `vpcq drift` or `vpcq repair`, answered by a warm worker
ANSWER_TTL_MS = 60_000  # an answer no client took is gone after this

# arq's keys and payload, as arq 0.28 writes them (arq.constants, arq.jobs.serialize_job):
# spelled out so that a CLI that queues jobs needs not import arq, which loads redis-py and
# asyncio (tests/unit/test_jobs.py checks them against arq's own).
JOB_KEY_PREFIX = "arq:job:"
RESULT_KEY_PREFIX = "arq:result:"
IN_PROGRESS_KEY_PREFIX = "arq:in-progress:"
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

    async def observe(self, host: str, request: str, what: str, vpcs: list[str],
                      at: int | None) -> None:
        """Ask a worker of `host` for `vpcq drift` (`what` "drift") or `vpcq repair` of
        `vpcs` (none: all of the host's); it pushes its answer to `answer_key(request)`."""
        await self._enqueue_on(queue_of(host), [((request, what, vpcs, at), f"observe:{request}")],
                               OBSERVE)

    async def withdraw(self, host: str, job_id: str) -> None:
        """Take a queued job back (a worker that finds its key gone skips it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("ZREM", queue_of(host), job_id)
        pipe.delete(JOB_KEY_PREFIX + job_id)
        await pipe.execute()

    async def job_state(self, job_id: str) -> tuple[bool, bool]:
        """Whether a job is still queued or running (its key is there until it ends), and
        whether a worker runs it now."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("EXISTS", JOB_KEY_PREFIX + job_id)
        pipe.execute_command("EXISTS", IN_PROGRESS_KEY_PREFIX + job_id)
        queued, running = await pipe.execute()
        return bool(queued), bool(running)

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

    async def _enqueue_on(self, queue: str, jobs: list[tuple[tuple[object, ...], str]],
                          function: str = APPLY) -> int:
        now = round(time.time() * 1000)
        keys = [queue, wake_channel(queue)]
        args: list[str | int | bytes] = [EXPIRES_EXTRA_MS]
        for job_args, job_id in jobs:
            keys += [JOB_KEY_PREFIX + job_id, RESULT_KEY_PREFIX + job_id]
            args += [job_id, now, job_payload(function, job_args, now)]
        return int(await self._enqueue_script(keys=keys, args=args))


def answer_key(request: str) -> str:
    """Where the worker that took an `observe` job pushes its answer (a list of one)."""
    return f"{KEY_PREFIX}:answer:{request}"


class Answer(NamedTuple):
    """A worker's answer to an `observe` job: the steps (op, what) it found or took, or the
    error it met (one line) and the exit code it calls for."""

    steps: list[tuple[str, str]]
    error: str | None = None
    exit_code: int = 0

    def report(self, what: str, as_json: bool) -> tuple[list[str], int]:
        """What `vpcq drift` or `vpcq repair` prints on stdout for it, and its exit code
        (drift: 1 if there is any step). An error is the caller's to say."""
        out = [json.dumps({"op": op, "object": obj}) if as_json else obj for op, obj in self.steps]
        if what == "drift":
            if not self.steps and not as_json:
                out.append("no drift: the kernel matches the log")
            return out, 1 if self.steps else 0
        if not as_json:
            out.append(f"repaired: {len(self.steps)} step(s)")
        return out, 0


def dump_answer(a: Answer) -> bytes:
    return job_dumps({"steps": a.steps, "error": a.error, "exit": a.exit_code})


MAX_ANSWER = 64 << 20


def load_answer(raw: bytes) -> Answer:
    """An answer as the CLI reads it back from Redis, checked as any entry is (whoever can
    write to Redis can write one): ValueError unless its lines are one printable line each."""
    if len(raw) > MAX_ANSWER:
        raise ValueError(f"it is over {MAX_ANSWER >> 20} MiB")
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("it is not JSON") from None
    if not isinstance(d, dict) or set(d) != {"steps", "error", "exit"}:
        raise ValueError("it is not an answer (steps, error, exit)")
    steps, error, code = d["steps"], d["error"], d["exit"]
    if not isinstance(steps, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(_line(x) for x in s) for s in steps
    ):
        raise ValueError("its steps are not pairs of printable lines")
    if not (error is None or _line(error)) or type(code) is not int or not 0 <= code <= 3:
        raise ValueError("its error is not a printable line with an exit code of 0-3")
    return Answer([(op, what) for op, what in steps], error, code)


def _line(x: object) -> bool:
    """One line that shows as it is, as `text.escape` makes one."""
    return isinstance(x, str) and 0 < len(x) <= 2000 and not hidden(x)
