"""The `vpcq` command: parses arguments into commands and calls one submit. No logic here."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from vpcq.cli.parser import UsageError, build


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `vpcq` and `vpcctl`."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build()
    try:
        ns = parser.parse_args(args)
    except UsageError as e:
        print(f"vpcq: error: {e}", file=sys.stderr)
        return 2
    if ns.cmd is None:
        parser.print_help()
        return 0
    kernel_side = ns.cmd in ("worker", "drift", "reconcile") or (
        ns.cmd == "replay" and (ns.dry_run or ns.to_seq is None)
    )
    if kernel_side:
        # these read or change the kernel (pyroute2): run them in a fresh process, not this one
        if ns.cmd == "worker":
            rest = ["run"] + (["--burst"] if ns.burst else [])
        elif ns.cmd == "replay":
            # --dry-run: the plan to the state at SEQ; without it: rebuild the kernel from the log
            rest = ["drift"] if ns.dry_run else ["repair"]
            rest += ["--at", str(ns.to_seq)] if ns.dry_run and ns.to_seq is not None else []
            rest += ["--json"] if ns.json else []
        else:
            rest = ["drift" if ns.cmd == "drift" else "repair", *ns.vpcs]
            rest += ["--json"] if ns.json else []
        verbose = ["-v"] if ns.verbose else []
        os.execv(sys.executable, [sys.executable, "-m", "vpcq.workers", *verbose, *rest])
    import asyncio  # imported late, as the rest: `vpcq --help` stays instant (asyncio: 50 ms)

    from vpcq.cli import commands
    from vpcq.errors import VpcqError

    try:
        return asyncio.run(commands.run(ns))
    except UsageError as e:
        print(f"vpcq: error: {e}", file=sys.stderr)
        return 2
    except VpcqError as e:
        print(f"vpcq: error: {e.where + ': ' if e.where else ''}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
