"""Rules through iptables-restore (nftables backend): one atomic restore per document, run
in the namespace by a thread that entered it (so no `ip netns exec`). No shell, ever."""

from __future__ import annotations

import re
import subprocess

from vpcq.errors import KernelError
from vpcq.workers.kernel import netns

_COUNTERS = re.compile(r"\[\d+:\d+\]")


def _run(ns: str | None, argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    def work() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)

    try:
        return netns.run_in(ns, work)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(argv[0], f"rules in {ns or 'host'}", str(e)) from e


def restore(ns: str | None, text: str, *, noflush: bool = False) -> None:
    """Apply an iptables-restore document atomically (each table is one transaction)."""
    argv = ["iptables-restore", "-w", "5"] + (["--noflush"] if noflush else [])
    p = _run(ns, argv, text)
    if p.returncode != 0:
        msg = " ".join(p.stderr.strip().split())[:300]
        raise KernelError("apply", f"rules in {ns or 'host'}", msg or f"exit {p.returncode}")


def save(ns: str | None, table: str | None = None) -> str:
    """`iptables-save` normalised: no comments, no counters."""
    argv = ["iptables-save"] + (["-t", table] if table else [])
    p = _run(ns, argv, None)
    if p.returncode != 0:
        raise KernelError("read", f"rules in {ns or 'host'}", p.stderr.strip()[:300])
    return normalise(p.stdout)


def normalise(text: str) -> str:
    lines = [_COUNTERS.sub("[0:0]", ln) for ln in text.splitlines() if ln and not ln.startswith("#")]
    return "\n".join(lines) + ("\n" if lines else "")
