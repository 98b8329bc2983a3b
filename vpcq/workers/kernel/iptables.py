"""Rules through iptables-restore (nftables backend): one atomic restore per document, run
in the namespace by a thread that entered it (so no `ip netns exec`), while the event loop
goes on. The `_here` functions run in the calling thread's namespace, for work that is
already on such a thread. No shell, ever."""

from __future__ import annotations

import functools
import shutil
import subprocess

from vpcq.errors import KernelError
from vpcq.workers.kernel import netns
from vpcq.workers.kernel.ruleset import normalise


@functools.cache
def _exe(name: str) -> str:
    """The program's path, found once (not by an exec of every $PATH entry per call)."""
    return shutil.which(name) or name


def _run(argv: list[str], stdin: str | None, where: str) -> subprocess.CompletedProcess[str]:
    """Run a rules program in the calling thread's namespace (`where` names it in errors)."""
    argv = [_exe(argv[0]), *argv[1:]]
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(argv[0], f"rules in {where}", str(e)) from e


@functools.cache
def nft_backend() -> bool:
    """iptables is iptables-nft (so rule changes show in the nftables generation)."""
    try:
        p = subprocess.run(["iptables", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "nf_tables" in p.stdout


def restore_here(text: str, *, noflush: bool = False, where: str = "host") -> None:
    """Apply an iptables-restore document atomically (each table is one transaction), in
    the calling thread's namespace."""
    argv = ["iptables-restore", "-w", "5"] + (["--noflush"] if noflush else [])
    p = _run(argv, text, where)
    if p.returncode != 0:
        msg = " ".join(p.stderr.strip().split())[:300]
        raise KernelError("apply", f"rules in {where}", msg or f"exit {p.returncode}")


def save_here(where: str = "host") -> str:
    """`iptables-save` of the calling thread's namespace, normalised: no comments, no
    counters."""
    p = _run(["iptables-save"], None, where)
    if p.returncode != 0:
        raise KernelError("read", f"rules in {where}", p.stderr.strip()[:300])
    return normalise(p.stdout)


async def restore(ns: str | None, text: str, *, noflush: bool = False) -> None:
    """`restore_here` in namespace `ns` (None: the host), the event loop going on meanwhile."""
    await netns.arun_in(ns, lambda: restore_here(text, noflush=noflush, where=ns or "host"))


async def save(ns: str | None) -> str:
    """`save_here` in namespace `ns` (None: the host), the event loop going on meanwhile."""
    return await netns.arun_in(ns, lambda: save_here(ns or "host"))


def drop_tables_here(tables: list[str], where: str = "host") -> None:
    """Delete these tables (of the ip family) in the calling thread's namespace; one that is
    gone already is fine."""
    for table in tables:
        p = _run(["nft", "delete", "table", "ip", table], None, where)
        if p.returncode != 0 and "No such file or directory" not in p.stderr:
            raise KernelError("delete", f"table ip {table} in {where}", p.stderr.strip())
