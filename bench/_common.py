"""Shared by the benchmarks: a temporary vpcq instance on its own embedded Redis."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import tempfile
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
        embedded.start_redis(paths)
        yield home, config.redis_url(paths)
    finally:
        embedded.stop_all(paths)
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
