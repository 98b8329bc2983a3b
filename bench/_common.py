"""Shared by the benchmarks: a temporary vpcq instance on its own embedded Redis."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vpcq import config
from vpcq.cli import embedded


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def embedded_redis() -> Iterator[tuple[Path, str]]:
    """Start vpcq's embedded Redis under a temporary $VPCQ_HOME; yields (home, url)."""
    home = Path(tempfile.mkdtemp(prefix="vpcq-bench-"))
    old = {k: os.environ.get(k) for k in ("VPCQ_HOME", "VPCQ_REDIS_URL")}
    os.environ["VPCQ_HOME"] = str(home)
    os.environ.pop("VPCQ_REDIS_URL", None)
    paths = config.Paths(home)
    # a benchmark stopped with SIGTERM (e.g. by `timeout`) still stops its Redis and workers
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        embedded.supervise(paths, embedded.Wanted(workers=0, redis=True))
        deadline = time.monotonic() + 15
        while not paths.redis_sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield home, config.redis_url(paths)
    finally:
        embedded.stop(paths)
        shutil.rmtree(home, ignore_errors=True)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<48} {value:>14}  {note}")


median = statistics.median


def host_links(tok: str) -> set[str]:
    out = subprocess.run(["ip", "-n", f"{tok}h", "-o", "link", "show"], capture_output=True,
                         text=True, check=True).stdout
    return {ln.split(": ")[1].split("@")[0] for ln in out.splitlines() if ": " in ln}


def quiesce(tok: str, baseline: set[str]) -> None:
    """Wait until the kernel has finished tearing down what the last phase removed.

    Removed namespaces are destroyed by the kernel in the background, holding the rtnl
    lock for long stretches; measured next to that, the next phase would time the teardown.
    The host's links back to the baseline is the sign that it is over.
    """
    deadline = time.monotonic() + 180
    while host_links(tok) != baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    # the subnets' namespaces may still be going: their teardown is kernel work, so wait
    # for half a second in which the CPUs were at least 90% idle (at most 60 s)
    deadline = time.monotonic() + 60
    while cpu_busy(0.5) > 0.1 and time.monotonic() < deadline:
        pass
    # and for the rtnl lock to be free: the kernel destroys removed namespaces in batches,
    # waiting out RCU grace periods in between (little CPU), and holds the lock while it
    # unregisters their devices; a floor run right after a batch's cleanup took 13.6 ms per
    # subnet instead of 5.3. Free: 20 link changes in a row, 25 ms apart, each under 2 ms.
    deadline = time.monotonic() + 60
    while max(_rtnl_waits(f"{tok}h", 20)) > 0.002 and time.monotonic() < deadline:
        pass


def _rtnl_waits(host: str, n: int) -> list[float]:
    """Seconds each of `n` no-op link changes took (`lo` up: the kernel takes the rtnl lock)."""
    from vpcq.workers.kernel.netlink import Netlink

    nl = Netlink()
    waits = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            nl.set_link(host, "lo", None)
            waits.append(time.perf_counter() - t0)
            time.sleep(0.025)
    finally:
        nl.close()
    return waits


def cpu_busy(seconds: float) -> float:
    """The share of all CPUs' time spent busy over the next `seconds` (from /proc/stat)."""

    def sample() -> list[int]:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]

    a = sample()
    time.sleep(seconds)
    d = [y - x for x, y in zip(a, sample(), strict=True)]
    total = sum(d) or 1
    return 1 - (d[3] + d[4]) / total  # idle and iowait are not busy
