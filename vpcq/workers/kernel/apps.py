"""Apps: the HTTP servers `deploy-app` runs in subnet namespaces, detached, tracked by pid
files under $VPCQ_HOME."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vpcq.errors import KernelError
from vpcq.orchestrator.topology import App
from vpcq.proc import child_env, python
from vpcq.safepath import under
from vpcq.workers.kernel import netns
from vpcq.workers.kernel.driver import Observation, Run

MODULE = "vpcq.workers.appserver"
MARKER = "vpcq.workers.app"  # in an app's command line: also matches apps started before the rename


@dataclass(frozen=True, slots=True)
class RunningApp:
    ns: str
    pid: int
    port: int
    vpc: str
    subnet: str


class Apps:
    """App. Starting one waits for it to bind its port; stopping one, for it to exit."""

    kinds: ClassVar[tuple[type, ...]] = (App,)

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def close(self) -> None:
        pass

    async def observe(self, obs: Observation) -> None:
        if not obs.namespaces:
            return
        # a pid file and /proc for each namespace: read on a thread, all in one trip
        found = await netns.arun_in(None, lambda: [self.running(ns) for ns in obs.namespaces])
        for app in found:
            if app is not None:
                obs.put(App(app.ns, app.port, app.vpc, app.subnet))

    async def apply(self, run: Run) -> None:
        for n, step in enumerate(run.steps):
            r = step.resource
            assert isinstance(r, App)
            await run.check(n, step)
            await self.stop(r.ns)  # a stale or different app goes first
            if step.op != "delete":
                await self.start(r.ns, r.port, r.vpc, r.subnet)

    def _pidfile(self, ns: str) -> Path:
        return self._file(ns, ".json")

    def _file(self, ns: str, suffix: str) -> Path:
        """A file of the app in `ns`, which must stay in the apps' directory."""
        return Path(under(str(self.dir), ns + suffix))

    def running(self, ns: str) -> RunningApp | None:
        """The app running in `ns`, if its pid file names a live app inside that namespace."""
        try:
            meta = json.loads(self._pidfile(ns).read_text())
        except (OSError, ValueError):
            return None
        pid = int(meta["pid"])
        if not _is_app_in(pid, ns):
            return None
        return RunningApp(ns, pid, int(meta["port"]), meta["vpc"], meta["subnet"])

    async def start(self, ns: str, port: int, vpc: str, subnet: str) -> None:
        """Start the app in `ns` and wait until it has bound its port (on a thread in `ns`)."""
        what = f"app :{port} in {ns}"
        argv = python(MODULE, "--vpc", vpc, "--subnet", subnet, "--port", str(port),
                      "--log", str(self._file(ns, ".log")))

        def spawn() -> None:
            self.dir.mkdir(parents=True, exist_ok=True)
            # the intermediate exits as soon as the server is bound (or failed to bind)
            p = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                               stdin=subprocess.DEVNULL, cwd="/", env=child_env())
            words = p.stdout.split()
            if p.returncode != 0 or len(words) != 2 or words[0] != "READY":
                reason = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
                raise KernelError("start", what, reason)
            meta = {"pid": int(words[1]), "port": port, "vpc": vpc, "subnet": subnet}
            self._pidfile(ns).write_text(json.dumps(meta))

        try:
            await netns.arun_in(ns, spawn)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelError("start", what, str(e)) from e

    async def stop(self, ns: str) -> None:
        """Stop the app in `ns`, if one runs, and wait until it has exited."""
        app = await netns.arun_in(None, lambda: self.running(ns))
        if app is not None:
            await _terminate(app.pid)
        await netns.arun_in(None, lambda: self._pidfile(ns).unlink(missing_ok=True))


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _is_app_in(pid: int, ns: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        ino = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return False
    return MARKER.encode() in cmdline and _state(pid) != "Z" and ino == netns.inode(ns)


async def _terminate(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; the event loop goes on meanwhile."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _state(pid) in (None, "Z"):  # gone, or dead and waiting for init to reap it
            return
        await asyncio.sleep(0.005)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
