"""`vpcq --help` is printed without argparse, and a command line is parsed by a parser that
knows only its own command: both must say what the full parser says."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from vpcq.cli import usage
from vpcq.cli.parser import UsageError, build, command_of


def _choices(p: argparse.ArgumentParser) -> dict[str, str | None]:
    """The full parser's sub-commands and the help line each is listed with (None: unlisted)."""
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {a.dest: a.help for a in sub._choices_actions}
    return {name: listed.get(name) for name in sub.choices}


def test_the_overview_lists_every_command_of_the_parser_with_its_line():
    choices = _choices(build())
    assert {n for n, h in choices.items() if h is not None} == set(usage.COMMANDS)
    assert [n for n, h in choices.items() if h is None] == ["reconcile"]  # the old name
    text = " ".join(usage.overview(width=100).split())
    for name, line in usage.COMMANDS.items():
        assert choices[name] == line
        assert f"{name} {line}" in text, name


@pytest.mark.parametrize("width", [40, 60, 100, 200])
def test_the_overview_fits_its_width(width):
    lines = usage.overview(width=width).splitlines()
    for line in lines:
        assert len(line) <= width or line.startswith("  vpcq "), line  # examples stay whole
    assert lines[0] == usage.USAGE


@pytest.mark.parametrize("argv", [
    ["create-vpc", "a", "10.0.0.0/16", "--interface", "eth0"],
    ["-v", "add-subnet", "a", "web", "10.0.1.0/24", "--type", "public", "--no-wait"],
    ["create-lb", "a", "lb", "--port", "80", "--target", "web:8000", "--target", "db:8000"],
    ["rollback", "a", "--to", "3"],
    ["submit", "create-vpc", "b", "10.1.0.0/16"],
    ["submit", "-f", "-", "--json"],
    ["list", "--json"], ["log", "--vpc", "a", "--since", "4"], ["status", "abc"],
    ["replay", "--to", "7"], ["fsck"], ["drift", "a", "--at", "2"], ["repair", "a", "b"],
    ["reconcile", "--json"], ["up", "--workers", "2"], ["down"], ["worker", "--burst"],
    ["ui", "--listen", "127.0.0.1:0"], ["graph", "--format", "svg", "-o", "x.svg"],
])  # fmt: skip
def test_a_command_line_parses_the_same_with_its_own_parser(argv):
    name = command_of(argv)
    assert name == next(a for a in argv if not a.startswith("-"))
    assert vars(build(only=name).parse_args(argv)) == vars(build().parse_args(argv))


def test_a_word_that_is_no_command_gets_the_full_parser_and_its_list():
    assert command_of(["nope"]) is None and command_of(["-v"]) is None
    for argv in (["-", "list"], ["--", "list"], ["-1", "list"], ["--x", "list"]):
        assert command_of(argv) is None, argv  # argparse's own error, with every command
    for argv in (["-v", "list"], ["--verb", "list"], ["-vh", "list"], ["--verbose", "list"]):
        assert command_of(argv) == "list", argv
        assert usage.is_overview(argv[:1]) and not usage.is_overview(argv)
    assert not any(usage.is_overview([a]) for a in ("-", "--", "-1", "--x", "--helpme"))
    with pytest.raises(UsageError, match=r"invalid choice: 'nope' .*'create-vpc'.*'graph'"):
        build(only=command_of(["nope"])).parse_args(["nope"])


def test_help_loads_no_argparse_and_says_the_overview():
    code = ("import sys\nfrom vpcq.cli.main import main\nmain(['--help'])\n"
            "print(sorted(m for m in ('argparse', 'typing', 'collections.abc', 'pydantic') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       cwd="/", env={"COLUMNS": "100"}, check=True)
    assert p.stdout.splitlines()[-1] == "[]"
    assert p.stdout.removesuffix("[]\n") == usage.overview(width=98) + "\n"
