"""Where vpcq keeps its things: everything lives under $VPCQ_HOME (default /var/lib/vpcq)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from vpcq.errors import ConfigError

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
    def dns(self) -> Path:
        return self.home / "dns"

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


def check_home(p: Paths) -> None:
    """Refuse, in one line, a $VPCQ_HOME root could be tricked through: owned by another user
    (its redis.pass would be the password, its run/redis.sock the server), writable by group
    or others (anyone could swap a file or plant a symlink where root appends a log), or a
    symlink itself; the same for each of its directories that exists. One that does not
    exist yet is fine (`vpcq up` makes it)."""
    me = os.geteuid()
    for d in (p.home, p.data, p.run, p.logs, p.apps):
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(f"cannot use $VPCQ_HOME: {d}: {e.strerror}") from None
        why = ("is a symlink" if stat.S_ISLNK(st.st_mode)
               else "is not a directory" if not stat.S_ISDIR(st.st_mode)
               else f"is owned by uid {st.st_uid}, not root or you" if st.st_uid not in (0, me)
               else f"is writable by {'group' if st.st_mode & 0o020 else 'others'} "
                    f"(mode {stat.S_IMODE(st.st_mode):o})" if st.st_mode & 0o022
               else None)  # fmt: skip
        if why is not None:
            raise ConfigError(f"refusing $VPCQ_HOME: {d} {why} (vpcq runs as root there: "
                              "make it root's, mode 0700, or choose another)")


def paths() -> Paths:
    """The paths of the instance selected by $VPCQ_HOME."""
    return Paths(Path(os.environ.get("VPCQ_HOME", "/var/lib/vpcq")))


def redis_url(p: Paths | None = None) -> str:
    """$VPCQ_REDIS_URL, or the embedded server's unix socket with its password."""
    url = os.environ.get("VPCQ_REDIS_URL")
    if url:
        return url
    p = p or paths()
    check_home(p)  # its password and its socket are only as good as who owns them
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
