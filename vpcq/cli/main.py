"""The `vpcq` command: parses arguments into commands and calls one submit. No logic here."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's, nor collections.abc: `vpcq --help` imports neither

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `vpcq` and `vpcctl`."""
    args = list(sys.argv[1:] if argv is None else argv)
    from vpcq.cli import usage

    if usage.is_overview(args):  # `vpcq`, `vpcq --help`: no parser to build
        print(usage.overview())
        return 0
    from vpcq.cli.parser import RENAMED, REPLACED, UsageError, build, command_of

    parser = build(only=command_of(args))
    try:
        ns = parser.parse_args(args)
    except UsageError as e:
        print(f"vpcq: error: {e}", file=sys.stderr)
        return 2
    if ns.cmd is None:  # only options, -v among them (the overview's case is above)
        print(usage.overview())
        return 0
    if ns.cmd in RENAMED:
        print(f"vpcq: note: `{ns.cmd}` is called `{RENAMED[ns.cmd]}` now", file=sys.stderr)
        ns.cmd = RENAMED[ns.cmd]
    if ns.cmd == "replay" and (ns.dry_run or ns.to_seq is None):
        print(f"vpcq: error: {REPLACED['replay --dry-run' if ns.dry_run else 'replay']}",
              file=sys.stderr)
        return 2
    if ns.cmd in ("drift", "repair") and not ns.here:
        from vpcq.cli import observe  # answered by a worker of this host, if one is up
        from vpcq.errors import VpcqError

        try:
            code = observe.ask(ns)
        except VpcqError as e:
            print(f"vpcq: error: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            return 130
        if code is not None:
            return code
    if ns.cmd in ("worker", "drift", "repair"):
        # these read or change the kernel (pyroute2): run them in a fresh process, not this one
        if ns.cmd == "worker":
            rest = ["run"] + (["--burst"] if ns.burst else [])
        else:
            rest = [ns.cmd, *ns.vpcs]
            rest += ["--at", str(ns.at_seq)] if ns.cmd == "drift" and ns.at_seq is not None else []
            rest += ["--json"] if ns.json else []
        verbose = ["-v"] if ns.verbose else []
        from vpcq.proc import python

        os.chdir("/")  # as every process vpcq starts: -I keeps the cwd off its path
        argv = python("vpcq.workers", *verbose, *rest)
        os.execv(argv[0], argv)
    from vpcq.cli import commands  # imported late, so that `vpcq --help` stays instant
    from vpcq.errors import VpcqError

    try:
        return commands.run(ns)
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
