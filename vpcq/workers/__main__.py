"""`python -m vpcq.workers`: run one worker (what `vpcq worker` and `vpcq up` start)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from vpcq import config, logs
from vpcq.errors import ConfigError


def main() -> int:
    p = argparse.ArgumentParser(prog="vpcq worker")
    p.add_argument("--name", default="worker")
    p.add_argument("--burst", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    paths = config.paths()
    logs.configure(paths.logs / f"{args.name}.log", verbose=args.verbose)
    host = os.environ.get("VPCQ_NETNS")
    if host:
        from vpcq.workers.kernel import netns

        netns.enter(host)  # before any thread exists, so every thread starts there
    from vpcq.workers.settings import make_worker

    async def run() -> None:
        worker = await make_worker(args.name, args.burst)
        try:
            await worker.async_run()
        finally:
            await worker.close()

    try:
        asyncio.run(run())
    except ConfigError as e:
        print(f"vpcq worker: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
