"""Fault injection, the test hook that proves rollback, deletion retries and clean stops.

VPCQ_FAULT=step:N fails the Nth step of a change (from 0); VPCQ_FAULT=kind:Bridge fails
every step on that kind of object, optionally only one operation (kind:Netns:delete). A
`hold:` in front (hold:step:1) makes the step wait instead, for as long as the spec stays
the same: a test can stop a worker in the middle of a change. VPCQ_FAULT_FILE=PATH holds the
spec in a file, read again before each change, so a test can move or clear the fault while
the worker runs.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from vpcq.errors import KernelError
from vpcq.orchestrator.diff import Step

log = structlog.get_logger("vpcq.faults")


@dataclass(frozen=True)
class Fault:
    """Which steps fail (or wait)."""

    index: int | None = None
    kind: str | None = None
    op: str | None = None
    hold: bool = False

    @classmethod
    def parse(cls, spec: str) -> Fault:
        hold = spec.startswith("hold:")
        what, _, rest = spec.removeprefix("hold:").partition(":")
        arg, _, op = rest.partition(":")
        if what == "step" and arg.isdigit():
            return cls(index=int(arg), hold=hold)
        if what == "kind" and arg:
            return cls(kind=arg, op=op or None, hold=hold)
        raise ValueError(f"VPCQ_FAULT={spec!r}: expected [hold:]step:N or [hold:]kind:Name[:op]")

    def matches(self, n: int, step: Step) -> bool:
        return (
            (self.index is None or n == self.index)
            and (self.kind is None or type(step.resource).__name__ == self.kind)
            and (self.op is None or step.op == self.op)
        )


class Faults:
    """The faults this worker injects: none unless VPCQ_FAULT or VPCQ_FAULT_FILE is set."""

    def __init__(self, spec: str = "", path: str | None = None) -> None:
        self.fixed = Fault.parse(spec) if spec else None
        self.path = Path(path) if path else None

    @classmethod
    def from_env(cls) -> Faults:
        return cls(os.environ.get("VPCQ_FAULT", ""), os.environ.get("VPCQ_FAULT_FILE"))

    def current(self) -> Fault | None:
        """The fault in force now (the file's, read now, if there is a file)."""
        if self.path is None:
            return self.fixed
        try:
            spec = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return Fault.parse(spec) if spec else None

    async def check(self, fault: Fault, n: int, step: Step) -> None:
        """Fail step `n`, or hold it while `fault` stays in force, if `fault` matches it."""
        if not fault.matches(n, step):
            return
        if not fault.hold:
            raise KernelError("inject", step.describe(), "injected fault (VPCQ_FAULT)")
        log.info("holding at a step (VPCQ_FAULT)", n=n, step=step.describe())
        while self.current() == fault:
            await asyncio.sleep(0.02)
