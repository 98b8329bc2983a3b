"""Where vpcq keeps its things: everything lives under $VPCQ_HOME (default /var/lib/vpcq)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

QUEUE = "vpcq:jobs"
KEY_PREFIX = "vpcq"
DEFAULT_HOST = "default"


def host_id() -> str:
    """This machine's name among hosts that share one Redis ($VPCQ_HOST, default "default":
    all a single-host setup needs). A VPC is built by the workers of its host."""
    return os.environ.get("VPCQ_HOST") or DEFAULT_HOST


def queue_of(host: str) -> str:
    """The arq queue of one host's workers."""
    return QUEUE if host == DEFAULT_HOST else f"{QUEUE}@{host}"


@dataclass(frozen=True)
class Paths:
    """Files and directories of one vpcq instance."""

    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "log"

    @property
    def apps(self) -> Path:
        return self.home / "apps"

    @property
    def redis_sock(self) -> Path:
        return self.run / "redis.sock"

    @property
    def redis_pass(self) -> Path:
        return self.home / "redis.pass"

    @property
    def redis_conf(self) -> Path:
        return self.home / "redis.conf"

    @property
    def redis_pid(self) -> Path:
        return self.run / "redis.pid"

    def worker_pid(self, n: int) -> Path:
        return self.run / f"worker-{n}.pid"


def paths() -> Paths:
    """The paths of the instance selected by $VPCQ_HOME."""
    return Paths(Path(os.environ.get("VPCQ_HOME", "/var/lib/vpcq")))


def redis_url(p: Paths | None = None) -> str:
    """$VPCQ_REDIS_URL, or the embedded server's unix socket with its password."""
    url = os.environ.get("VPCQ_REDIS_URL")
    if url:
        return url
    p = p or paths()
    password = p.redis_pass.read_text().strip() if p.redis_pass.exists() else ""
    auth = f"?password={quote(password)}" if password else ""
    return f"unix://{p.redis_sock}{auth}"


def describe_url(url: str) -> str:
    """The URL without its password, for messages: no user info (`user:pass@`), no query
    (`?password=`), whatever the scheme; and printable (a URL is shown in one line)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    head, slash, path = rest.partition("/")
    if "@" in head:
        head = "***@" + head.rsplit("@", 1)[1]
    shown = f"{scheme}{sep}{head}{slash}{path}"
    return "".join(ch if ch.isprintable() else "?" for ch in shown)[:200]
