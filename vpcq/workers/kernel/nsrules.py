"""The rule tables of vpcq's namespaces (a router's NAT and forwarding, a subnet's security
group), each restored whole by one iptables-restore, read with iptables-save."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from vpcq.errors import KernelError
from vpcq.orchestrator.rules import EMPTY_FILTER
from vpcq.orchestrator.topology import Rules
from vpcq.workers.kernel import hostrules, iptables
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.netlink import Netlink

T = TypeVar("T")
Key = tuple[int | None, int | None]  # a namespace's identity and nftables generation
OnNetlink = Callable[..., Awaitable[Any]]


class NamespaceRules:
    """Rules. A table is read again only when the namespace's nftables generation (moved by
    any rule change, vpcq's or a hand edit) has moved: a warm no-op change forks no
    iptables-save.

    What was read is also kept in a file per namespace under `shared`, with the key it is
    valid at (the namespace's cookie and generation, and the boot), as the host's rules are
    (see hostrules): a `vpcq drift` or `vpcq repair` process, and a worker just started,
    read a table only if it changed since any of this host's processes last read it, not
    every namespace's (an iptables-save process each) on every run."""

    kinds: ClassVar[tuple[type, ...]] = (Rules,)

    def __init__(self, nl: Netlink, netlink: OnNetlink, shared: Path | None = None) -> None:
        self.nl = nl
        self.netlink = netlink  # runs a Netlink call on its thread
        self.shared = shared  # a directory, or None: nothing kept across processes
        # a namespace -> ((its identity, nft generation), its rules as last read)
        self._seen: dict[str, tuple[tuple[int | None, int], str]] = {}

    def forget(self, ns: str) -> None:
        """A namespace made or removed: what was read of an older one of that name goes."""
        self._seen.pop(ns, None)
        path = self._file(ns)
        if path is not None:
            path.unlink(missing_ok=True)

    def _file(self, ns: str) -> Path | None:
        """Where the rules of `ns` are kept: a namespace's name is a file name under
        /run/netns, and one of another's making could start with a dot."""
        if self.shared is None or not ns or "/" in ns or ns.startswith("."):
            return None
        return self.shared / ns

    def close(self) -> None:
        pass

    async def observe(self, obs: Observation) -> None:
        def trusted(ns: str) -> bool:
            return obs.trusted(("rules", ns)) and isinstance(obs.desired.get(("rules", ns)), Rules)

        owned = obs.namespaces
        read = [ns for ns in owned if obs.all_rules or (ns in obs.scope.rules_ns and not trusted(ns))]
        # read side by side (an iptables-save process each, on the namespace threads): a drift
        # check of 100 VPCs reads 500
        # each namespace's identity and generation in one trip to the netlink thread (a
        # trip each costs a whole-host check more than the reads it spares), then the
        # rules of those whose key moved, read side by side
        keys = await self.netlink(self._keys, read)
        texts: dict[str, str] = {}
        stale: list[str] = []
        for ns in read:
            text = self._cached(ns, keys[ns])
            if text is None:
                stale.append(ns)
            else:
                texts[ns] = text
        texts.update(zip(stale, await asyncio.gather(*(self.read(ns, keys[ns]) for ns in stale)),
                         strict=True))
        for ns in owned:
            want = obs.desired.get(("rules", ns))
            if ns in texts:
                obs.put(Rules(ns, texts[ns]))
            elif isinstance(want, Rules) and (trusted(ns) or want.text == EMPTY_FILTER):
                obs.put(want)  # left as it was by the change, or vpcq never put rules there

    async def read(self, ns: str, key: Key | None = None) -> str:
        """A namespace's rules as `iptables-save` prints them (normalised); `key`: its
        identity and generation, if the caller has them already."""
        if key is None:
            key = await self.netlink(self._key, ns)
        identity, gen = key
        if gen is None:
            return await iptables.save(ns) or EMPTY_FILTER
        # a namespace made again starts a new generation count
        seen = (identity, gen)
        cached = self._cached(ns, key)
        if cached is not None:
            return cached
        path = self._file(ns) if identity is not None else None
        kept = hostrules.load(path, (identity, gen)) if path is not None and identity is not None \
            else None
        if kept is not None:
            self._seen[ns] = (seen, kept)
            return kept
        text = await iptables.save(ns) or EMPTY_FILTER
        if await self.netlink(self.nl.generation, ns) == gen:  # nothing changed while it was read
            self._seen[ns] = (seen, text)
            if path is not None and identity is not None:
                assert self.shared is not None
                self.shared.mkdir(mode=0o700, exist_ok=True)
                hostrules.keep(path, (identity, gen), text)
        return text

    def _cached(self, ns: str, key: Key) -> str | None:
        """The rules this process read at `key`, if it did."""
        cached = self._seen.get(ns)
        return cached[1] if key[1] is not None and cached is not None and cached[0] == key else None

    def _keys(self, names: list[str]) -> dict[str, Key]:
        return {ns: self._key(ns) for ns in names}

    def _key(self, ns: str) -> Key:
        """(identity, nftables generation) of a namespace, on the netlink thread; the
        identity is only asked for when there is a generation."""
        gen = self._generation(ns)
        return (self._identity(ns) if gen is not None else None), gen

    def _generation(self, ns: str) -> int | None:
        """The namespace's nftables generation, if iptables' changes move it (on the netlink
        thread: finding out the first time runs `iptables -V`)."""
        return self.nl.generation(ns) if iptables.nft_backend() else None

    def _identity(self, ns: str) -> int | None:
        """The namespace `ns` names now, None if it names none (on the netlink thread)."""
        try:
            return self.nl.identity(ns)
        except (KernelError, OSError):
            return None  # removed meanwhile

    async def apply(self, run: Run) -> None:
        for n, step in enumerate(run.steps):
            r = step.resource
            assert isinstance(r, Rules)
            await run.check(n, step)
            await iptables.restore(r.ns, EMPTY_FILTER if step.op == "delete" else r.text)
