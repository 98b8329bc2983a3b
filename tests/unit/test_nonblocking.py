"""Waits in the kernel drivers leave the worker's event loop free for its other jobs: an app
that ignores SIGTERM, and the host-rules lock held by another worker."""

from __future__ import annotations

import asyncio
import fcntl
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from vpcq.errors import KernelError
from vpcq.workers.kernel.apps import _terminate
from vpcq.workers.kernel.hostchains import locked


async def _ticks_during(work: Awaitable[None]) -> tuple[int, float]:
    """How often a 10 ms ticker ran while `work` was awaited, and how long that took."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    t0 = time.monotonic()
    try:
        await work
    finally:
        task.cancel()
    return ticks, time.monotonic() - t0


def test_an_app_that_ignores_sigterm_is_killed_and_the_loop_runs_meanwhile():
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        ticks, took = asyncio.run(_ticks_during(_terminate(p.pid, timeout=0.5)))
        assert p.wait(5) == -signal.SIGKILL
        assert took >= 0.5
        assert ticks >= 20  # about 50 in 0.5 s; a blocking wait gives 0
    finally:
        p.kill()
        p.wait()


def test_the_host_rules_lock_is_waited_for_without_blocking_the_loop(tmp_path: Path):
    path = tmp_path / "host-rules.lock"
    done: list[float] = []

    async def take() -> None:
        await locked(path, lambda: done.append(time.monotonic()))

    with open(path, "a") as held:  # another worker's open file: flock locks conflict
        fcntl.flock(held, fcntl.LOCK_EX)
        release = threading.Timer(0.3, lambda: fcntl.flock(held, fcntl.LOCK_UN))
        release.start()
        try:
            ticks, took = asyncio.run(_ticks_during(take()))
        finally:
            release.join()
    assert took >= 0.25 and len(done) == 1  # it did wait for the other holder, then ran
    assert ticks >= 10  # about 30 in 0.3 s; a flock on the loop's thread gives 0


def test_a_host_rules_lock_held_too_long_is_a_transient_error(tmp_path: Path):
    path = tmp_path / "host-rules.lock"
    with open(path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(KernelError, match="held elsewhere") as e:
            asyncio.run(locked(path, lambda: None, wait=0.2))
    assert e.value.transient
    asyncio.run(locked(path, lambda: None, wait=0.2))  # free again: taken at once


class _SlowNetlink:
    """Netlink requests that each wait 0.3 s, as they do behind the rtnl lock while the
    kernel destroys a cleanup's namespaces."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def set_link(self, ns: object, name: str, master: object) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(0.3)


def test_netlink_requests_that_wait_in_the_kernel_leave_the_loop_free(tmp_path: Path):
    """The root of the cleanup race: requests made on the event loop stalled it for the
    whole of a cleanup (18 s), the VPC locks it renews lapsed, and another worker took them."""
    from vpcq.orchestrator.diff import Step
    from vpcq.orchestrator.topology import LinkState
    from vpcq.workers.kernel.kernel import Kernel

    kernel = Kernel(tmp_path / "apps", tmp_path / "host-rules.lock")
    slow = _SlowNetlink()
    kernel.nl.set_link = slow.set_link  # type: ignore[method-assign]
    steps = [Step("create", LinkState("ns", f"l{i}")) for i in range(3)]
    try:
        ticks, took = asyncio.run(_ticks_during(kernel.apply(steps, 0, lambda: None)))
    finally:
        kernel.close()
    assert took >= 0.9
    assert ticks >= 40, f"the loop ran {ticks} times in {took:.2f} s"
    assert slow.threads and not {"MainThread"} & slow.threads


def test_an_observation_of_apps_reads_their_pid_files_off_the_loop(tmp_path: Path, monkeypatch):
    """A no-op check of 100 VPCs looks for an app in 500 namespaces: a pid file and /proc
    each, read on a thread, not on the loop that renews the VPC locks."""
    from vpcq.workers.kernel.apps import Apps
    from vpcq.workers.kernel.driver import Observation, Scope

    threads: set[str] = set()

    def running(self: Apps, ns: str) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)  # as if the disk were slow

    monkeypatch.setattr(Apps, "running", running)
    obs = Observation(Scope(), {})
    obs.present = {f"ns{i}" for i in range(30)}
    ticks, took = asyncio.run(_ticks_during(Apps(tmp_path).observe(obs)))
    assert took >= 0.3 and threads and "MainThread" not in threads
    assert ticks >= 15, f"the loop ran {ticks} times in {took:.2f} s"


def test_the_socket_cache_is_sized_by_the_descriptor_limit(monkeypatch):
    """A whole-host observation enters every namespace once per driver: a cache smaller than
    the host's namespaces misses on every lookup (least recently used, same order each
    time). So it holds what the descriptor limit allows, two sockets a namespace."""
    import resource

    from vpcq.workers.kernel import netlink

    for soft, budget in ((1024, 256), (20000, 9744), (1 << 20, 524032)):
        monkeypatch.setattr(resource, "getrlimit", lambda _r, s=soft: (s, 1 << 20))
        assert netlink.channel_budget() == budget
        assert netlink.Netlink().max_open == budget
    assert netlink.Netlink(max_open=3).max_open == 3


def test_the_descriptor_limit_is_raised_up_to_the_hard_one(monkeypatch):
    import resource

    from vpcq.workers.kernel import netlink

    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _r, v: set_to.append(v))
    for soft, hard, want in ((1024, 524288, (65536, 524288)), (1024, 4096, (4096, 4096)),
                             (100000, 524288, None), (4096, 4096, None)):
        set_to.clear()
        monkeypatch.setattr(resource, "getrlimit", lambda _r, s=soft, h=hard: (s, h))
        netlink.raise_descriptor_limit()
        assert set_to == ([want] if want else [])


def test_the_wire_layer_loads_only_the_parts_of_pyroute2_it_uses():
    """pyroute2's own __init__ imports the whole library; wire.py defers it until one of the
    package's names is asked for, which still works."""
    import subprocess
    import sys

    code = ("import sys; import vpcq.workers.kernel.wire; "
            "print(sorted(m for m in ('pyroute2.ndb', 'pyroute2.ipdb', 'pyroute2.iproute') "
            "if m in sys.modules)); "
            "from pyroute2 import IPRoute, NetlinkError; import pyroute2; "
            "print(IPRoute.__name__, NetlinkError.__name__, bool(pyroute2.__version__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/").stdout.splitlines()
    assert out == ["[]", "IPRoute NetlinkError True"]
