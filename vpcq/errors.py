"""The error taxonomy, translated once at each boundary (CLI exit codes, job outcomes)."""

from __future__ import annotations


class VpcqError(Exception):
    """Base of every error vpcq raises on purpose."""

    exit_code = 1
    where: str | None = None  # where in a batch file its command is: "line 4", "item 2"


class DomainError(VpcqError):
    """A command was rejected by the rules of the domain; nothing was appended."""

    exit_code = 2
    index: int | None = None  # which command of a batch (set by the orchestrator)

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ConcurrencyError(VpcqError):
    """The log moved past the version a decision was made on."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"log is at version {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class ConfigError(VpcqError):
    """Infrastructure is missing or unreachable (Redis, a binary, a directory)."""

    exit_code = 3


class KernelError(VpcqError):
    """A kernel operation failed; names the object and the operation."""

    def __init__(self, op: str, obj: str, reason: str, *, transient: bool = False) -> None:
        super().__init__(f"{op} {obj}: {reason}")
        self.op = op
        self.obj = obj
        self.reason = reason
        self.transient = transient


class LockLost(VpcqError):
    """A worker's lease on VPC locks lapsed while it worked: another may hold them now."""

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        what = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        super().__init__(f"lost the lock of {what}: stopped before the next change")
        self.names = names
