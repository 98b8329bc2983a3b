"""`python -m vpcq.workers`: run a worker, or inspect and repair drift.

The `vpcq worker`, `vpcq drift` and `vpcq repair` commands exec this module, so the CLI
process itself never imports pyroute2. With $VPCQ_NETNS set, everything runs as if that
namespace were the host (used by the tests and the demo).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from vpcq import config, logs, proc
from vpcq.errors import ConfigError, VpcqError


def main() -> int:
    p = argparse.ArgumentParser(prog="vpcq worker")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="run a worker (the default)")
    run.add_argument("--name", default="worker")
    run.add_argument("--burst", action="store_true")
    run.add_argument("--lock", type=Path, help="hold this lock while running (the supervisor "
                     "knows its workers by it); exit at once if another process holds it")
    for name in ("drift", "repair"):
        d = sub.add_parser(name)
        d.add_argument("vpcs", nargs="*")
        d.add_argument("--json", action="store_true")
        if name == "drift":
            d.add_argument("--at", type=int, help="compare with the state right after this event")
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("--"):
        argv = ["run", *argv]
    args = p.parse_args(argv)
    name = getattr(args, "name", args.cmd)
    try:
        config.check_home(config.paths())
    except ConfigError as e:
        print(f"vpcq: error: {e}", file=sys.stderr)
        return e.exit_code
    logs.configure(config.paths().logs / f"{name}.log", verbose=args.verbose)
    host = os.environ.get("VPCQ_NETNS")
    try:
        from vpcq.workers.kernel import netlink, netns

        netlink.raise_descriptor_limit()  # before the Kernel sizes its socket cache by it
        if host:
            netns.enter(host)  # before any thread exists, so every thread starts there
        if args.cmd == "run":
            if args.lock is not None and proc.HeldLock.take(args.lock) is None:
                print(f"vpcq: {args.name} runs already ({args.lock} is held)", file=sys.stderr)
                return 0
            asyncio.run(_run(args.name, args.burst))
            return 0
        return asyncio.run(_drift(args))
    except VpcqError as e:
        print(f"vpcq: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 0


async def _run(name: str, burst: bool) -> None:
    """Run a worker; when Redis goes away (killed, restarting), wait for it and go on."""
    import structlog
    from redis.exceptions import RedisError

    from vpcq.workers.process import make_worker

    log = structlog.get_logger("vpcq.worker")
    pause = 0.2
    while True:
        try:
            worker = await make_worker(name, burst)
        except VpcqError as e:  # Redis is not back yet
            log.warning("cannot reach Redis; trying again", error=str(e), seconds=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        pause = 0.2
        try:
            await worker.async_run()
            return
        except asyncio.CancelledError:
            # arq ends its main task by cancelling it on SIGTERM/SIGINT: a clean stop, exit 0
            if worker.main_task is None or not worker.main_task.cancelled():
                raise
            return
        except (RedisError, OSError) as e:
            # its jobs' leases lapse and another worker (or this one, once back) takes them
            log.warning("lost Redis; reconnecting", error=str(e))
        finally:
            await worker.close()


async def _drift(args: Any) -> int:
    from vpcq.events.jobs import Answer
    from vpcq.events.text import escape
    from vpcq.workers.controller import make_controller

    controller, redis = await make_controller("drift")
    try:
        if args.cmd == "drift":
            steps = await controller.drift(args.vpcs, args.at)
        else:
            steps = await controller.repair_when_free(args.vpcs)
    finally:
        controller.kernel.close()
        await redis.aclose()
    # a step may name what someone else put in the kernel: shown escaped, as a worker's are
    lines, code = Answer([(s.op, escape(s.describe())) for s in steps]).report(args.cmd, args.json)
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
