"""The host's rules as `iptables-save` prints them, read as rarely as possible.

The host holds every VPC's chains, so its `iptables-save` grows with the VPCs: measured in a
throwaway namespace, 4.7 ms with 1 VPC, 16 ms with 100, 52 ms with 400, where a restore stays
at 5 to 7 ms. Each VPC change on the host needs the text (to observe its chain, and to place
its jumps), so reading it every time made a batch's cost grow with the square of its VPCs.

The text is kept with the key it was read at: the host namespace's cookie and its nftables
generation, which every committed rule change moves (vpcq's, another program's or a hand
edit's), one per table. It is valid exactly while the key is the same. The key and text are
also kept in a file that every worker of this host shares, so a change made by one worker
does not make the next worker read the table again. The file outlives a reboot, and both
halves of the key start over (cookies and generations count from boot), so the file also
names the boot it was written in. After a restore of its own, a worker applies the document
to the text it held, which is valid if the generation moved by exactly one per table of the
document: nobody else wrote in between.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from vpcq.workers.kernel import iptables, rtnl

Key = tuple[int, int]  # (cookie of the host's network namespace, nftables generation)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"  # never equal to a real boot's id, nor kept across one


BOOT_ID = _boot_id()


class HostRules:
    """The host's rules, on threads in the host namespace (the `_here` convention)."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared  # the file this host's workers share
        self._seen: tuple[Key, str] | None = None

    def read_here(self) -> tuple[Key | None, str]:
        """The host's rules and the key they are valid at (None: nftables cannot tell, and
        the text was read now)."""
        key = key_here()
        if key is None:
            return None, iptables.save_here()
        seen = self._seen
        if seen is not None and seen[0] == key:
            return key, seen[1]
        text = self._load(key)
        if text is not None:
            self._seen = (key, text)
            return key, text
        text = iptables.save_here()
        if key_here() == key:  # nothing changed while it was read
            self._keep(key, text)
        return key, text

    def cached(self, gen: int | None) -> str | None:
        """The text this process holds, if it is valid at generation `gen` of the calling
        thread's namespace (the host's): no thread hop for a warm read."""
        seen = self._seen
        if gen is None or seen is None or seen[0] != (rtnl.cookie_here(), gen):
            return None
        return seen[1]

    def restore_here(self, key: Key | None, text: str, doc: str) -> None:
        """`iptables-restore --noflush` of `doc`, made from `text` read at `key`; the text
        after it is kept when nobody else changed a rule meanwhile."""
        iptables.restore_here(doc, noflush=True)
        if key is None:
            return
        now = key_here()
        tables = sum(1 for ln in doc.splitlines() if ln == "COMMIT")
        if now == (key[0], key[1] + tables):
            after = after_restore(text, doc)
            if after is not None:
                self._keep(now, after)

    def _keep(self, key: Key, text: str) -> None:
        self._seen = (key, text)
        tmp = self.shared.with_name(f".{self.shared.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            tmp.write_text(f"{BOOT_ID} {key[0]} {key[1]}\n{text}")
            os.replace(tmp, self.shared)  # readers see the old file or the new, never half
        except OSError:
            tmp.unlink(missing_ok=True)  # only a cache: the next reader reads the table

    def _load(self, key: Key) -> str | None:
        try:
            head, _, text = self.shared.read_text().partition("\n")
            boot, cookie, gen = head.split()
            written = (int(cookie), int(gen))
        except (OSError, ValueError):
            return None  # missing, or written by an older vpcq: read the table
        return text if boot == BOOT_ID != "unknown" and written == key else None


def key_here() -> Key | None:
    """The calling thread's namespace cookie and nftables generation."""
    gen = rtnl.generation_here() if iptables.nft_backend() else None
    return None if gen is None else (rtnl.cookie_here(), gen)


# base chains, made by iptables-nft when a rule first goes into one of a new table
_BASE = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


def after_restore(save_text: str, doc: str) -> str | None:
    """The rules `save_text` becomes after `iptables-restore --noflush` of `doc`, for the
    lines vpcq writes: a user chain declared (made, or flushed if it exists), rules appended
    (`-A`), inserted (`-I CHAIN POS`) and deleted (`-D`), a chain flushed (`-F`) and removed
    (`-X`). None for anything else, or for a line that would fail. Chains keep their rules
    in order; the lines of different chains may sit in another order than iptables-save's."""
    tables = _parse(save_text)
    table = ""
    decls: list[str] = []
    rules: dict[str, list[str]] = {}
    for line in doc.splitlines():
        if line in ("COMMIT", ""):
            continue
        if line.startswith("*"):
            table = line[1:]
            decls, rules = tables.setdefault(table, ([], {}))
            continue
        if line.startswith(":"):
            chain, _, policy = line[1:].partition(" ")
            if not policy.startswith("- "):
                return None
            if chain not in rules:
                decls.append(f":{chain} - [0:0]")
            rules[chain] = []
            continue
        op, _, arg = line.partition(" ")
        chain, _, rest = arg.partition(" ")
        if chain not in rules and op in ("-A", "-I") and chain in _BASE.get(table, ()):
            decls.append(f":{chain} ACCEPT [0:0]")
            rules[chain] = []
        if chain not in rules:
            return None
        if op == "-F" and not rest:
            rules[chain] = []
        elif op == "-X" and not rest:
            if rules[chain] or any(f" {r}".endswith(f" -j {chain}") for rs in rules.values() for r in rs):
                return None  # iptables refuses to remove a chain in use
            del rules[chain]
            decls[:] = [d for d in decls if not d.startswith(f":{chain} ")]
        elif not _change(rules[chain], op, rest):
            return None
    out: list[str] = []
    for table, (decls, rules) in tables.items():
        out += [f"*{table}", *decls]
        out += [f"-A {chain} {rest}" for chain in rules for rest in rules[chain]]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


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


def _parse(save_text: str) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """table -> (chain declarations, chain -> its rules in order)."""
    tables: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
    decls: list[str] = []
    rules: dict[str, list[str]] = {}
    for line in save_text.splitlines():
        if line.startswith("*"):
            decls, rules = tables.setdefault(line[1:], ([], {}))
        elif line.startswith(":"):
            decls.append(line)
            rules.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            _, chain, rest = line.split(" ", 2)
            rules.setdefault(chain, []).append(rest)
    return tables
