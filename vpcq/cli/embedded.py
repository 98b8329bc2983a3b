"""The embedded default: a redis-server and workers that vpcq manages under $VPCQ_HOME."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from vpcq.config import Paths
from vpcq.errors import ConfigError

REDIS_CONF = """\
# written by vpcq up; every acknowledged write is fsynced before the reply
port 0
unixsocket {sock}
unixsocketperm 700
requirepass {password}
dir {data}
appendonly yes
appendfsync always
save ""
pidfile {pid}
logfile {log}
daemonize no
"""


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _running(pidfile: Path) -> bool:
    """`_alive`, for a process this one may have started: an exited child is a zombie until
    it is reaped, and signal 0 still finds it."""
    pid = _alive(pidfile)
    if pid is None:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != pid
    except ChildProcessError:  # not our child: _alive said
        return True


def _prepare(p: Paths) -> None:
    for d in (p.home, p.data, p.run, p.logs, p.apps):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(p.home, 0o700)
    if not p.redis_pass.exists():
        p.redis_pass.write_text(secrets.token_hex(16) + "\n")
        os.chmod(p.redis_pass, 0o600)


def start_redis(p: Paths) -> bool:
    """Start the embedded redis-server unless it runs; True if it was started."""
    if _alive(p.redis_pid):
        return False
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError(
            "redis-server not found; install it (Debian/Ubuntu: apt-get install redis-server) "
            "or set VPCQ_REDIS_URL"
        )
    _prepare(p)
    p.redis_conf.write_text(
        REDIS_CONF.format(
            sock=p.redis_sock,
            password=p.redis_pass.read_text().strip(),
            data=p.data,
            pid=p.redis_pid,
            log=p.logs / "redis.log",
        )
    )
    os.chmod(p.redis_conf, 0o600)
    p.redis_sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [binary, str(p.redis_conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    p.redis_pid.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"redis-server exited with {proc.returncode}; see {p.logs}/redis.log")
        if p.redis_sock.exists():
            return True
        time.sleep(0.02)
    raise ConfigError(f"redis-server did not open {p.redis_sock} in 10 s")


def start_workers(p: Paths, n: int, verbose: bool = False) -> list[int]:
    """Start workers 1..n that are not running; returns the numbers started."""
    _prepare(p)
    started = []
    for i in range(1, n + 1):
        if _alive(p.worker_pid(i)):
            continue
        log = open(p.logs / f"worker-{i}.out", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "vpcq.workers", "--name", f"worker-{i}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "VPCQ_HOME": str(p.home)},
        )
        log.close()
        p.worker_pid(i).write_text(f"{proc.pid}\n")
        started.append(i)
    return started


def exited(p: Paths, numbers: list[int]) -> list[tuple[int, str]]:
    """Of workers `numbers`, those no longer running, each with the last line of its output."""
    out = []
    for i in numbers:
        if not _running(p.worker_pid(i)):
            lines = (p.logs / f"worker-{i}.out").read_text(errors="replace").strip().splitlines()
            out.append((i, lines[-1] if lines else "no output"))
    return out


def stop_all(p: Paths, timeout: float = 10.0) -> list[str]:
    """Stop the workers, then redis-server (SIGTERM, then SIGKILL after `timeout`); returns
    what was stopped. The workers are signalled together: each may take up to its stop grace
    to finish the change it is applying, and they need Redis until they have."""
    pidfiles = sorted(p.run.glob("worker-*.pid")) if p.run.exists() else []
    return _stop(pidfiles, timeout) + _stop([p.redis_pid], timeout)


def _stop(pidfiles: list[Path], timeout: float) -> list[str]:
    running = {}
    for pidfile in pidfiles:
        pid = _alive(pidfile)
        if pid is None:
            pidfile.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        running[pidfile] = pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(f) for f in running):
        time.sleep(0.05)
    for pidfile, pid in running.items():
        if _alive(pidfile):
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
    return [f.stem for f in running]
