"""The one model of `iptables-save` text: parsed, rendered, compared and changed as
`iptables-restore --noflush` would change it. Pure: every caller that reads rules (the
namespace rules, the host's chains, the host rules cache, the owned-table cleanup) goes
through it, and unit tests test it without a kernel.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_COUNTERS = re.compile(r"\[\d+:\d+\]")
_DEFAULT_POLICY = re.compile(r"^:[A-Z]+ ACCEPT \[0:0\]$")
# base chains, made by iptables-nft when a rule first goes into one of a new table
BASE = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


def normalise(text: str) -> str:
    """`iptables-save` output as vpcq compares it: no comments, no counters, no blank lines."""
    lines = [_COUNTERS.sub("[0:0]", ln) for ln in text.splitlines() if ln and not ln.startswith("#")]
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass
class Table:
    """One table: its chain declarations (`:CHAIN POLICY [0:0]`, in order) and each
    chain's rules in order, without their `-A CHAIN ` prefix."""

    decls: list[str] = field(default_factory=list)
    rules: dict[str, list[str]] = field(default_factory=dict)

    def declared(self) -> list[str]:
        return [d[1:].split(" ", 1)[0] for d in self.decls]


@dataclass
class Ruleset:
    """Tables by name, in the order `iptables-save` printed them."""

    tables: dict[str, Table] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Ruleset:
        rs = cls()
        t = Table()
        for line in text.splitlines():
            if line.startswith("*"):
                t = rs.tables.setdefault(line[1:], Table())
            elif line.startswith(":"):
                t.decls.append(line)
                t.rules.setdefault(line[1:].split(" ", 1)[0], [])
            elif line.startswith("-A "):
                _, chain, rest = [*line.split(" ", 2), ""][:3]
                t.rules.setdefault(chain, []).append(rest)
        return rs

    def render(self) -> str:
        out: list[str] = []
        for name, t in self.tables.items():
            out += [f"*{name}", *t.decls]
            out += [f"-A {chain} {rest}" for chain in t.rules for rest in t.rules[chain]]
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    def chain(self, table: str, chain: str) -> list[str]:
        """The rules of one chain, in order, without `-A CHAIN`."""
        t = self.tables.get(table)
        return list(t.rules.get(chain, [])) if t is not None else []

    def jumps_to(self, chains: Collection[str]) -> dict[str, set[str]]:
        """For each chain, the rules of other chains that jump to it, as `table:CHAIN rule`."""
        out: dict[str, set[str]] = {c: set() for c in chains}
        for name, t in self.tables.items():
            for chain, rules in t.rules.items():
                if chain in out:
                    continue
                for rest in rules:
                    target = _target(rest)
                    if target in out:
                        out[target].add(f"{name}:{chain} {rest}")
        return out

    def setup(self, chains: Mapping[str, Mapping[str, Sequence[str]]],
              jumps: Iterable[tuple[str, str, str]], marker: str) -> str:
        """A document (for --noflush) that declares each chain in filter and nat with its
        rules (`chains[chain][table]`; a chain that exists is flushed first) and inserts the
        jumps (table, chain, rule) into each chain's block of vpcq jumps (`jump_inserts`). A
        table that does not exist yet gets `marker`, an empty chain that tells `emptied`
        the table is vpcq's to remove once nothing else is in it."""
        doc: list[str] = []
        jumps = list(jumps)
        for table in ("filter", "nat"):
            doc.append(f"*{table}")
            doc += [] if table in self.tables else [f":{marker} - [0:0]"]
            for chain, rules in chains.items():
                doc.append(f":{chain} - [0:0]")
                doc += [f"-A {chain} {rule}" for rule in rules.get(table, ())]
            for chain in sorted({c for t, c, _ in jumps if t == table}):
                new = [rest for t, c, rest in jumps if t == table and c == chain]
                doc += [f"-I {chain} {pos} {rest}"
                        for pos, rest in jump_inserts(self.chain(table, chain), new)]
            doc.append("COMMIT")
        return "\n".join(doc) + "\n"

    def teardown(self, chains: Collection[str]) -> str:
        """A document (for --noflush) removing chains and every rule that jumps to them, in
        every table where they exist; empty if there is nothing to remove."""
        doomed = set(chains)
        doc: list[str] = []
        for name, t in self.tables.items():
            jumps = [f"-D {chain} {rest}" for chain, rules in t.rules.items() if chain not in doomed
                     for rest in rules if _target(rest) in doomed]
            declared = sorted(set(t.declared()) & doomed)
            if jumps or declared:
                doc += [f"*{name}", *jumps, *(f"-F {c}" for c in declared),
                        *(f"-X {c}" for c in declared), "COMMIT"]
        return "\n".join(doc) + "\n" if doc else ""

    def emptied(self, marker: str) -> list[str]:
        """Tables that carry `marker` (an empty chain vpcq declares in a table it brought into
        existence) and hold nothing else any more: accepting base chains only."""
        out = []
        for name, t in self.tables.items():
            if f":{marker} - [0:0]" not in t.decls:
                continue
            rest = [d for d in t.decls if d != f":{marker} - [0:0]"]
            if all(_DEFAULT_POLICY.match(d) for d in rest) and not any(t.rules.values()):
                out.append(name)
        return out

    def after(self, doc: str) -> Ruleset | None:
        """The rules after `iptables-restore --noflush` of `doc`, for the lines vpcq writes:
        a user chain declared (made, or flushed if it exists), rules appended (`-A`),
        inserted (`-I CHAIN POS`) and deleted (`-D`), a chain flushed (`-F`) and removed
        (`-X`). None for anything else, or for a line that would fail. Chains keep their
        rules in order; the lines of different chains may sit in another order than
        iptables-save's."""
        rs = Ruleset({n: Table(list(t.decls), {c: list(r) for c, r in t.rules.items()})
                      for n, t in self.tables.items()})
        t, table = Table(), ""
        for line in doc.splitlines():
            if line in ("COMMIT", ""):
                continue
            if line.startswith("*"):
                t = rs.tables.setdefault(line[1:], Table())
                table = line[1:]
                continue
            if line.startswith(":"):
                chain, _, policy = line[1:].partition(" ")
                if not policy.startswith("- "):
                    return None
                if chain not in t.rules:
                    t.decls.append(f":{chain} - [0:0]")
                t.rules[chain] = []
                continue
            op, _, arg = line.partition(" ")
            chain, _, rest = arg.partition(" ")
            if chain not in t.rules and op in ("-A", "-I") and chain in BASE.get(table, ()):
                t.decls.append(f":{chain} ACCEPT [0:0]")
                t.rules[chain] = []
            if chain not in t.rules:
                return None
            if op == "-F" and not rest:
                t.rules[chain] = []
            elif op == "-X" and not rest:
                in_use = any(_target(r) == chain for rules in t.rules.values() for r in rules)
                if t.rules[chain] or in_use:
                    return None  # iptables refuses to remove a chain in use
                del t.rules[chain]
                t.decls[:] = [d for d in t.decls if not d.startswith(f":{chain} ")]
            elif not _change(t.rules[chain], op, rest):
                return None
        return rs


