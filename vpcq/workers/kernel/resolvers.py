"""The VPCs' DNS servers: dnsmasq, one process per resolver role of a VPC (see
orchestrator/dns.py), in the VPC's router namespace.

dnsmasq reads its configuration once, as root, when it starts, then gives root up for
`nobody`; it could not read a file under $VPCQ_HOME (0700) again, and a SIGHUP re-reads
only hosts files, as that user. So every name vpcq serves is in the configuration, and a
change of it is a restart: the old process stops, the new one binds the same addresses (a
few milliseconds without an answer; a client asks again).

A process is known by who it is, not by a pid: dnsmasq writes its pid, vpcq records that
process's identity (pid, start time, boot) and the hash of the configuration it started
with, and counts it as running only while that very process runs with vpcq's arguments.
A process running in another namespace than the router's now (the router was made again)
is seen as stale, so a diff stops it and starts one where it belongs.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from vpcq.errors import KernelError
from vpcq.orchestrator import dns
from vpcq.orchestrator.naming import ROUTER_NS_PREFIX
from vpcq.orchestrator.topology import Resolver
from vpcq.proc import ProcId, open_private, read_bytes, signal_process
from vpcq.workers.kernel import netns
from vpcq.workers.kernel.driver import Observation, Run

ROLES = (dns.INTERNAL, dns.PUBLIC)
STALE = "(running in another namespace)"  # the text of a resolver seen where it is not wanted
_ROUTER = re.compile(rf"^{ROUTER_NS_PREFIX}[a-z0-9][a-z0-9-]{{0,31}}$")
# dnsmasq's environment: no locale, no resolver settings, nothing of the worker's
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


_FOUND: list[str] = []


def _dnsmasq() -> str:
    """dnsmasq's path on vpcq's PATH, looked up once found (an observation compares the
    command line of every router's resolvers: a PATH search each costs a stat per directory)."""
    if not _FOUND:
        exe = shutil.which("dnsmasq", path=_ENV["PATH"])
        if exe is None:
            return "dnsmasq"
        _FOUND.append(exe)
    return _FOUND[0]


class Resolvers:
    """Resolver. Starting one waits for dnsmasq to bind its addresses (it reports a failure
    before it detaches); stopping one, for it to exit."""

    kinds: ClassVar[tuple[type, ...]] = (Resolver,)

    def __init__(self, directory: Path) -> None:
        self.dir = directory  # $VPCQ_HOME/dns

    def close(self) -> None:
        pass

    async def observe(self, obs: Observation) -> None:
        for ns in sorted(n for n in obs.scope.namespaces if _ROUTER.match(n)):
            for role in ROLES:
                found = self.running(ns, role)
                if found is not None:
                    obs.put(Resolver(ns, role, found[1]))

    async def apply(self, run: Run) -> None:
        for n, step in enumerate(run.steps):
            r = step.resource
            assert isinstance(r, Resolver)
            await run.check(n, step)
            await self.stop(r.ns, r.name)
            if step.op != "delete":
                await self.start(r.ns, r.name, r.text)

    # ---- files -------------------------------------------------------------------------------

    def _path(self, ns: str, role: str, ext: str) -> Path:
        """A file of one resolver under $VPCQ_HOME/dns, its name made from checked parts."""
        p = self.dir / f"{ns}.{role}.{ext}"
        if not _ROUTER.match(ns) or role not in ROLES or p.parent != self.dir:
            raise KernelError("find", f"resolver {role!r} of {ns!r}", "not a router vpcq makes")
        return p

    def _write(self, path: Path, data: str) -> None:
        """Write a file of vpcq's own whole (0600, never through a symlink)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _read(self, path: Path) -> str | None:
        data = read_bytes(path, 1 << 20, os.O_NOFOLLOW | os.O_NONBLOCK)
        return None if data is None else data.decode(errors="replace")

    def _argv(self, ns: str, role: str) -> list[str]:
        return [_dnsmasq(), f"--conf-file={self._path(ns, role, 'conf')}",
                f"--pid-file={self._path(ns, role, 'pid')}",
                f"--log-facility={self._path(ns, role, 'log')}"]

    # ---- processes -----------------------------------------------------------------------------

    def running(self, ns: str, role: str) -> tuple[ProcId, str] | None:
        """The resolver's process and the configuration it runs with (STALE if it runs in
        another namespace than `ns` names now), if it runs."""
        ident = self._identity(ns, role)
        if ident is None:
            return None
        pid, conf = ident
        text = self._read(self._path(ns, role, "conf"))
        if text is None or hashlib.sha256(text.encode()).hexdigest() != conf:
            text = STALE  # not what it started with: start it again
        try:
            here = os.stat(f"/proc/{pid.pid}/ns/net").st_ino == netns.inode(ns)
        except OSError:
            return None  # exited meanwhile
        return pid, text if here else STALE

    def _identity(self, ns: str, role: str) -> tuple[ProcId, str] | None:
        """The process recorded for the resolver, or the one dnsmasq's own pid file names
        (a worker killed between starting it and recording it), if it is that process."""
        argv = self._argv(ns, role)
        raw = self._read(self._path(ns, role, "id"))
        try:
            d = json.loads(raw) if raw else None
            ident = ProcId(int(d["pid"]), int(d["start"]), str(d["boot"])) if d else None
            conf = str(d["conf"]) if d else ""
        except (ValueError, KeyError, TypeError):
            ident, conf = None, ""  # not written by vpcq: not trusted
        if ident is not None and ident.running() and _cmdline(ident.pid) == argv:
            return ident, conf
        pid = (self._read(self._path(ns, role, "pid")) or "").strip()
        adopted = ProcId.of(int(pid)) if pid.isdigit() else None
        if adopted is not None and adopted.running() and _cmdline(adopted.pid) == argv:
            return adopted, ""  # what it runs with is unknown: seen as stale, started again
        return None

    async def start(self, ns: str, role: str, text: str) -> None:
        """Start the resolver with configuration `text`; raises KernelError with dnsmasq's
        reason (e.g. an address in use) if it does not start."""
        what = f"resolver {role} in {ns}"
        argv = self._argv(ns, role)
        if not os.path.isabs(argv[0]):
            raise KernelError("start", what, "dnsmasq is not installed (apt-get install dnsmasq-base)")
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write(self._path(ns, role, "conf"), text)
            self._path(ns, role, "pid").unlink(missing_ok=True)
        except OSError as e:
            raise KernelError("start", what, str(e)) from e

        def spawn() -> subprocess.CompletedProcess[str]:
            # dnsmasq detaches once its sockets are bound, and exits non-zero before that if
            # it cannot bind them
            return subprocess.run(argv, capture_output=True, text=True, timeout=20,
                                  stdin=subprocess.DEVNULL, cwd="/", env=_ENV)

        try:
            p = await netns.arun_in(ns, spawn)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelError("start", what, str(e)) from e
        if p.returncode != 0:
            lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
            raise KernelError("start", what, lines[-1] if lines else f"dnsmasq exited {p.returncode}")
        pid = (self._read(self._path(ns, role, "pid")) or "").strip()
        ident = ProcId.of(int(pid)) if pid.isdigit() else None
        if ident is None or not ident.running():
            raise KernelError("start", what, "dnsmasq exited right after it started")
        record = {"pid": ident.pid, "start": ident.start, "boot": ident.boot,
                  "conf": hashlib.sha256(text.encode()).hexdigest()}
        self._write(self._path(ns, role, "id"), json.dumps(record))

    async def stop(self, ns: str, role: str, timeout: float = 3.0) -> None:
        """Stop the resolver if it runs (SIGTERM, then SIGKILL after `timeout`), then forget
        its files but the log."""
        found = self._identity(ns, role)
        if found is not None:
            ident = found[0]
            signal_process(ident, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while ident.running() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if ident.running():
                signal_process(ident, signal.SIGKILL)
                while ident.running() and time.monotonic() < deadline + timeout:
                    await asyncio.sleep(0.005)
                if ident.running():
                    raise KernelError("stop", f"resolver {role} in {ns}", f"pid {ident.pid} does not exit")
        for ext in ("id", "pid", "conf"):
            self._path(ns, role, ext).unlink(missing_ok=True)


def _cmdline(pid: int) -> list[str] | None:
    data = read_bytes(f"/proc/{pid}/cmdline", 1 << 20)
    return None if data is None else [a.decode(errors="replace") for a in data.split(b"\0")[:-1]]


def host_resolver(paths: tuple[str, ...] = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
                  ) -> str | None:
    """The host's resolver as a VPC's router can reach it: the first IPv4 nameserver of the
    host's resolv.conf that is not a loopback address (systemd-resolved's stub, 127.0.0.53,
    is the host's own: then the resolvers it forwards to, in its own file), else None."""
    for path in paths:
        try:
            with open(path) as f:
                lines = f.read(65536).splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    addr = ipaddress.IPv4Address(words[1])
                except ValueError:
                    continue
                if not (addr.is_loopback or addr.is_unspecified or addr.is_link_local):
                    return str(addr)
    return None
