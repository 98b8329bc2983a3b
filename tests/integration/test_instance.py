"""The embedded instance: processes known by who they are, and waits that end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli import one_line_error
from vpcq import proc

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Path, Run]]:
    """`vpcq` on an embedded instance under a fresh $VPCQ_HOME (stopped afterwards)."""
    home = tmp_path / "h"
    env = {k: v for k, v in os.environ.items() if k != "VPCQ_REDIS_URL"}
    env["VPCQ_HOME"] = str(home)

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vpcq.cli.main", *args], capture_output=True,
                              text=True, env=env, timeout=timeout)

    try:
        yield home, run
    finally:
        run("down")


def test_a_pid_file_naming_another_process_is_never_signalled(embedded: tuple[Path, Run]):
    home, run = embedded
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        assert run("up", "--workers", "0").returncode == 0
        ours = proc.read_identity(home / "run" / "redis.pid")
        assert ours is not None and ours.running()
        assert run("down").returncode == 0 and not ours.running()
        # what a crash, or a reboot, leaves behind: files naming pids that are someone
        # else's now (an old pid file holds a bare pid; a stale one, another start time)
        me = proc.ProcId.of(sleeper.pid)
        assert me is not None
        (home / "run" / "redis.pid").write_text(f"{sleeper.pid}\n")
        (home / "run" / "worker-1.lock").write_text(f"{sleeper.pid} {me.start + 1} {me.boot}\n")
        (home / "run" / "supervisor.lock").write_text(f"{sleeper.pid} {me.start} another-boot\n")
        p = run("down")
        assert p.returncode == 0 and p.stdout == "nothing was running\n", p.stdout
        assert sleeper.poll() is None
        p = run("up", "--workers", "0")
        assert p.returncode == 0, p.stderr
        redis = proc.read_identity(home / "run" / "redis.pid")
        assert redis is not None and redis.pid != sleeper.pid and redis.running()
        assert run("list").returncode == 0  # it answers
        p = run("down")
        assert "redis-server" in p.stdout and not redis.running()
        (home / "run" / "redis.pid").write_text(proc.ProcId(sleeper.pid, me.start + 7, me.boot).line())
        assert run("down").stdout == "nothing was running\n"
        assert sleeper.poll() is None, "vpcq signalled a process it did not start"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_paused_redis_is_one_line_and_exit_3_within_10_s(embedded: tuple[Path, Run]):
    home, run = embedded
    assert run("up", "--workers", "0").returncode == 0
    redis = proc.read_identity(home / "run" / "redis.pid")
    assert redis is not None
    env = {k: v for k, v in os.environ.items() if k != "VPCQ_REDIS_URL"}
    # no worker: this one waits for its outcome, and is waiting when Redis stops answering
    waiting = subprocess.Popen(
        [sys.executable, "-m", "vpcq.cli.main", "create-vpc", "a", "10.0.0.0/16", "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "VPCQ_HOME": str(home)})
    time.sleep(3)  # past its "no worker is up" hint
    assert waiting.poll() is None
    os.kill(redis.pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        _, err = waiting.communicate(timeout=10)  # raises if it is still waiting
        assert waiting.returncode == 3 and time.monotonic() - paused < 10
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("vpcq: error: Redis at ")
        for args in (["list"], ["create-vpc", "b", "10.1.0.0/16"], ["status", "0123456789abcdef"]):
            t0 = time.monotonic()
            p = run(*args, timeout=30)
            assert p.returncode == 3, (args, p.stdout, p.stderr)
            assert time.monotonic() - t0 < 10, args
            assert "did not answer within" in one_line_error(p)
    finally:
        os.kill(redis.pid, signal.SIGCONT)
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert run("list").returncode == 0  # back: the same instance, nothing restarted