def transactions(doc: str) -> int:
    """How many tables a restore document commits: each moves the nftables generation by one."""
    return sum(1 for ln in doc.splitlines() if ln == "COMMIT")


def _target(rule: str) -> str:
    """The chain or target a rule jumps to (`-j X` at its end), '' if none."""
    _, sep, target = f" {rule}".rpartition(" -j ")
    return target if sep and " " not in target else ""


def _change(rules: list[str], op: str, rest: str) -> bool:
    """`-A`, `-I POS` or `-D` of one rule on a chain's rules; False if iptables would fail."""
    if not rest:
        return False
    if op == "-A":
        rules.append(rest)
    elif op == "-I":
        pos, _, rule = rest.partition(" ")
        if not pos.isdigit() or not rule or not 1 <= int(pos) <= len(rules) + 1:
            return False
        rules.insert(int(pos) - 1, rule)
    elif op == "-D" and rest in rules:
        rules.remove(rest)
    else:
        return False
    return True


_JUMP = re.compile(r"-j (VPCQ-[0-9a-f]+)$")


def jump_inserts(rules: Iterable[str], new: Iterable[str]) -> list[tuple[int, str]]:
    """`-I` positions that put each new jump into the chain's block of vpcq jumps, sorted.

    A vpcq jump goes before the first vpcq jump that sorts after it, else right after the
    last one, else at the top; rules of other programs keep their places. New rules that
    are already there are left alone.
    """

    def key(rule: str) -> tuple[str, str] | None:
        m = _JUMP.search(rule)
        return (m.group(1), rule) if m else None

    have, out = list(rules), []
    for rule in sorted(set(new) - set(have), key=lambda r: key(r) or ("", r)):
        k, pos, last = key(rule), 0, 0
        for i, existing in enumerate(have, 1):
            ek = key(existing)
            if ek is None:
                continue
            if k is not None and ek > k:
                pos = i
                break
            last = i
        pos = pos or last + 1
        have.insert(pos - 1, rule)
        out.append((pos, rule))
    return out
