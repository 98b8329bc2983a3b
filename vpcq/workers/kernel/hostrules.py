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

    def restore_here(self, key: Key | None, text: str, doc: str) -> None:
        """`iptables-restore --noflush` of `doc`, made from `text` read at `key`; the text
        after it is kept when nobody else changed a rule meanwhile."""
        iptables.restore_here(doc, noflush=True)
        if key is None:
            return
        now = key_here()
        if now == (key[0], key[1] + transactions(doc)):
            after = Ruleset.parse(text).after(doc)
            if after is not None:
                self._keep(now, after.render())

    def _keep(self, key: Key, text: str) -> None:
        self._seen = (key, text)
        tmp = self.shared.with_name(f".{self.shared.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            tmp.write_text(f"{BOOT_ID} {key[0]} {key[1]}\n{text}")
            os.replace(tmp, self.shared)  # readers see the old file or the new, never half
        except OSError:
            tmp.unlink(missing_ok=True)  # only a cache: the next reader reads the table

    def _load(self, key: Key) -> str | None:
        try:
            head, _, text = self.shared.read_text().partition("\n")
            boot, cookie, gen = head.split()
            written = (int(cookie), int(gen))
        except (OSError, ValueError):
            return None  # missing, or written by an older vpcq: read the table
        return text if boot == BOOT_ID != "unknown" and written == key else None


def key_here() -> Key | None:
    """The calling thread's namespace cookie and nftables generation."""
    gen = wire.generation_here() if iptables.nft_backend() else None
    return None if gen is None else (wire.cookie_here(), gen)
