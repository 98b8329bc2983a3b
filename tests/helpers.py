"""Shared test helpers: a real redis-server, throwaway namespaces, workers, a client."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vpcq.events.commands import Command, parse_command
from vpcq.events.connection import connect
from vpcq.events.jobs import JobQueue
from vpcq.events.schema import ChangeApplied, ChangeFailed, Envelope
from vpcq.events.store import EventStore
from vpcq.orchestrator.service import Orchestrator, StateLoader, Submitted

ROOT = Path(__file__).resolve().parents[1]
TEST_PREFIX = "vqt"  # every namespace, VPC and link a test makes starts with this


def token() -> str:
    return TEST_PREFIX + secrets.token_hex(2)


class RedisServer:
    """A redis-server on a private unix socket, with an fsynced append-only file."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.sock = directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (apt-get install redis-server)"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700",
             "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.sock))
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def flush(url: str) -> None:
    async def go() -> None:
        r = await connect(url)
        await r.flushall()
        await r.aclose()

    asyncio.run(go())


class Client:
    """Submits commands through the real orchestrator and waits for workers' outcomes."""

    def __init__(self, url: str, actor: str = "test@host") -> None:
        self.url = url
        self.actor = actor

    async def _with(self, fn: Any) -> Any:
        r = await connect(self.url)
        try:
            store = EventStore(r)
            return await fn(r, store)
        finally:
            await r.aclose()

    def submit(self, *commands: dict[str, Any] | Command, wait: float = 60) -> list[str]:
        """Submit, wait for every outcome; returns 'applied' or 'failed: reason' for each."""
        cmds = [c if not isinstance(c, dict) else parse_command(c) for c in commands]

        async def go(r: Any, store: EventStore) -> list[str]:
            orch = Orchestrator(r, store, JobQueue(r), self.actor)
            subs = await orch.submit_batch(cmds)
            return await self._wait(store, subs, wait)

        return asyncio.run(self._with(go))  # type: ignore[no-any-return]

    async def _wait(self, store: EventStore, subs: Sequence[Submitted], timeout: float) -> list[str]:
        want = {s.command_id: "" for s in subs}

        async def follow() -> None:
            async for env in store.follow(subs[0].first_seq, block_ms=100):
                ev = env.event
                if isinstance(ev, ChangeApplied | ChangeFailed) and ev.command_id in want:
                    if not want[ev.command_id]:
                        want[ev.command_id] = (
                            "applied" if isinstance(ev, ChangeApplied) else f"failed: {ev.reason}"
                        )
                    if all(want.values()):
                        return

        await asyncio.wait_for(follow(), timeout)
        return [want[s.command_id] for s in subs]

    def ok(self, kind: str, **args: Any) -> None:
        """Submit one command and assert it was applied."""
        (res,) = self.submit({"kind": kind, **args})
        assert res == "applied", f"{kind} {args}: {res}"

    def state(self) -> Any:
        async def go(r: Any, store: EventStore) -> Any:
            return await StateLoader(r, store).load()

        return asyncio.run(self._with(go))

    def report(self, outcome: ChangeApplied | ChangeFailed) -> None:
        """Append an outcome as a worker does."""

        async def go(r: Any, store: EventStore) -> None:
            await store.append([Envelope(command_id=outcome.command_id, correlation_id="w",
                                         actor="worker@test", time="t", event=outcome)], None)

        asyncio.run(self._with(go))

    def listening(self, *hosts: str) -> dict[str, int]:
        """How many workers of each host are up (see JobQueue.listening)."""

        async def go(r: Any, store: EventStore) -> dict[str, int]:
            return await JobQueue(r).listening(hosts)

        return asyncio.run(self._with(go))  # type: ignore[no-any-return]

    def events(self) -> list[Any]:
        async def go(r: Any, store: EventStore) -> Any:
            return await store.read()

        return asyncio.run(self._with(go))  # type: ignore[no-any-return]


def run_cli(args: Sequence[str], env: dict[str, str], stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `vpcq` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vpcq.cli.main", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env}, cwd=ROOT,
    )  # fmt: skip


class Console:
    """`vpcq ui` as a user runs it (the real command), on a free loopback port."""

    def __init__(self, env: dict[str, str], listen: str = "127.0.0.1:0") -> None:
        self.env = env
        self.listen = listen
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""  # with the token, as printed
        self.base = ""  # http://127.0.0.1:PORT
        self.token = ""
        self.printed: list[str] = []

    def start(self, timeout: float = 60) -> Console:
        # not a pipe: nobody reads it while it runs; read by stderr(), closed with the test
        self.err = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vpcq.cli.main", "ui", "--listen", self.listen],
            stdout=subprocess.PIPE, stderr=self.err, env={**os.environ, **self.env}, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()  # read unbuffered: the URL may come in one write with more
        out = b""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(rb"(http://127\.0\.0\.1:\d+)/\?token=([A-Za-z0-9_-]+)", out)
            if m:
                self.url, self.base, self.token = (g.decode() for g in (m.group(0), m.group(1), m.group(2)))
                self.printed = out.decode().splitlines()
                return self
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"vpcq ui did not print its URL: {out.decode()!r} {self.stderr()}")
            out += chunk

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C or a service manager would; its exit code."""
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("vpcq ui did not stop within 15 s of SIGTERM") from None
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")
