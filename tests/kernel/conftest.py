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
from vpcq.workers.kernel import netns

INTERNET_IP = "203.0.113.10"

pytestmark = pytest.mark.kernel


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


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
            "VPCQ_RESTORE_ON_START": "1",
        }

    def name(self, suffix: str) -> str:
        return f"{self.tok}{suffix}"

    def start_worker(self, n: int = 1, extra: dict[str, str] | None = None) -> None:
        for i in range(n):
            log = open(self.home / f"worker-{len(self.workers)}.out", "ab")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "vpcq.workers", "run", "--name", f"w{len(self.workers)}"],
                env={**os.environ, **self.env, **(extra or {})}, cwd=ROOT,
                stdout=log, stderr=log,
            ))  # fmt: skip
            log.close()
            del i

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

    def vpcq(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vpcq.cli.main", *args], input=input, capture_output=True,
            text=True, env={**os.environ, **self.env}, cwd=ROOT, timeout=300,
        )  # fmt: skip


def build_internet(tok: str) -> None:
    host, inet = f"{tok}h", f"{tok}i"
    for ns in (host, inet):
        netns.create(ns)
    a, b = f"{tok}a0", f"{tok}b0"
    _ip("-n", host, "link", "add", a, "type", "veth", "peer", "name", b, "netns", inet)
    _ip("-n", host, "link", "set", a, "name", "inet0")
    _ip("-n", host, "addr", "add", "198.51.100.2/24", "dev", "inet0")
    _ip("-n", host, "link", "set", "inet0", "up")
    _ip("-n", host, "link", "set", "lo", "up")
    _ip("-n", host, "route", "add", "default", "via", "198.51.100.1")
    _ip("-n", inet, "addr", "add", "198.51.100.1/24", "dev", b)
    _ip("-n", inet, "addr", "add", f"{INTERNET_IP}/24", "dev", "lo")
    _ip("-n", inet, "link", "set", b, "up")
    _ip("-n", inet, "link", "set", "lo", "up")
    _ip("-n", inet, "route", "add", "10.0.0.0/8", "via", "198.51.100.2")


def sweep(tok: str, home: Path) -> list[str]:
    """Remove everything a test made; return what had to be removed besides its own two
    namespaces (apps, VPC namespaces), for the leak check."""
    leaked: list[str] = []
    for pidfile in (home / "apps").glob("*.json") if (home / "apps").exists() else []:
        import json

        pid = json.loads(pidfile.read_text())["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
            leaked.append(f"app pid {pid}")
        except ProcessLookupError:
            pass
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"vpcq.workers.app" in cmd and tok.encode() in cmd:
            leaked.append(f"app process {proc.name}")
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in netns.list_names():
        if tok in ns:
            if ns not in (f"{tok}h", f"{tok}i"):
                leaked.append(f"netns {ns}")
            netns.remove(ns)
    return leaked


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
        assert not [ns for ns in netns.list_names() if tok in ns]


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
