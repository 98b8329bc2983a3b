"""`vpcq drift` and `vpcq repair`, answered by a running worker of this host.

A worker has what both need already warm: the log folded, a netlink socket in each
namespace it has seen, the rules it last read. A process of its own starts Python, asyncio
and the event models, reads the log from event 1 and opens a socket in every namespace
first: on a host of 1,100 subnets, half of its time. So the CLI queues an `observe` job for
its host's workers and prints the answer the worker pushes; when no worker of the host is
up (or all of them stop before answering), the caller runs it in a process of its own.
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

WAIT = 660.0  # what a worker may take (its job timeout), and some
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
    await queue.observe(host, request, ns.cmd, list(ns.vpcs), getattr(ns, "at_seq", None))
    key = answer_key(request)
    start = time.monotonic()
    said = False
    while True:
        got = redis.call("BLPOP", key, 1, timeout=TIMEOUT + 1)
        if got is not None:
            break
        waited = time.monotonic() - start
        if (await queue.listening([host]))[host] == 0:  # they stopped: it is run here instead
            await queue.withdraw(host, f"observe:{request}")
            return None
        if waited > WAIT:
            await queue.withdraw(host, f"observe:{request}")
            raise ConfigError(f"no worker of host {host} answered within {WAIT:.0f} s "
                             "(`vpcq drift --here` runs it in this process)")
        if not said and waited > SAY_AFTER:
            print(f"vpcq: waiting for a worker of host {host} (they are busy with other jobs)",
                  file=sys.stderr)
            said = True
    try:
        answer = load_answer(got[1])
    except ValueError as e:
        raise ConfigError(f"the answer in {key} is not one a worker writes: {e}") from None
    if answer.error is not None:
        print(f"vpcq: error: {answer.error}", file=sys.stderr)
        return answer.exit_code or 1
    lines, code = answer.report(ns.cmd, ns.json)
    for line in lines:
        print(line)
    return code
