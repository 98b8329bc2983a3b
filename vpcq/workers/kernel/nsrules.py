"""The rule tables of vpcq's namespaces (a router's NAT and forwarding, a subnet's security
group), each restored whole by one iptables-restore, read with iptables-save."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from vpcq.errors import KernelError
from vpcq.orchestrator.rules import EMPTY_FILTER
from vpcq.orchestrator.topology import Rules
from vpcq.workers.kernel import iptables, netns
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.netlink import Netlink

T = TypeVar("T")
OnNetlink = Callable[..., Awaitable[Any]]


class NamespaceRules:
    """Rules. A table is read again only when the namespace's nftables generation (moved by
    any rule change, vpcq's or a hand edit) has moved: a warm no-op change forks no
    iptables-save."""

    kinds: ClassVar[tuple[type, ...]] = (Rules,)

    def __init__(self, nl: Netlink, netlink: OnNetlink) -> None:
        self.nl = nl
        self.netlink = netlink  # runs a Netlink call on its thread
        # a namespace -> ((its identity, nft generation), its rules as last read)
        self._seen: dict[str, tuple[tuple[int | None, int], str]] = {}

    def forget(self, ns: str) -> None:
        """A namespace made or removed: what was read of an older one of that name goes."""
        self._seen.pop(ns, None)

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
        text = await iptables.save(ns) or EMPTY_FILTER
        if await self.netlink(self.nl.generation, ns) == gen:  # nothing changed while it was read
            self._seen[ns] = (seen, text)
        return text

    def _generation(self, ns: str) -> int | None:
        """The namespace's nftables generation, if iptables' changes move it (on the netlink
        thread: finding out the first time runs `iptables -V`)."""
        return self.nl.generation(ns) if iptables.nft_backend() else None

    def _identity(self, ns: str) -> int | None:
        """The namespace `ns` names now, None if it names none (on the netlink thread)."""
        if netns.inode(ns) is None:
            return None
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
