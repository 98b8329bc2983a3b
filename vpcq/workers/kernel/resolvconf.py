"""Each subnet namespace's /etc/netns/<ns>/resolv.conf. `ip netns exec <ns>` binds the files
of /etc/netns/<ns>/ over /etc, so a program started there asks the subnet's resolver and
searches its VPC's zone. Only files vpcq wrote (they start with dns.MARK) are vpcq's to
remove: a directory also holding a file of someone else's stays."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import ClassVar

from vpcq.errors import KernelError
from vpcq.orchestrator.dns import MARK
from vpcq.orchestrator.topology import ResolvConf
from vpcq.proc import read_bytes
from vpcq.workers.kernel.driver import Observation, Run

ETC_NETNS = Path("/etc/netns")
FILE = "resolv.conf"
_NS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")  # the namespace names vpcq makes


class ResolvConfs:
    """ResolvConf. Small files: read and written on the event loop."""

    kinds: ClassVar[tuple[type, ...]] = (ResolvConf,)

    def __init__(self, root: Path = ETC_NETNS) -> None:
        self.root = root

    def close(self) -> None:
        pass

    async def observe(self, obs: Observation) -> None:
        # every namespace in scope, made or not: the file outlives its namespace when a
        # removal is cut short between the two
        for ns in sorted(obs.scope.namespaces):
            text = self.read(ns)
            if text is not None and text.startswith(MARK):
                obs.put(ResolvConf(ns, text))

    async def apply(self, run: Run) -> None:
        for n, step in enumerate(run.steps):
            r = step.resource
            assert isinstance(r, ResolvConf)
            await run.check(n, step)
            if step.op == "delete":
                self.remove(r.ns)
            else:
                self.write(r.ns, r.text)

    def _dir(self, ns: str) -> Path:
        """The namespace's directory under /etc/netns, checked to stay there."""
        d = self.root / ns
        if not _NS.match(ns) or d.parent != self.root:
            raise KernelError("write", f"{FILE} of netns {ns!r}", "not a namespace name vpcq makes")
        return d

    def read(self, ns: str) -> str | None:
        """The namespace's resolv.conf, None if there is none (a symlink is not followed)."""
        data = read_bytes(self._dir(ns) / FILE, 65536, os.O_NOFOLLOW)
        return None if data is None else data.decode(errors="replace")

    def write(self, ns: str, text: str) -> None:
        """Replace the file whole (a reader never sees half of it), mode 0644: every program
        in the namespace reads it."""
        d = self._dir(ns)
        try:
            for directory in (self.root, d):
                _real_dir(directory)
            tmp = d / f".{FILE}.vpcq-{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
            try:
                os.write(fd, text.encode())
                os.fchmod(fd, 0o644)  # whatever the umask
            finally:
                os.close(fd)
            os.replace(tmp, d / FILE)  # replaces a symlink itself, never its target
        except OSError as e:
            raise KernelError("write", str(d / FILE), e.strerror or str(e)) from e

    def remove(self, ns: str) -> None:
        """Remove vpcq's file, and the directory once it is empty."""
        d = self._dir(ns)
        text = self.read(ns)
        try:
            if text is not None and text.startswith(MARK):
                os.unlink(d / FILE)
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:  # someone else's files: theirs to keep
                raise KernelError("remove", str(d / FILE), e.strerror or str(e)) from e


def _real_dir(path: Path) -> None:
    """Make a directory (0755) unless it exists; one that is a symlink or a file is an error."""
    try:
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
        return
    except FileExistsError:
        pass
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise OSError(errno.ENOTDIR, f"{path} is not a directory")
