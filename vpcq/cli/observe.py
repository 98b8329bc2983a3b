"""`vpcq drift` and `vpcq repair`, answered by a running worker of this host.

A worker has what both need already warm: the log folded, a netlink socket in each
namespace it has seen, the rules it last read. A process of its own starts Python, asyncio
and the event models, reads the log from event 1 and opens a socket in every namespace
first: on a host of 1,100 subnets, half of its time. So the CLI queues an `observe` job for
its host's workers and prints the answer the worker pushes; when no worker of the host is
up, or none will answer (they all stopped, or the job ended without an answer), the caller
runs it in a process of its own.
"""

from __future__ import annotations

import secrets
import sys
import time

from vpcq import config
from vpcq.errors import ConfigError
from vpcq.events.blocking import TIMEOUT, BlockingRedis, ConnectionLost, ReplyError, drive, unreachable
from vpcq.events.jobs import JobQueue, answer_key, load_answer

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

WAIT = 900.0  # a backstop: a job that ends without answering is seen within a second
SAY_AFTER = 3.0  # a worker busy with other jobs: said once, on stderr


def ask(ns: argparse.Namespace) -> int | None:
    """Exit code of `ns` (drift or repair) as a worker of this host answered it, its output
    printed; None if no worker of the host is up to answer."""
    config.check_home(config.paths())
    url = config.redis_url()
    try:
        redis = BlockingRedis.connect(url)
        try:
            return drive(_ask(redis, ns))
        finally:
            drive(redis.aclose())
    except (ConnectionLost, ReplyError) as e:
        raise unreachable(url, e) from e


async def _ask(redis: BlockingRedis, ns: argparse.Namespace) -> int | None:
    host = config.host_id()
    queue = JobQueue(redis)
    if (await queue.listening([host]))[host] == 0:
        return None
    request = secrets.token_hex(8)
    job = f"observe:{request}"
    await queue.observe(host, request, ns.cmd, list(ns.vpcs), getattr(ns, "at_seq", None))
    try:
        got = await _wait(redis, queue, host, job, answer_key(request), ns.cmd)
    except BaseException:  # Ctrl-C among them: a job not started yet is taken back
        await queue.withdraw(host, job)
        raise
    if got is None:
        await queue.withdraw(host, job)
        return None
    try:
        answer = load_answer(got)
    except ValueError as e:
        raise ConfigError(f"the answer in {answer_key(request)} is not one a worker writes: {e}") from None
    if answer.error is not None:
        print(f"vpcq: error: {answer.error}", file=sys.stderr)
        return answer.exit_code or 1
    lines, code = answer.report(ns.cmd, ns.json)
    for line in lines:
        print(line)
    return code


async def _wait(redis: BlockingRedis, queue: JobQueue, host: str, job: str, key: str,
                what: str) -> bytes | None:
    """The answer pushed to `key`; None when nobody will push one: every worker of the host
    stopped, or the job ended without answering (a worker that does not know `observe`, one
    killed in the middle of it: arq drops a job tried once already)."""
    start = time.monotonic()
    said = False
    while True:
        got = redis.call("BLPOP", key, 1, timeout=TIMEOUT + 1)
        if got is not None:
            return got[1]  # type: ignore[no-any-return]
        queued, running = await queue.job_state(job)
        if not queued or (await queue.listening([host]))[host] == 0:
            # the answer is pushed before the job's key goes: it may have come meanwhile
            late = redis.call("LPOP", key)
            if late is None:
                print(f"vpcq: note: no worker of host {host} answered; running it here",
                      file=sys.stderr)
            return late  # type: ignore[no-any-return]
        waited = time.monotonic() - start
        if waited > WAIT:
            raise ConfigError(f"no worker of host {host} answered within {WAIT:.0f} s "
                              f"(`vpcq {what} --here` runs it in this process)")
        if not said and not running and waited > SAY_AFTER:
            print(f"vpcq: waiting for a worker of host {host} (they are busy with other jobs)",
                  file=sys.stderr)
            said = True
