"""What `vpcq --help` says: every command with its one line, grouped, and the tutorial's
scenario as examples. The parser (vpcq.cli.parser) takes each command's line from here.

Printed without argparse: importing it and building every sub-command's parser costs more
than Python's own start, and the overview needs neither.
"""

from __future__ import annotations

import os

DESCRIPTION = ("AWS-style VPCs on this Linux host: every command is an event in a log; "
               "workers build the kernel state from it.")

# (group, [(command, its line)]), in the order they are listed
GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("VPCs", (
        ("create-vpc", "create a VPC (a router namespace with an uplink)"),
        ("add-subnet", "add a public or private subnet (a namespace <vpc>-<subnet>)"),
        ("delete-subnet", "delete a subnet, its namespace and its app"),
        ("deploy-app", "run an HTTP server in a subnet"),
        ("stop-app", "stop a subnet's app"),
        ("apply-firewall", "apply a security group from the tutorial's JSON file"),
        ("peer-vpcs", "peer two VPCs (routes for each other's CIDR only)"),
        ("unpeer-vpcs", "remove a peering"),
        ("delete-vpc", "delete a VPC and everything in it"),
        ("cleanup", "delete every VPC"),
        ("rollback", "append the events that bring one VPC back to how it was at SEQ"),
    )),
    ("services", (
        ("expose", "publish a port: connections to the host on HOST_PORT (from the internet, "
                   "the host, any VPC) reach PORT of a public subnet or of a balancer"),
        ("unexpose", "stop publishing a host port"),
        ("create-lb", "create a load balancer: an address in the VPC, NAME.VPC.internal, that "
                      "spreads connections to --port over the targets that pass their health "
                      "checks"),
        ("set-lb-targets", "replace a load balancer's targets"),
        ("delete-lb", "delete a load balancer (and its public port)"),
    )),
    ("the log", (
        ("submit", "submit one command, or a batch file (one command per line, or a JSON list)"),
        ("list", "show every VPC, subnet, app, peering and kernel name"),
        ("log", "the audit trail: who did what, when"),
        ("status", "the fate of a command"),
        ("replay", "the state as it was right after event SEQ, folded from the log"),
        ("fsck", "check every entry of the log as the readers do: list the ones they "
                 "quarantine (never applied) and a version key that disagrees; exit 1 if any; "
                 "changes nothing"),
    )),
    ("the kernel", (
        ("drift", "list every step that would bring the kernel to the log's state, now or "
                  "right after event SEQ (exit 1 if there is any); changes nothing"),
        ("repair", "bring the kernel back to the log's state: undo drift, rebuild after a "
                   "reboot"),
    )),
    ("the instance", (
        ("up", "start the embedded Redis and N workers under a supervisor that keeps them "
               "running; idempotent: after any crash it brings back what is gone and says "
               "what; returns once Redis answers and the workers take jobs"),
        ("down", "stop the supervisor, the workers (each finishes its change) and the "
                 "embedded Redis, keeping the data; never signals a process vpcq did not "
                 "start"),
        ("worker", "run one worker in the foreground"),
    )),
    ("the console", (
        ("ui", "serve the web console: the live topology, the audit log and time travel "
               "(read-only; on loopback, behind a token it prints)"),
        ("graph", "write the topology the console shows, as DOT, Mermaid or SVG"),
    )),
)  # fmt: skip

COMMANDS: dict[str, str] = {name: line for _, group in GROUPS for name, line in group}

OPTIONS = (("-h, --help", "show this help and exit (COMMAND --help: that command's)"),
           ("-v, --verbose", "also log to stderr"))

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

USAGE = "usage: vpcq [-h] [-v] COMMAND ..."


def is_option(arg: str) -> bool:
    """Whether `arg` is one of vpcq's own options: -h or -v, grouped (-vh), or spelled out
    and abbreviated as argparse reads them (--verb)."""
    if arg.startswith("--"):
        return len(arg) > 2 and ("--help".startswith(arg) or "--verbose".startswith(arg))
    return len(arg) > 1 and arg.startswith("-") and set(arg[1:]) <= {"h", "v"}


def is_overview(args: list[str]) -> bool:
    """Whether these arguments ask for the overview: none, or only vpcq's own options (a
    bare `vpcq` shows it too)."""
    return all(is_option(a) for a in args)


def overview(width: int | None = None) -> str:
    """The text of `vpcq --help`, wrapped to `width` columns (default: the terminal's, as
    argparse wraps, else 80)."""
    if width is None:
        width = _columns() - 2
    width = max(width, 40)
    names = [n for _, group in GROUPS for n, _ in group] + [o for o, _ in OPTIONS]
    col = 2 + max(map(len, names)) + 2
    out = [USAGE, "", *_wrap(DESCRIPTION, width, 0, 0), ""]
    for title, group in GROUPS:
        out += [f"{title}:"] if title == GROUPS[0][0] else ["", f"{title}:"]
        for name, line in group:
            out += _item(name, line, col, width)
    out += ["", "options:"]
    for flags, line in OPTIONS:
        out += _item(flags, line, col, width)
    return "\n".join([*out, "", EPILOG.rstrip("\n")])


def _item(name: str, line: str, col: int, width: int) -> list[str]:
    lines = _wrap(line, width, col, col)
    lines[0] = f"  {name}".ljust(col) + lines[0][col:]
    return lines


def _wrap(text: str, width: int, first: int, rest: int) -> list[str]:
    """`text` in lines of at most `width` columns (a longer word stands alone), the first
    indented by `first` spaces, the others by `rest`."""
    lines: list[str] = []
    current = " " * first
    for word in text.split():
        if current.strip() and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = " " * rest + word
        else:
            current += (" " if current.strip() else "") + word
    return [*lines, current]


def _columns() -> int:
    """The terminal's width: $COLUMNS, else stdout's terminal, else 80 (as shutil says it,
    which argparse asks, without importing shutil)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 80
