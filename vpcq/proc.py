"""Processes known by who they are, not by a number in a file.

A pid in a pid file names whatever process has that pid now: after a crash, the pid can be
reused by an unrelated process, and after a reboot the file names nothing of ours. So a
process vpcq started is known by its pid, its start time (/proc/PID/stat, in clock ticks
since boot) and the boot it started in; it counts as running only while all three match
and it is not a zombie (dead, not yet reaped by its parent). A process of vpcq's own code
also holds a lock on its file for as long as it lives: the kernel releases it when the
process dies, zombie or not, so "held" means "running".
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


BOOT_ID = _boot_id()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, None if there is none with that pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5), counted from the state


@dataclass(frozen=True)
class ProcId:
    """Who a process is: its pid, when it started, and in which boot."""

    pid: int
    start: int
    boot: str

    @classmethod
    def of(cls, pid: int) -> ProcId | None:
        """The identity of the process that has `pid` now, None if none has it."""
        st = _stat(pid)
        return None if st is None else cls(pid, st[1], BOOT_ID)

    @classmethod
    def parse(cls, text: str) -> ProcId | None:
        """An identity as `line()` wrote it; None for anything else (an old pid file)."""
        parts = text.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        return cls(int(parts[0]), int(parts[1]), parts[2])

    def line(self) -> str:
        return f"{self.pid} {self.start} {self.boot}\n"

    def running(self) -> bool:
        """Whether this very process still runs (a zombie has exited: it does not)."""
        if self.boot != BOOT_ID or self.boot == "unknown":
            return False
        st = _stat(self.pid)
        return st is not None and st[1] == self.start and st[0] not in ("Z", "X")


def signal_process(ident: ProcId, sig: int) -> bool:
    """Send `sig` to the process `ident` names, if it is that process; True if sent.

    The process is first held by a pidfd, then checked: a pid reused in between fails the
    check, and a pidfd always reaches the process it was opened for.
    """
    try:
        fd = os.pidfd_open(ident.pid)
    except ProcessLookupError:
        return False
    try:
        if not ident.running():
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def me() -> ProcId:
    """The calling process's identity."""
    ident = ProcId.of(os.getpid())
    assert ident is not None  # /proc/self exists while we run
    return ident


def open_private(path: Path, flags: int) -> int:
    """Open a file of vpcq's own (a lock, a pid file, a log): never through a symlink, mode
    0600 when it is made, and not inherited by the programs this process starts."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def read_bytes(path: str | Path, limit: int, flags: int = 0) -> bytes | None:
    """At most `limit` bytes of a small file (a pid file, a sysctl, /proc/PID/cmdline), None
    if it cannot be opened; `flags` added to O_RDONLY | O_CLOEXEC (O_NOFOLLOW for a file of
    vpcq's own). Without a file object: a whole-host check reads thousands of them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    except OSError:
        return None
    try:
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_identity(path: Path) -> ProcId | None:
    """The identity written in a pid file, None if there is none (or it is not one)."""
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return ProcId.parse(os.read(fd, 256).decode(errors="replace"))
    finally:
        os.close(fd)


def write_identity(path: Path, ident: ProcId) -> None:
    """Write a pid file (replaced whole: a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, ident.line().encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


class HeldLock:
    """A lock file held for the life of this process, naming it (see `holder`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def take(cls, path: Path) -> HeldLock | None:
        """Hold the lock and write this process's identity in it; None if another
        process holds it."""
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, me().line().encode(), 0)
        return cls(fd)

    def release(self) -> None:
        os.close(self.fd)  # closing the last descriptor of the file releases the lock


def holder(path: Path) -> ProcId | None:
    """The running process that holds the lock at `path`, None if nobody does."""
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            ident = ProcId.parse(os.pread(fd, 256, 0).decode(errors="replace"))
            # held: by the process the file names, unless it is still being written
            return ident if ident is not None and ident.running() else None
        return None  # we got it: nobody holds it (ours is released as the file closes)
    finally:
        os.close(fd)


def held(path: Path) -> bool:
    """Whether some process holds the lock at `path`."""
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)


def child_env() -> dict[str, str]:
    """The environment of the processes vpcq starts: vpcq's own settings and PATH, nothing
    else of the caller's (no PYTHONPATH, no LD_PRELOAD, no stray locale or proxy)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("VPCQ_")}
    env["PATH"] = os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["LANG"] = "C.UTF-8"
    return env


def python(module: str, *args: str) -> list[str]:
    """argv running one of vpcq's modules in isolated mode: neither the caller's working
    directory nor PYTHON* variables can put other code on its path (start it with cwd="/"
    too: a relative path it opens must not be the caller's)."""
    return [sys.executable, "-I", "-m", module, *args]
