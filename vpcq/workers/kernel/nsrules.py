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
        texts = dict(zip(read, await asyncio.gather(*map(self.read, read)), strict=True))
        for ns in owned:
            want = obs.desired.get(("rules", ns))
            if ns in texts:
                obs.put(Rules(ns, texts[ns]))
            elif isinstance(want, Rules) and (trusted(ns) or want.text == EMPTY_FILTER):
                obs.put(want)  # left as it was by the change, or vpcq never put rules there

    async def read(self, ns: str) -> str:
        """A namespace's rules as `iptables-save` prints them (normalised)."""
        gen = await self.netlink(self._generation, ns)
        if gen is None:
            return await iptables.save(ns) or EMPTY_FILTER
        # a namespace made again starts a new generation count
        seen = (await self.netlink(self._identity, ns), gen)
        cached = self._seen.get(ns)
        if cached is not None and cached[0] == seen:
            return cached[1]
        identity = seen[0]
        path = self._file(ns) if identity is not None else None
        key = (identity, gen) if identity is not None else None
        kept = hostrules.load(path, key) if path is not None and key is not None else None
        if kept is not None:
            self._seen[ns] = (seen, kept)
            return kept
        text = await iptables.save(ns) or EMPTY_FILTER
        if await self.netlink(self.nl.generation, ns) == gen:  # nothing changed while it was read
            self._seen[ns] = (seen, text)
            if path is not None and key is not None:
                assert self.shared is not None
                self.shared.mkdir(mode=0o700, exist_ok=True)
                hostrules.keep(path, key, text)
        return text

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
