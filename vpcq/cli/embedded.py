"""The embedded instance: a redis-server and workers under $VPCQ_HOME, kept alive by a
supervisor process that `vpcq up` starts and `vpcq down` stops.

Why a supervisor of our own, and not units for the host's init: vpcq runs where there is
no systemd (containers without an init, CI machines, a laptop's shell), and its processes
must come back after any crash there too. The supervisor is their parent: it reaps them
(a killed process never lingers as a zombie that looks alive) and starts again whatever
exits, with a growing pause if it keeps exiting. It is itself known by the lock it holds,
so `vpcq up` after the supervisor was killed starts a new one, which takes over the
processes still running (a worker holds a lock of its own; Redis is known by its pid, start
time and boot). Nothing is ever signalled unless it is surely the process vpcq started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpcq import config, proc
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
logfile {log}
daemonize no
"""
STOP_WAIT = 30.0  # how long `vpcq down` waits for the supervisor to stop what it runs


def quote(value: str) -> str:
    """A string as redis.conf reads it: in double quotes, with \\ and " escaped (a path
    with a space, or any other character, is one argument)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Files:
    """The supervisor's files under $VPCQ_HOME/run."""

    p: Paths

    @property
    def lock(self) -> Path:
        return self.p.run / "supervisor.lock"

    @property
    def wanted(self) -> Path:
        return self.p.run / "supervisor.json"

    @property
    def status(self) -> Path:
        return self.p.run / "supervisor.status"

    def worker_lock(self, n: int) -> Path:
        return self.p.run / f"worker-{n}.lock"


def prepare(p: Paths) -> None:
    """Make the instance's directories (private to root) and the Redis password."""
    config.check_home(p)  # before anything is made in it
    for d in (p.home, p.data, p.run, p.logs, p.apps):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(p.home, 0o700)
    config.check_home(p)  # what another process may have made meanwhile
    try:
        fd = proc.open_private(p.redis_pass, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    try:
        os.write(fd, (secrets.token_hex(16) + "\n").encode())
    finally:
        os.close(fd)


def write_redis_conf(p: Paths) -> None:
    """redis.conf for the embedded server (mode 0600: it holds the password)."""
    text = REDIS_CONF.format(sock=quote(str(p.redis_sock)), password=quote(password(p)),
                             data=quote(str(p.data)), log=quote(str(p.logs / "redis.log")))
    tmp = p.redis_conf.with_name(f".{p.redis_conf.name}.{os.getpid()}")
    fd = proc.open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, p.redis_conf)


def password(p: Paths) -> str:
    fd = proc.open_private(p.redis_pass, os.O_RDONLY)
    try:
        return os.read(fd, 256).decode().strip()
    finally:
        os.close(fd)


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError(
            "redis-server not found; install it (Debian/Ubuntu: apt-get install redis-server) "
            "or set VPCQ_REDIS_URL"
        )
    return binary


# ---- what `vpcq up` and `vpcq down` do ----------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """What the supervisor is to keep running."""

    workers: int
    redis: bool  # False: Redis is someone else's ($VPCQ_REDIS_URL)
    since: float = 0.0  # when `vpcq up` asked for it (what was started after it is news)

    def save(self, files: Files) -> None:
        tmp = files.wanted.with_name(f".{files.wanted.name}.{os.getpid()}")
        fd = proc.open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, json.dumps({"workers": self.workers, "redis": self.redis,
                                     "since": self.since}).encode())
        finally:
            os.close(fd)
        os.replace(tmp, files.wanted)

    @classmethod
    def load(cls, files: Files) -> Wanted:
        try:
            fd = proc.open_private(files.wanted, os.O_RDONLY | os.O_NONBLOCK)
            try:
                d = json.loads(os.read(fd, 4096))
            finally:
                os.close(fd)
            return cls(int(d["workers"]), bool(d["redis"]), float(d.get("since", 0.0)))
        except (OSError, ValueError, KeyError, TypeError):
            return cls(0, False)


def read_status(files: Files) -> dict[str, Any]:
    """What the supervisor last said about each process it keeps: pid, when it was
    started, why, and how often."""
    try:
        fd = proc.open_private(files.status, os.O_RDONLY | os.O_NONBLOCK)
        try:
            data = json.loads(os.read(fd, 1 << 20))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def supervise(p: Paths, wanted: Wanted) -> proc.ProcId | None:
    """Have a supervisor keep `wanted` running; returns the supervisor it started, None if
    one was running already (then it is told to look at what is wanted now)."""
    prepare(p)
    files = Files(p)
    if wanted.redis:
        redis_binary()  # a missing binary is said now, not in a log
        write_redis_conf(p)
    wanted.save(files)
    running = proc.holder(files.lock)
    if running is not None:
        proc.signal_process(running, signal.SIGHUP)  # look at what is wanted now
        return None
    out = proc.open_private(p.logs / "supervisor.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        child = subprocess.Popen(
            proc.python("vpcq.cli.supervisor"), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            cwd="/", env=proc.child_env(), start_new_session=True,
        )
    finally:
        os.close(out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ident = proc.holder(files.lock)
        if ident is not None:
            return ident
        if child.poll() is not None:
            raise ConfigError(f"the supervisor exited at once ({child.returncode}); see "
                              f"{p.logs}/supervisor.out")
        time.sleep(0.01)
    raise ConfigError(f"the supervisor did not start in 10 s; see {p.logs}/supervisor.out")


def stop(p: Paths, timeout: float = STOP_WAIT) -> list[str]:
    """Stop the instance: the supervisor, which stops its workers, then Redis. Processes
    left by a supervisor that was killed are stopped directly, each only if it is surely
    the one vpcq started. Returns what was stopped."""
    files = Files(p)
    status = read_status(files)
    sup = proc.holder(files.lock)
    stopped: list[str] = []
    if sup is not None:
        proc.signal_process(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.held(files.lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.held(files.lock):
            raise ConfigError(f"the supervisor (pid {sup.pid}) did not stop in {timeout:.0f} s")
        stopped.append("supervisor")
        stopped += [name for name, s in sorted(status.items()) if s.get("running")]
        return stopped
    # no supervisor: stop what is left of the last one's
    left: list[tuple[str, proc.ProcId]] = []
    for lock in sorted(p.run.glob("worker-*.lock")) if p.run.exists() else []:
        ident = proc.holder(lock)
        if ident is not None:
            left.append((lock.stem, ident))
    redis = proc.read_identity(p.redis_pid)
    if redis is not None and redis.running():
        left.append(("redis-server", redis))
    terminate([ident for _name, ident in left if _name != "redis-server"], timeout)
    terminate([ident for _name, ident in left if _name == "redis-server"], timeout)
    return [name for name, _ in left]


def terminate(procs: list[proc.ProcId], timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`, to each process while it is the one named."""
    for ident in procs:
        proc.signal_process(ident, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(i.running() for i in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for ident in procs:
        proc.signal_process(ident, signal.SIGKILL)
