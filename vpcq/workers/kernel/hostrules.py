"""The host's rules as `iptables-save` prints them, read as rarely as possible.

The host holds every VPC's chains, so its `iptables-save` grows with the VPCs, where a
restore does not. Each VPC change on the host needs the text (to observe its chain, and to
place its jumps): read every time, a batch's cost would grow with the square of its VPCs.

The text is kept with the key it was read at: the host namespace's cookie and its nftables
generation, which every committed rule change moves (vpcq's, another program's or a hand
edit's), one per table. It is valid exactly while the key is the same. The key and text are
also kept in a file that every worker of this host shares, so a change made by one worker
does not make the next worker read the table again. The file outlives a reboot, and both
halves of the key start over (cookies and generations count from boot), so the file also
names the boot it was written in. After a restore of its own, a worker applies the document
to the text it held, which is valid if the generation moved by exactly one per table of the
document: nobody else wrote in between.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from vpcq import proc
from vpcq.workers.kernel import iptables, wire
from vpcq.workers.kernel.ruleset import Ruleset, transactions

Key = tuple[int, int]  # (cookie of the host's network namespace, nftables generation)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"  # never equal to a real boot's id, nor kept across one


BOOT_ID = _boot_id()


class HostRules:
    """The host's rules, on threads in the host namespace (the `_here` convention)."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared  # the file this host's workers share
        self._seen: tuple[Key, str] | None = None

    def read_here(self) -> tuple[Key | None, str]:
        """The host's rules and the key they are valid at (None: nftables cannot tell, and
        the text was read now)."""
        key = key_here()
        if key is None:
            return None, iptables.save_here()
        seen = self._seen
        if seen is not None and seen[0] == key:
            return key, seen[1]
        text = self._load(key)
        if text is not None:
            self._seen = (key, text)
            return key, text
        text = iptables.save_here()
        if key_here() == key:  # nothing changed while it was read
            self._keep(key, text)
        return key, text

    def cached(self, gen: int | None) -> str | None:
        """The text this process holds, if it is valid at generation `gen` of the calling
        thread's namespace (the host's): no thread hop for a warm read."""
        seen = self._seen
        if gen is None or seen is None or seen[0] != (wire.cookie_here(), gen):
            return None
        return seen[1]

    def restore_here(self, key: Key | None, text: str, doc: str,
                     parsed: Ruleset | None = None) -> tuple[str, Ruleset] | None:
        """`iptables-restore --noflush` of `doc`, made from `text` read at `key` (`parsed`:
        its parse, if the caller has it); the text after it is kept when nobody else changed
        a rule meanwhile, and returned with its parse (None when it is not known)."""
        iptables.restore_here(doc, noflush=True)
        if key is None:
            return None
        now = key_here()
        if now == (key[0], key[1] + transactions(doc)):
            after = (parsed or Ruleset.parse(text)).after(doc)
            if after is not None:
                rendered = after.render()
                self._keep(now, rendered)
                return rendered, after
        return None

    def _keep(self, key: Key, text: str) -> None:
        self._seen = (key, text)
        keep(self.shared, key, text)

    def _load(self, key: Key) -> str | None:
        return load(self.shared, key)


def keep(path: Path, key: Key, text: str) -> None:
    """Write rules text read at `key` (and in this boot) where other processes find it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        fd = proc.open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(f"{BOOT_ID} {key[0]} {key[1]}\n{text}")
        os.replace(tmp, path)  # readers see the old file or the new, never half
    except OSError:
        tmp.unlink(missing_ok=True)  # only a cache: the next reader reads the table


def load(path: Path, key: Key) -> str | None:
    """What `keep` wrote at `path`, if it was read at `key` in this boot (else None)."""
    try:
        fd = proc.open_private(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd) as f:
            head, _, text = f.read().partition("\n")
        boot, cookie, gen = head.split()
        written = (int(cookie), int(gen))
    except (OSError, ValueError):
        return None  # missing, or written by an older vpcq: read the table
    return text if boot == BOOT_ID != "unknown" and written == key else None


def key_here() -> Key | None:
    """The calling thread's namespace cookie and nftables generation."""
    gen = wire.generation_here() if iptables.nft_backend() else None
    return None if gen is None else (wire.cookie_here(), gen)
