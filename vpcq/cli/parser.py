"""The argument grammar: one parser for the command line, `submit` and batch files."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # not typing's: importing typing adds 2 ms to every command's start

if TYPE_CHECKING:
    from typing import Any, NoReturn

EPILOG = """\
examples (the tutorial's scenario):
  vpcq up --workers 2
  vpcq create-vpc my-vpc 10.0.0.0/16
  vpcq add-subnet my-vpc web-subnet 10.0.1.0/24 --type public
  vpcq add-subnet my-vpc db-subnet 10.0.2.0/24 --type private
  vpcq deploy-app my-vpc web-subnet --port 8000
  vpcq apply-firewall my-vpc web-subnet rules.json
  vpcq create-vpc other-vpc 10.1.0.0/16 && vpcq peer-vpcs my-vpc other-vpc
  vpcq expose my-vpc web-subnet 8000 --host-port 8080
  vpcq create-lb my-vpc web-lb --port 80 --target web-subnet:8000 --target db-subnet:8000
  vpcq list
  vpcq log --vpc my-vpc
  vpcq cleanup
"""


class UsageError(Exception):
    """A command line that does not parse; carries argparse's message."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so batch lines can be checked."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


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


def _cmd(sub: Any, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_, description=help_, epilog=f"example:\n  {example}",
        formatter_class=_fmt(),
    )
    return p


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true", help="print the command id and return")
    p.add_argument("--timeout", type=seconds, default=120.0, help="seconds to wait (default 120)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_mutations(sub: Any, *, with_flags: bool) -> None:
    """The commands that change VPCs (also valid as `submit` arguments and batch lines)."""
    specs: list[tuple[str, str, str, list[tuple[tuple[str, ...], dict[str, Any]]]]] = [
        ("create-vpc", "create a VPC (a router namespace with an uplink)",
         "vpcq create-vpc my-vpc 10.0.0.0/16 --interface eth0",
         [(("name",), {}), (("cidr",), {}),
          (("--interface",), {"help": "internet interface for NAT (default: $VPCQ_UPLINK, "
                                      "else the default route's)"}),
          (("--host",), {"default": "default", "help": "the host whose workers build it, when "
                                                       "several hosts share one Redis (their "
                                                       "$VPCQ_HOST; default: default)"}),
          (("--dns-upstream",), {"metavar": "ADDR", "help": "where its public subnets' resolver "
                                 "sends names outside the VPC: an address, or none (default: "
                                 "$VPCQ_DNS_UPSTREAM of its workers, else the host's resolver)"})]),
        ("add-subnet", "add a public or private subnet (a namespace <vpc>-<subnet>)",
         "vpcq add-subnet my-vpc web-subnet 10.0.1.0/24 --type public",
         [(("vpc",), {}), (("name",), {}), (("cidr",), {}),
          (("--type",), {"default": "private", "help": "public|private (default private)"})]),
        ("delete-subnet", "delete a subnet, its namespace and its app",
         "vpcq delete-subnet my-vpc db-subnet", [(("vpc",), {}), (("name",), {})]),
        ("deploy-app", "run an HTTP server in a subnet",
         "vpcq deploy-app my-vpc web-subnet --port 8000",
         [(("vpc",), {}), (("subnet",), {}),
          (("--port",), {"type": int, "default": 8000, "help": "TCP port (default 8000)"})]),
        ("stop-app", "stop a subnet's app", "vpcq stop-app my-vpc web-subnet",
         [(("vpc",), {}), (("subnet",), {})]),
        ("apply-firewall", "apply a security group from the tutorial's JSON file",
         "vpcq apply-firewall my-vpc web-subnet rules.json",
         [(("vpc",), {}), (("subnet",), {}), (("file",), {"help": "JSON rules file, - for stdin"})]),
        ("peer-vpcs", "peer two VPCs (routes for each other's CIDR only)",
         "vpcq peer-vpcs my-vpc other-vpc", [(("a",), {}), (("b",), {})]),
        ("unpeer-vpcs", "remove a peering", "vpcq unpeer-vpcs my-vpc other-vpc",
         [(("a",), {}), (("b",), {})]),
        ("delete-vpc", "delete a VPC and everything in it", "vpcq delete-vpc my-vpc",
         [(("name",), {})]),
        ("cleanup", "delete every VPC", "vpcq cleanup",
         [(("--host",), {"help": "only the VPCs of this host (needed when VPCs are on several)"})]),
        ("expose", "publish a port: connections to the host on HOST_PORT (from the internet, the "
         "host, any VPC) reach PORT of a public subnet or of a balancer",
         "vpcq expose my-vpc web-subnet 8000 --host-port 8080",
         [(("vpc",), {}), (("target",), {"metavar": "SUBNET|BALANCER"}),
          (("port",), {"type": int}),
          (("--host-port",), {"type": int, "help": "the host's port (default: PORT)"}),
          (("--protocol",), {"default": "tcp", "help": "tcp|udp (default tcp)"})]),
        ("unexpose", "stop publishing a host port", "vpcq unexpose my-vpc --host-port 8080",
         [(("vpc",), {}), (("--host-port",), {"type": int, "required": True}),
          (("--protocol",), {"default": "tcp", "help": "tcp|udp (default tcp)"})]),
        ("create-lb", "create a load balancer: an address in the VPC, NAME.VPC.internal, that "
         "spreads connections to --port over the targets that pass their health checks",
         "vpcq create-lb my-vpc web-lb --port 80 --target web-subnet:8000 "
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
        ("set-lb-targets", "replace a load balancer's targets", "vpcq set-lb-targets my-vpc web-lb "
         "--target web-subnet:8000", [(("vpc",), {}), (("name",), {}),
                                      (("--target",), {"action": "append", "dest": "targets",
                                                       "required": True, "metavar": "SUBNET:PORT"})]),
        ("delete-lb", "delete a load balancer (and its public port)", "vpcq delete-lb my-vpc web-lb",
         [(("vpc",), {}), (("name",), {})]),
        ("rollback", "append the events that bring one VPC back to how it was at SEQ",
         "vpcq rollback my-vpc --to 42",
         [(("vpc",), {}), (("--to",), {"type": _seq, "required": True, "dest": "to_seq",
                                        "metavar": "SEQ"})]),
    ]  # fmt: skip
    for name, help_, example, args in specs:
        p = _cmd(sub, name, help_, example)
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


def build() -> Parser:
    """The `vpcq` parser."""
    p = Parser(
        prog="vpcq",
        description="AWS-style VPCs on this Linux host: every command is an event in a log; "
        "workers build the kernel state from it.",
        epilog=EPILOG,
        formatter_class=_fmt(),
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also log to stderr")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    add_mutations(sub, with_flags=True)

    s = _cmd(sub, "submit", "submit one command, or a batch file (one command per line, or a "
             "JSON list)",
             "vpcq submit create-vpc prod 10.1.0.0/16   |   vpcq submit -f batch.txt\n"
             "  echo '[\"create-vpc a 10.2.0.0/16\", {\"kind\": \"create-vpc\", \"name\": \"b\", "
             "\"cidr\": \"10.3.0.0/16\"}]' | vpcq submit -f -")
    s.add_argument("-f", "--file", help="batch file: one command per line (# comments), or a JSON "
                   "list of command lines and {\"kind\": ...} objects; - for stdin")
    s.add_argument("words", nargs=argparse.REMAINDER, help="a command and its arguments")
    _wait_flags(s)

    p_list = _cmd(sub, "list", "show every VPC, subnet, app, peering and kernel name",
                  "vpcq list --json")
    p_list.add_argument("--json", action="store_true")
    lg = _cmd(sub, "log", "the audit trail: who did what, when", "vpcq log --vpc my-vpc --since 10")
    lg.add_argument("--vpc")
    lg.add_argument("--since", type=_seq, default=0, metavar="SEQ", help="events after SEQ")
    lg.add_argument("--json", action="store_true", help="one JSON event per line")
    st = _cmd(sub, "status", "the fate of a command", "vpcq status 3f2a9c01d4e5b6a7")
    st.add_argument("command_id")
    st.add_argument("--json", action="store_true")
    rp = _cmd(sub, "replay", "the state as it was right after event SEQ, folded from the log",
              "vpcq replay --to 12 --json")
    rp.add_argument("--to", type=_seq, dest="to_seq", metavar="SEQ", help="the event to stop at")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # see REPLACED

    fk = _cmd(sub, "fsck", "check every entry of the log as the readers do: list the ones they "
              "quarantine (never applied) and a version key that disagrees; exit 1 if any; "
              "changes nothing", "vpcq fsck --json")
    fk.add_argument("--json", action="store_true", help="one JSON object per problem")
    dr = _cmd(sub, "drift", "list every step that would bring the kernel to the log's state, now "
              "or right after event SEQ (exit 1 if there is any); changes nothing",
              "vpcq drift my-vpc   |   vpcq drift --at 12")
    dr.add_argument("vpcs", nargs="*", metavar="VPC", help="default: every VPC of this host")
    dr.add_argument("--at", type=_seq, dest="at_seq", metavar="SEQ",
                    help="compare with the state right after this event")
    dr.add_argument("--json", action="store_true", help="one JSON step per line")
    repair = "bring the kernel back to the log's state: undo drift, rebuild after a reboot"
    for rc in (_cmd(sub, "repair", repair, "vpcq repair my-vpc"),
               # its old name: it works, and is not listed (a sub-command without help=)
               sub.add_parser("reconcile", description=repair, formatter_class=_fmt())):
        rc.add_argument("vpcs", nargs="*", metavar="VPC", help="default: every VPC of this host")
        rc.add_argument("--json", action="store_true", help="one JSON step per line")

    up = _cmd(sub, "up", "start the embedded Redis and N workers under a supervisor that keeps "
              "them running; idempotent: after any crash it brings back what is gone and says "
              "what; returns once Redis answers and the workers take jobs", "vpcq up --workers 2")
    up.add_argument("--workers", type=_count, default=1, metavar="N",
                    help="workers of this host ($VPCQ_HOST) to have running (default 1)")
    _cmd(sub, "down", "stop the supervisor, the workers (each finishes its change) and the "
         "embedded Redis, keeping the data; never signals a process vpcq did not start",
         "vpcq down")
    w = _cmd(sub, "worker", "run one worker in the foreground", "vpcq worker")
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    add_console(sub)
    return p


# ---- the console (docs/architecture.md) ---------------------------------------------------------

CONSOLE = {"ui", "graph"}
GRAPH_FORMATS = ("dot", "mermaid", "svg")  # vpcq.console.export.FORMATS, not imported here


def add_console(sub: Any) -> None:
    """`vpcq ui` and `vpcq graph`: pictures of the log, read-only."""
    ui = _cmd(sub, "ui", "serve the web console: the live topology, the audit log and time travel "
              "(read-only; on loopback, behind a token it prints)",
              "vpcq ui   |   vpcq ui --listen 127.0.0.1:9000")
    ui.add_argument("--listen", default="127.0.0.1:8470", metavar="HOST:PORT",
                    help="where to listen (default 127.0.0.1:8470; port 0: any free port)")
    g = _cmd(sub, "graph", "write the topology the console shows, as DOT, Mermaid or SVG",
             "vpcq graph --format svg -o net.svg   |   vpcq graph --at 12 | dot -Tpng > then.png")
    g.add_argument("--format", choices=GRAPH_FORMATS, default="dot", help="default dot")
    g.add_argument("--at", type=_count, metavar="SEQ", dest="at_seq",
                   help="the network as it was right after event SEQ")
    g.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


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
