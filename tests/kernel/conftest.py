"""Kernel fixtures: a throwaway host namespace with a simulated internet, real workers.

Layout (every name starts with the test's token, so a sweep finds everything):

    <tok>i  "the internet": 198.51.100.1 on the link, 203.0.113.10 on lo,
            a route to 10.0.0.0/8 via the host (so inbound attempts really reach it)
      |  veth
    <tok>h  "the host": inet0 198.51.100.2, default route via 198.51.100.1;
            vpcq's workers run here ($VPCQ_NETNS) with VPCQ_UPLINK=inet0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, Client, token
from vpcq import config
from vpcq.testing.sandbox import INTERNET_IP, build_internet, sweep
from vpcq.workers.kernel import netns

__all__ = ["INTERNET_IP", "Net"]

pytestmark = pytest.mark.kernel


@dataclass
class Net:
    tok: str
    home: Path
    redis_url: str
    host: str = ""
    internet: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.host = f"{self.tok}h"
        self.internet = f"{self.tok}i"

    @property
    def env(self) -> dict[str, str]:
        return {
            "VPCQ_HOME": str(self.home),
            "VPCQ_REDIS_URL": self.redis_url,
            "VPCQ_NETNS": self.host,
            "VPCQ_UPLINK": "inet0",
            "VPCQ_REPAIR_ON_START": "1",
        }

    def name(self, suffix: str) -> str:
        return f"{self.tok}{suffix}"

    def start_worker(self, n: int = 1, extra: dict[str, str] | None = None,
                     wait: bool = True) -> None:
        """Start n workers; with `wait`, return once each has finished its start-up."""
        names = []
        for _ in range(n):
            name = f"w{len(self.workers)}"
            names.append(name)
            log = open(self.home / f"{name}.out", "ab")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "vpcq.workers", "run", "--name", name],
                env={**os.environ, **self.env, **(extra or {})}, cwd=ROOT,
                stdout=log, stderr=log,
            ))  # fmt: skip
            log.close()
        for name in names if wait else ():
            logfile = self.home / "log" / f"{name}.log"
            ready = wait_until(lambda f=logfile: f.exists() and "worker ready" in f.read_text(), 30)
            assert ready, f"worker {name} did not start"

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(sig)
        for w in self.workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        self.workers.clear()

    def client(self) -> Client:
        return Client(self.redis_url)

    def vpcq(self, *args: str, input: str | None = None,
             embedded: bool = False) -> subprocess.CompletedProcess[str]:
        """The real `vpcq` command; with `embedded`, on the instance's own Redis (the one
        `vpcq up` starts under the test's home), not the session's."""
        env = {**os.environ, **self.env}
        if embedded:
            env.pop("VPCQ_REDIS_URL")
        return subprocess.run(
            [sys.executable, "-m", "vpcq.cli.main", *args], input=input, capture_output=True,
            text=True, env=env, cwd=ROOT, timeout=300,
        )  # fmt: skip

    def embedded_client(self) -> Client:
        """A client of the embedded Redis that `vpcq up` started under the test's home."""
        return Client(config.redis_url(config.Paths(self.home)))


@pytest.fixture
def net(redis_url: str, tmp_path: Path) -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    tok = token()
    home = tmp_path / "home"
    home.mkdir()
    n = Net(tok, home, redis_url)
    try:
        build_internet(tok)
        yield n
    finally:
        n.stop_workers()
        sweep(tok, home)
        # the sweep itself must have worked: no namespace and no app process of this test left
        assert not [ns for ns in netns.list_names() if tok in ns]
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                    if _reads(p).count(tok.encode()) and b"vpcq.workers.app" in _reads(p)]


def _reads(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.fixture
def worker(net: Net) -> Net:
    net.start_worker()
    return net


def wait_until(fn, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
