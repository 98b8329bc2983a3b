"""The argument grammar: one parser for the command line, `submit` and batch files."""

from __future__ import annotations

import argparse

from vpcq.cli.usage import COMMANDS, DESCRIPTION, EPILOG, is_option, overview

TYPE_CHECKING = False  # not typing's: importing typing adds 2 ms to every command's start

if TYPE_CHECKING:
    from typing import Any, NoReturn


class UsageError(Exception):
    """A command line that does not parse; carries argparse's message."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so batch lines can be checked."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class TopParser(Parser):
    """`vpcq` itself: its help is the overview main.py prints without building any parser."""

    def format_help(self) -> str:
        return overview() + "\n"


def _count(text: str) -> int:
    """A number of things: 0 or more."""
    n = int(text)
    if n < 0:
        raise ValueError(text)
    return n


_count.__name__ = "count"  # argparse names the type in its error: "invalid count value: '-1'"

MAX_SEQ = 2**53  # what the log's numbers hold exactly (Lua's doubles)


def _seq(text: str) -> int:
    """A position in the log: 0 to 2**53."""
    n = int(text)
    if not 0 <= n <= MAX_SEQ:
        raise ValueError(text)
    return n


_seq.__name__ = "sequence number"

MAX_WAIT = 86400.0


def seconds(text: str) -> float:
    """A wait: a finite number of seconds, above 0 and at most a day (not nan, not inf)."""
    s = float(text)
    if not 0 < s <= MAX_WAIT:  # nan compares false with everything
        raise ValueError(text)
    return s


seconds.__name__ = "seconds (0 to 86400)"


def _fmt() -> type[argparse.RawDescriptionHelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def _cmd(sub: Any, name: str, example: str) -> argparse.ArgumentParser:
    help_ = COMMANDS[name]
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_, description=help_, epilog=f"example:\n  {example}",
        formatter_class=_fmt(),
    )
    return p


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true", help="print the command id and return")
    p.add_argument("--timeout", type=seconds, default=120.0, help="seconds to wait (default 120)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_mutations(sub: Any, *, with_flags: bool, only: str | None = None) -> None:
    """The commands that change VPCs (also valid as `submit` arguments and batch lines); only
    the one named `only`, if given."""
    specs: list[tuple[str, str, list[tuple[tuple[str, ...], dict[str, Any]]]]] = [
        ("create-vpc", "vpcq create-vpc my-vpc 10.0.0.0/16 --interface eth0",
         [(("name",), {}), (("cidr",), {}),
          (("--interface",), {"help": "internet interface for NAT (default: $VPCQ_UPLINK, "
                                      "else the default route's)"}),
          (("--host",), {"default": "default", "help": "the host whose workers build it, when "
                                                       "several hosts share one Redis (their "
                                                       "$VPCQ_HOST; default: default)"}),
          (("--dns-upstream",), {"metavar": "ADDR", "help": "where its public subnets' resolver "
                                 "sends names outside the VPC: an address, or none (default: "
                                 "$VPCQ_DNS_UPSTREAM of its workers, else the host's resolver)"})]),
        ("add-subnet", "vpcq add-subnet my-vpc web-subnet 10.0.1.0/24 --type public",
         [(("vpc",), {}), (("name",), {}), (("cidr",), {}),
          (("--type",), {"default": "private", "help": "public|private (default private)"})]),
        ("delete-subnet", "vpcq delete-subnet my-vpc db-subnet", [(("vpc",), {}), (("name",), {})]),
        ("deploy-app", "vpcq deploy-app my-vpc web-subnet --port 8000",
         [(("vpc",), {}), (("subnet",), {}),
          (("--port",), {"type": int, "default": 8000, "help": "TCP port (default 8000)"})]),
        ("stop-app", "vpcq stop-app my-vpc web-subnet",
         [(("vpc",), {}), (("subnet",), {})]),
        ("apply-firewall", "vpcq apply-firewall my-vpc web-subnet rules.json",
         [(("vpc",), {}), (("subnet",), {}), (("file",), {"help": "JSON rules file, - for stdin"})]),
        ("peer-vpcs", "vpcq peer-vpcs my-vpc other-vpc", [(("a",), {}), (("b",), {})]),
        ("unpeer-vpcs", "vpcq unpeer-vpcs my-vpc other-vpc",
         [(("a",), {}), (("b",), {})]),
        ("delete-vpc", "vpcq delete-vpc my-vpc",
         [(("name",), {})]),
        ("cleanup", "vpcq cleanup",
         [(("--host",), {"help": "only the VPCs of this host (needed when VPCs are on several)"})]),
        ("expose", "vpcq expose my-vpc web-subnet 8000 --host-port 8080",
         [(("vpc",), {}), (("target",), {"metavar": "SUBNET|BALANCER"}),
          (("port",), {"type": int}),
          (("--host-port",), {"type": int, "help": "the host's port (default: PORT)"}),
          (("--protocol",), {"default": "tcp", "help": "tcp|udp (default tcp)"})]),
        ("unexpose", "vpcq unexpose my-vpc --host-port 8080",
         [(("vpc",), {}), (("--host-port",), {"type": int, "required": True}),
          (("--protocol",), {"default": "tcp", "help": "tcp|udp (default tcp)"})]),
        ("create-lb", "vpcq create-lb my-vpc web-lb --port 80 --target web-subnet:8000 "
         "--target db-subnet:8000 --public 8080",
         [(("vpc",), {}), (("name",), {}),
          (("--port",), {"type": int, "required": True, "help": "the port it listens on"}),
          (("--target",), {"action": "append", "dest": "targets", "required": True,
                           "metavar": "SUBNET:PORT", "help": "a subnet of the VPC and its port "
                           "(repeat for each target)"}),
          (("--public",), {"type": int, "metavar": "HOST_PORT",
                           "help": "also publish it on this port of the host (see expose)"}),
          (("--address",), {"help": "its address (default: the VPC's highest outside its "
                                    "subnets)"})]),
        ("set-lb-targets", "vpcq set-lb-targets my-vpc web-lb "
         "--target web-subnet:8000", [(("vpc",), {}), (("name",), {}),
                                      (("--target",), {"action": "append", "dest": "targets",
                                                       "required": True, "metavar": "SUBNET:PORT"})]),
        ("delete-lb", "vpcq delete-lb my-vpc web-lb",
         [(("vpc",), {}), (("name",), {})]),
        ("rollback", "vpcq rollback my-vpc --to 42",
         [(("vpc",), {}), (("--to",), {"type": _seq, "required": True, "dest": "to_seq",
                                        "metavar": "SEQ"})]),
    ]  # fmt: skip
    for name, example, args in specs:
        if only is not None and name != only:
            continue
        p = _cmd(sub, name, example)
        for flags, kw in args:
            p.add_argument(*flags, **kw)
        if with_flags:
            _wait_flags(p)
        p.set_defaults(kind=name)


MUTATIONS = {
    "create-vpc", "add-subnet", "delete-subnet", "deploy-app", "stop-app", "apply-firewall",
    "peer-vpcs", "unpeer-vpcs", "delete-vpc", "cleanup", "rollback",
    "expose", "unexpose", "create-lb", "set-lb-targets", "delete-lb",
}  # fmt: skip


def build(only: str | None = None) -> Parser:
    """The `vpcq` parser; with `only`, one that knows just that sub-command (a command line
    is parsed with the parser of its own command, not all of them: building each costs)."""
    p = TopParser(prog="vpcq", description=DESCRIPTION, epilog=EPILOG, formatter_class=_fmt())
    p.add_argument("-v", "--verbose", action="store_true", help="also log to stderr")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    if only is None or only in MUTATIONS:
        add_mutations(sub, with_flags=True, only=only)
    for name, (example, setup) in _OTHERS.items():
        if only is None or name == only or (name, only) == ("repair", "reconcile"):
            setup(_cmd(sub, name, example), sub)
    return p


def command_of(args: list[str]) -> str | None:
    """The sub-command a command line names: its first word after vpcq's own options, if it
    is one there is. None for anything else (`-`, `--`, an unknown option): the full parser
    says what."""
    word = next((a for a in args if not is_option(a)), None)
    return word if word in COMMANDS or word in RENAMED else None


def _submit(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("-f", "--file", help="batch file: one command per line (# comments), or a JSON "
                   "list of command lines and {\"kind\": ...} objects; - for stdin")
    p.add_argument("words", nargs=argparse.REMAINDER, help="a command and its arguments")
    _wait_flags(p)


def _json(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--json", action="store_true")


def _log(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--vpc")
    p.add_argument("--since", type=_seq, default=0, metavar="SEQ", help="events after SEQ")
    p.add_argument("--json", action="store_true", help="one JSON event per line")


def _status(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("command_id")
    p.add_argument("--json", action="store_true")


def _replay(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--to", type=_seq, dest="to_seq", metavar="SEQ", help="the event to stop at")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # see REPLACED


def _fsck(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per problem")


def _drift(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("vpcs", nargs="*", metavar="VPC", help="default: every VPC of this host")
    p.add_argument("--at", type=_seq, dest="at_seq", metavar="SEQ",
                   help="compare with the state right after this event")
    p.add_argument("--json", action="store_true", help="one JSON step per line")
    _here(p)


def _here(p: argparse.ArgumentParser) -> None:
    p.add_argument("--here", action="store_true",
                   help="run it in this process (as root), not in a running worker of this host")


def _repair(p: argparse.ArgumentParser, sub: Any) -> None:
    # its old name: it works, and is not listed (a sub-command without help=)
    old = sub.add_parser("reconcile", description=COMMANDS["repair"], formatter_class=_fmt())
    for rc in (p, old):
        rc.add_argument("vpcs", nargs="*", metavar="VPC", help="default: every VPC of this host")
        rc.add_argument("--json", action="store_true", help="one JSON step per line")
        _here(rc)


def _up(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--workers", type=_count, default=1, metavar="N",
                   help="workers of this host ($VPCQ_HOST) to have running (default 1)")


def _nothing(p: argparse.ArgumentParser, sub: Any) -> None:
    pass


def _worker(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")


# ---- the console (docs/architecture.md) ---------------------------------------------------------

CONSOLE = {"ui", "graph"}
GRAPH_FORMATS = ("dot", "mermaid", "svg")  # vpcq.console.export.FORMATS, not imported here


def _ui(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--listen", default="127.0.0.1:8470", metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:8470; port 0: any free port)")


def _graph(p: argparse.ArgumentParser, sub: Any) -> None:
    p.add_argument("--format", choices=GRAPH_FORMATS, default="dot", help="default dot")
    p.add_argument("--at", type=_count, metavar="SEQ", dest="at_seq",
                   help="the network as it was right after event SEQ")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


# the other commands, in the order of the overview: (example, what each adds to its parser)
_OTHERS: dict[str, tuple[str, Any]] = {
    "submit": ("vpcq submit create-vpc prod 10.1.0.0/16   |   vpcq submit -f batch.txt\n"
               "  echo '[\"create-vpc a 10.2.0.0/16\", {\"kind\": \"create-vpc\", \"name\": \"b\", "
               "\"cidr\": \"10.3.0.0/16\"}]' | vpcq submit -f -", _submit),
    "list": ("vpcq list --json", _json),
    "log": ("vpcq log --vpc my-vpc --since 10", _log),
    "status": ("vpcq status 3f2a9c01d4e5b6a7", _status),
    "replay": ("vpcq replay --to 12 --json", _replay),
    "fsck": ("vpcq fsck --json", _fsck),
    "drift": ("vpcq drift my-vpc   |   vpcq drift --at 12", _drift),
    "repair": ("vpcq repair my-vpc", _repair),
    "up": ("vpcq up --workers 2", _up),
    "down": ("vpcq down", _nothing),
    "worker": ("vpcq worker", _worker),
    "ui": ("vpcq ui   |   vpcq ui --listen 127.0.0.1:9000", _ui),
    "graph": ("vpcq graph --format svg -o net.svg   |   vpcq graph --at 12 | dot -Tpng > then.png",
              _graph),
}  # fmt: skip


# Old spellings, still typed from habit: what each became. `reconcile` still works (it says
# so on stderr); `replay` without --to and `replay --dry-run` were other commands, so they
# are refused with the one that does it now.
RENAMED = {"reconcile": "repair"}
REPLACED = {
    "replay --dry-run": "`vpcq replay` has no --dry-run any more: `vpcq drift --at SEQ` lists "
                        "the steps that would bring the kernel to the state at SEQ",
    "replay": "`vpcq replay` needs --to SEQ: `vpcq list` shows the state now, and `vpcq repair` "
              "rebuilds the kernel from the log (what a bare `vpcq replay` did)",
}


def command_dict(ns: argparse.Namespace) -> dict[str, Any]:
    """The fields of a mutation's namespace, as a command dict (the file not yet read)."""
    skip = {"cmd", "verbose", "no_wait", "timeout", "json", "kind"}
    d = {k: v for k, v in vars(ns).items() if k not in skip}
    d["kind"] = ns.kind
    return d


def parse_words(words: list[str]) -> dict[str, Any]:
    """Parse one command's words (a `submit` argument list or a batch line)."""
    p = Parser(prog="vpcq submit", add_help=False)
    sub = p.add_subparsers(dest="cmd", parser_class=Parser)
    add_mutations(sub, with_flags=False)
    if not words:
        raise UsageError("no command given")
    if words[0] not in MUTATIONS:
        raise UsageError(f"unknown command {words[0]!r}")
    return command_dict(p.parse_args(words))
