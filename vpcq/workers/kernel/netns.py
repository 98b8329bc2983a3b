"""Network namespaces without forking: a thread enters a namespace (setns moves only the
calling thread), so the asyncio thread always stays in the host namespace.

The threads are a small pool kept for the life of the process (a thread started and
joined for every namespace operation costs more than the operation). A thread that enters
a namespace comes back before it takes the next call; one that could not come back is moved
home first by the next call it runs (see `_home`). `arun_in` is the same call for async
code: the event loop goes on while the thread waits for the kernel or a child process.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from vpcq.errors import KernelError
from vpcq.safepath import under

T = TypeVar("T")

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_dir_ready = False
_dir_lock = threading.Lock()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def path(name: str) -> str:
    """The namespace's file, in /run/netns whatever the name says (the `remove` and leftover
    paths unlink what they find there)."""
    try:
        return under(NETNS_DIR, name)
    except ValueError as e:
        raise KernelError("find", f"namespace {name!r}"[:80], str(e)) from None


@functools.cache
def _nsfs_dev() -> int:
    """The device of nsfs, the one filesystem of every namespace file (fixed for the boot)."""
    return os.stat("/proc/self/ns/net").st_dev


def exists(name: str) -> bool:
    """True if `name` is a live namespace: a bind-mounted nsfs file, not a leftover plain file
    (a process killed between creating the file and mounting on it leaves one)."""
    try:
        return os.stat(path(name)).st_dev == _nsfs_dev()
    except OSError:
        return False


def leftover(name: str) -> bool:
    """True if `name` is a plain file, not a namespace: what a process killed in the middle
    of `create` (before its mount) or of `remove` (after its umount) leaves behind."""
    return os.path.lexists(path(name)) and not exists(name)


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _prepare_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so `ip netns` sees our mounts."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        rc = _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None)
        if rc != 0 and ctypes.get_errno() == errno.EINVAL:
            _check(
                _libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
                "bind /run/netns",
            )
            _check(
                _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None),
                "share /run/netns",
            )
        _dir_ready = True


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_strayed = threading.local()  # .ns: set on a pool thread that could not return home


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vpcq-netns")
        return _pool


def _home() -> None:
    """Put a pool thread back in the process's namespace if an earlier call left it
    elsewhere (its setns back failed). The process's namespace is the main thread's:
    the host, or the namespace `enter` moved the main thread into."""
    if getattr(_strayed, "ns", None) is None:
        return
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)  # /proc/self is the main thread
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns home")
        _strayed.ns = None
    finally:
        os.close(fd)


def _back(orig: int, name: str) -> None:
    """setns back to `orig` after working in `name`; if that fails, the thread remembers it
    and goes home before its next call (it must never run a call in the wrong namespace)."""
    try:
        _check(_libc.setns(orig, CLONE_NEWNET), "setns back")
    except OSError:
        _strayed.ns = name
        raise


def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` on a pool thread and return its result (or raise its exception)."""
    return _threads().submit(_homed(fn)).result()


def _off_main(fn: Callable[[], T]) -> T:
    """Run `fn`, which enters a namespace and comes back, on the calling thread if it is not
    the main one (the kernel's netlink thread), else on a pool thread: the main thread never
    leaves the process's namespace. A hand-off to the pool waits twice for the GIL, which the
    event loop's thread holds while it plans, and a whole-host observation or a rebuild
    enters every namespace of the host."""
    if threading.current_thread() is threading.main_thread():
        return _in_thread(fn)
    _home()
    return fn()


async def _in_thread_async(fn: Callable[[], T]) -> T:
    return await asyncio.wrap_future(_threads().submit(_homed(fn)))


def _homed(fn: Callable[[], T]) -> Callable[[], T]:
    def call() -> T:
        _home()
        return fn()

    return call


def _no_ipv6() -> None:
    """vpcq is IPv4 only: no IPv6 in its namespaces (no link-local chatter, and no IPv6
    address set up, with duplicate address detection, for every link brought up: work the
    kernel does as part of the request that brings the link up).

    `all` alone: writing it sets `default` too (so links made later have IPv6 off), and
    each such write takes the rtnl lock with a trylock that restarts the system call until
    it gets it, spinning while other workers hold the lock.
    """
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass  # a kernel without IPv6


def create(name: str) -> None:
    """Create a named namespace (like `ip netns add`); an existing one is left alone."""
    try:
        _off_main(_creator(name))
    except OSError as e:
        raise KernelError("create", f"netns {name}", str(e)) from e


def _creator(name: str) -> Callable[[], None]:
    _prepare_dir()
    target = path(name)

    def work() -> None:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            if exists(name):
                return
            os.unlink(target)  # a stale file from a process killed mid-create: start over
            fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.close(fd)
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            _no_ipv6()
            try:
                _check(
                    _libc.mount(b"/proc/thread-self/ns/net", target.encode(), None, MS_BIND, None),
                    "bind-mount",
                )
            finally:
                _back(orig, name)
        except OSError:
            os.unlink(target)
            raise
        finally:
            os.close(orig)

    return work


def remove(name: str) -> None:
    """Remove a named namespace; its interfaces go with it. A missing one is fine."""
    target = path(name)
    if not os.path.exists(target):
        return
    rc = _libc.umount2(target.encode(), MNT_DETACH)
    if rc != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        e = ctypes.get_errno()
        raise KernelError("remove", f"netns {name}", os.strerror(e))
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise KernelError("remove", f"netns {name}", str(e)) from e


def run_in(name: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` inside namespace `name` (None: the process's own) on a pool thread, and wait.

    Processes started by `fn` inherit that namespace. Called from a thread other than the
    main one, that thread enters and comes back itself (see `_off_main`).
    """
    return _off_main(_entering(name, fn))


async def arun_in(name: str | None, fn: Callable[[], T]) -> T:
    """`run_in` for async code: the event loop is free while `fn` runs."""
    return await _in_thread_async(_entering(name, fn))


def _entering(name: str | None, fn: Callable[[], T]) -> Callable[[], T]:
    if name is None:
        return fn

    def work() -> T:
        try:
            fd = os.open(path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise KernelError("enter", f"netns {name}", "no such namespace") from None
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
            except OSError as e:
                raise KernelError("enter", f"netns {name}", str(e)) from e
            try:
                return fn()
            finally:
                _back(orig, name)
        finally:
            os.close(fd)
            os.close(orig)

    return work


def inode(name: str) -> int | None:
    """The namespace's nsfs inode (what /proc/PID/ns/net links to), or None."""
    try:
        return os.stat(path(name)).st_ino
    except OSError:
        return None


def enter(name: str) -> None:
    """Move the calling thread (call it first thing, on the main thread) into `name`.

    Used with $VPCQ_NETNS to make a throwaway namespace play the host for a whole worker.
    The mount namespace is left alone, so namespaces we create stay visible system-wide.
    """
    global _pool
    try:
        fd = os.open(path(name), os.O_RDONLY)
    except FileNotFoundError:
        raise KernelError("enter", f"netns {name}", "no such namespace") from None
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)
    with _pool_lock:  # threads made before stay where they were: new ones start from here
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
