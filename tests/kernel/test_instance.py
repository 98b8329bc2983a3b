"""`vpcq up` brings the instance back after any crash, even where nobody reaps the dead."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.kernel.conftest import Net, wait_until
from vpcq import proc

pytestmark = pytest.mark.kernel

PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def nobody_reaps() -> Iterator[list[int]]:
    """Make this process the reaper of every orphan of its descendants, and reap none of
    them, as a container's init that does not wait() would: a killed supervisor's children
    end up here and, killed too, stay zombies. The pids put in the yielded list are reaped
    at the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    killed: list[int] = []
    try:
        yield killed
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in killed:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # not ours after all (its parent lived and reaped it)


def identity(net: Net, name: str) -> proc.ProcId:
    run = net.home / "run"
    ident = proc.holder(run / f"{name}.lock") if name != "redis-server" else proc.read_identity(run / "redis.pid")
    assert ident is not None and ident.running(), name
    return ident


def zombie(pid: int) -> bool:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def test_up_brings_back_what_was_killed_though_nobody_reaps_it(net: Net):
    try:
        with nobody_reaps() as killed:
            p = net.vpcq("up", "--workers", "2", embedded=True)
            assert p.returncode == 0, p.stderr
            sup, redis = identity(net, "supervisor"), identity(net, "redis-server")
            w1, w2 = identity(net, "worker-1"), identity(net, "worker-2")
            for dead in (sup, redis, w1):  # the supervisor first: nobody is left to reap the rest
                os.kill(dead.pid, signal.SIGKILL)
                killed.append(dead.pid)
                assert wait_until(lambda d=dead: zombie(d.pid), 5), f"{dead.pid} is no zombie"
            assert w2.running()
            t0 = time.monotonic()
            p = net.vpcq("up", "--workers", "2", embedded=True)
            assert p.returncode == 0, p.stderr
            assert time.monotonic() - t0 < 30
            out = p.stdout
            assert "started the supervisor" in out
            assert "restarted redis-server" in out and "zombie nobody reaped" in out
            assert "restarted worker-1" in out and f"took over worker-2 (pid {w2.pid})" in out
            assert out.splitlines()[-1] == "up: redis-server and 2 worker(s) running"
            assert net.embedded_client().listening("default") == {"default": 2}
            a = net.name("a")
            assert net.vpcq("create-vpc", a, "10.0.0.0/16", embedded=True).returncode == 0  # it all works
            assert net.vpcq("delete-vpc", a, embedded=True).returncode == 0
            p = net.vpcq("down", embedded=True)
            assert p.returncode == 0 and "worker-2" in p.stdout
            assert not w2.running()  # the worker it took over was stopped too
            for name in ("supervisor", "worker-1", "worker-2"):
                assert not proc.held(net.home / "run" / f"{name}.lock"), name
            left = proc.read_identity(net.home / "run" / "redis.pid")
            assert left is not None and not left.running()
    finally:
        net.vpcq("down", embedded=True)
