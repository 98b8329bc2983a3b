"""Rules through iptables-restore (nftables backend): one atomic restore per document, run
in the namespace by a thread that entered it (so no `ip netns exec`), while the event loop
goes on. No shell, ever."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from vpcq.errors import KernelError
from vpcq.workers.kernel import netns

_COUNTERS = re.compile(r"\[\d+:\d+\]")


@functools.cache
def _exe(name: str) -> str:
    """The program's path, found once (not by an exec of every $PATH entry per call)."""
    return shutil.which(name) or name


async def _run(ns: str | None, argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    argv = [_exe(argv[0]), *argv[1:]]

    def work() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)

    try:
        return await netns.arun_in(ns, work)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(argv[0], f"rules in {ns or 'host'}", str(e)) from e


@functools.cache
def nft_backend() -> bool:
    """iptables is iptables-nft (so rule changes show in the nftables generation)."""
    try:
        p = subprocess.run(["iptables", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "nf_tables" in p.stdout


async def restore(ns: str | None, text: str, *, noflush: bool = False) -> None:
    """Apply an iptables-restore document atomically (each table is one transaction)."""
    argv = ["iptables-restore", "-w", "5"] + (["--noflush"] if noflush else [])
    p = await _run(ns, argv, text)
    if p.returncode != 0:
        msg = " ".join(p.stderr.strip().split())[:300]
        raise KernelError("apply", f"rules in {ns or 'host'}", msg or f"exit {p.returncode}")


async def save(ns: str | None, table: str | None = None) -> str:
    """`iptables-save` normalised: no comments, no counters."""
    argv = ["iptables-save"] + (["-t", table] if table else [])
    p = await _run(ns, argv, None)
    if p.returncode != 0:
        raise KernelError("read", f"rules in {ns or 'host'}", p.stderr.strip()[:300])
    return normalise(p.stdout)


def normalise(text: str) -> str:
    lines = [_COUNTERS.sub("[0:0]", ln) for ln in text.splitlines() if ln and not ln.startswith("#")]
    return "\n".join(lines) + ("\n" if lines else "")


_DEFAULT_POLICY = re.compile(r"^:[A-Z]+ ACCEPT \[0:0\]$")


async def drop_owned_tables(ns: str | None, marker: str) -> None:
    """Delete each table that carries vpcq's owner tag and holds nothing else any more.

    Only a table that vpcq created (tagged) and that is back to empty accepting base chains
    is removed: anything another program added keeps the table where it is.
    """
    text = await save(ns)
    tables: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = []
        elif line != "COMMIT" and current:
            tables[current].append(line)
    for table, lines in tables.items():
        if f":{marker} - [0:0]" not in lines:
            continue
        rest = [ln for ln in lines if ln != f":{marker} - [0:0]"]
        if all(_DEFAULT_POLICY.match(ln) for ln in rest):
            p = await _run(ns, ["nft", "delete", "table", "ip", table], None)
            if p.returncode != 0 and "No such file or directory" not in p.stderr:  # gone: fine
                raise KernelError("delete", f"table ip {table} in {ns or 'host'}", p.stderr.strip())
