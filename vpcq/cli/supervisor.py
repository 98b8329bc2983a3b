"""The supervisor of the embedded instance (`python -I -m vpcq.cli.supervisor`, started by
`vpcq up`): it keeps redis-server and N workers running, reaps them, and starts again what
exits. See vpcq.cli.embedded for why, and for the files it keeps under $VPCQ_HOME/run.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from vpcq import config, logs, proc
from vpcq.cli.embedded import Files, Wanted, redis_binary
from vpcq.config import Paths
from vpcq.proc import child_env, python

log = structlog.get_logger("vpcq.supervisor")
TICK = 0.2  # seconds between looks at what runs (a child's exit wakes it sooner)
QUICK = 10.0  # a process that exits sooner than this after its start is restarted later each time
WORKER_STOP = 12.0  # a worker finishes the change it applies (8 s) before it exits
REDIS_STOP = 10.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _exit_reason(returncode: int | None) -> str:
    """How a child ended, from its Popen returncode (negative: the signal that killed it)."""
    if returncode is None:
        return "ended"
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


@dataclass
class Kept:
    """One process the supervisor keeps running."""

    name: str
    ident: proc.ProcId | None = None
    child: subprocess.Popen[bytes] | None = None  # set when this supervisor started it
    started: str = ""
    started_at: float = 0.0  # wall clock, for `vpcq up` to tell what is new
    gone_at: float = 0.0  # when the last one was found gone
    gone_started_at: float = 0.0  # when that one had been started (0: not by this supervisor)
    why: str = ""
    restarts: int = 0
    quick_exits: int = 0
    born: float = 0.0  # monotonic time of its start
    next_try: float = 0.0
    gone: str | None = None  # why the last one stopped, once known

    def running(self) -> bool:
        if self.child is not None:
            return self.child.poll() is None  # a child is ours to reap: poll() does
        return self.ident is not None and self.ident.running()

    def status(self) -> dict[str, Any]:
        return {"pid": self.ident.pid if self.ident else None, "running": self.running(),
                "started": self.started, "started_at": self.started_at, "gone_at": self.gone_at,
                "gone_started_at": self.gone_started_at,
                "why": self.why, "restarts": self.restarts}


@dataclass
class Supervisor:
    p: Paths
    files: Files = field(init=False)
    kept: dict[str, Kept] = field(default_factory=dict)
    stopping: bool = False
    _status: str = ""

    def __post_init__(self) -> None:
        self.files = Files(self.p)

    # ---- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        lock = proc.HeldLock.take(self.files.lock)
        if lock is None:
            log.info("another supervisor runs; exiting")
            return 0
        # any signal wakes the loop: SIGCHLD (a child exited), SIGHUP (`vpcq up` changed what
        # is wanted), SIGTERM and SIGINT (stop)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for sig in (signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda *_: None)
        self._adopt()
        log.info("supervisor ready", pid=os.getpid())
        try:
            while not self.stopping:
                self.tick()
                if select.select([wake_r], [], [], TICK)[0]:
                    wake_r.recv(4096)
        finally:
            self._shutdown()
            lock.release()
        return 0

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def tick(self) -> None:
        """Reap, then start what should run and does not."""
        wanted = Wanted.load(self.files)
        if wanted.redis:
            self._keep("redis-server", self._start_redis)
        redis_up = not wanted.redis or self.p.redis_sock.exists()
        for n in range(1, max(wanted.workers, self._highest_worker()) + 1):
            name = f"worker-{n}"
            if n > wanted.workers:
                self._retire(name)
            elif redis_up:
                self._keep(name, lambda n=n: self._start_worker(n))
        self._write_status()

    def _highest_worker(self) -> int:
        return max((int(k.rsplit("-", 1)[1]) for k in self.kept if k.startswith("worker-")), default=0)

    # ---- keeping one process ----------------------------------------------------------------

    def _keep(self, name: str, start: Any) -> None:
        k = self.kept.setdefault(name, Kept(name))
        if k.running():
            return
        if k.child is not None:  # ours, and reaped by running(): say how it ended
            k.gone = _exit_reason(k.child.returncode)
            k.child = None
            k.gone_at, k.gone_started_at = time.time(), k.started_at
        elif k.ident is not None and k.gone is None:
            k.gone = "was not running: dead, or a zombie nobody reaped"
            k.gone_at = time.time()
        now = time.monotonic()
        if k.ident is not None and k.born:  # it ran: restart soon, or later if it keeps dying
            k.quick_exits = k.quick_exits + 1 if now - k.born < QUICK else 0
            k.next_try = now + (min(0.5 * 2 ** (k.quick_exits - 1), 10.0) if k.quick_exits else 0)
            k.born = 0.0
        if now < k.next_try:
            return
        why = f"the last one {k.gone}" if k.gone else "first start"
        try:
            k.child = start()
        except OSError as e:
            log.error("cannot start", process=name, error=str(e))
            k.next_try = now + 5
            return
        k.ident = proc.ProcId.of(k.child.pid)
        k.restarts += k.started != ""
        k.started, k.started_at, k.why, k.born, k.gone = _now(), time.time(), why, now, None
        log.info("started", process=name, pid=k.child.pid, why=why)
        if name == "redis-server" and k.ident is not None:
            proc.write_identity(self.p.redis_pid, k.ident)

    def _retire(self, name: str) -> None:
        """Stop a worker beyond the number wanted now."""
        k = self.kept.get(name)
        if k is None:
            return
        if k.running() and k.ident is not None:
            proc.signal_process(k.ident, signal.SIGTERM)
            log.info("stopping", process=name, why="fewer workers wanted")
        elif k.child is not None:
            k.child.wait()
        if not k.running():
            del self.kept[name]

    def _adopt(self) -> None:
        """Take over what an earlier supervisor started and still runs (it was killed); what
        it started and is no longer running is started again, and said so."""
        dead = "was not running: dead, or a zombie nobody reaped"
        found: list[tuple[str, proc.ProcId | None, bool]] = []
        redis = proc.read_identity(self.p.redis_pid)
        if redis is not None:
            found.append(("redis-server", redis, redis.running()))
        for lock in sorted(self.p.run.glob("worker-*.lock")):
            ident = proc.holder(lock)
            found.append((lock.stem, ident or proc.read_identity(lock), ident is not None))
        for name, ident, running in found:
            if running:
                self.kept[name] = Kept(name, ident, started=_now(), started_at=time.time(),
                                       why="adopted: it was running", born=time.monotonic())
            else:
                self.kept[name] = Kept(name, gone=dead, gone_at=time.time())

    # ---- starting -----------------------------------------------------------------------------

    def _start_redis(self) -> subprocess.Popen[bytes]:
        self.p.redis_sock.unlink(missing_ok=True)  # a stale socket of a dead server
        return subprocess.Popen([redis_binary(), str(self.p.redis_conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                env=child_env())

    def _start_worker(self, n: int) -> subprocess.Popen[bytes]:
        out = proc.open_private(self.p.logs / f"worker-{n}.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            return subprocess.Popen(
                python("vpcq.workers", "run", "--name", f"worker-{n}",
                       "--lock", str(self.files.worker_lock(n))),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/", env=child_env())
        finally:
            os.close(out)

    # ---- status and shutdown ----------------------------------------------------------------

    def _write_status(self) -> None:
        text = json.dumps({k.name: k.status() for k in self.kept.values()}, sort_keys=True)
        if text == self._status:
            return
        tmp = self.files.status.with_name(f".{self.files.status.name}.{os.getpid()}")
        fd = proc.open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.files.status)
        self._status = text

    def _shutdown(self) -> None:
        """Stop the workers (each finishes the change it applies), then Redis."""
        workers = [k for k in self.kept.values() if k.name.startswith("worker-")]
        self._terminate(workers, WORKER_STOP)
        self._terminate([k for k in self.kept.values() if k.name == "redis-server"], REDIS_STOP)
        self._write_status()
        log.info("supervisor stopped")

    def _terminate(self, kept: list[Kept], wait: float) -> None:
        for k in kept:
            if k.running() and k.ident is not None:
                proc.signal_process(k.ident, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while any(k.running() for k in kept) and time.monotonic() < deadline:
            time.sleep(0.05)
        for k in kept:
            if k.running() and k.ident is not None:
                proc.signal_process(k.ident, signal.SIGKILL)
            if k.child is not None:
                k.child.wait()


def main() -> int:
    p = config.paths()
    logs.configure(p.logs / "supervisor.log")
    try:
        return Supervisor(p).run()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
