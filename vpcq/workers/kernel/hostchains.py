"""The host's rules that vpcq owns: one chain per VPC (`VPCQ-<key>`, in filter and nat) and
the jumps to it from FORWARD and POSTROUTING; and for a VPC with public ports, a nat chain of
its DNATs (`VPCQ-<key>-dnat`) and the jumps to it from PREROUTING and OUTPUT. Nothing else
on the host is flushed, reordered or removed: other programs' rules (Docker's) keep their
places."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from vpcq.errors import KernelError
from vpcq.orchestrator.rules import host_jumps, host_port_jumps
from vpcq.orchestrator.topology import HostChain, HostPorts
from vpcq.workers.kernel import iptables, netns
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.hostrules import HostRules
from vpcq.workers.kernel.netlink import Netlink
from vpcq.workers.kernel.ruleset import Ruleset

OWNED = "VPCQ-OWNED"  # marks a host table that vpcq created
OnNetlink = Callable[..., Awaitable[Any]]


class HostChains:
    """HostChain. The host's rules are read rarely (see HostRules) and changed under a lock
    this host's workers share; a cleanup's or a repair's chains go in one restore."""

    kinds: ClassVar[tuple[type, ...]] = (HostChain, HostPorts)

    def __init__(self, nl: Netlink, netlink: OnNetlink, lock: Path) -> None:
        self.nl = nl
        self.netlink = netlink
        self.lock = lock  # serialises host rule changes between this host's workers
        self.host = HostRules(lock.with_name("host-rules.cache"))
        self._parsed: tuple[str, Ruleset] | None = None  # the last text parsed, and its parse

    def close(self) -> None:
        pass

    async def observe(self, obs: Observation) -> None:
        chains, ports = obs.scope.host_chains, obs.scope.host_ports
        if not chains and not ports:
            return
        rs = self._ruleset(await self._read())
        jumps = rs.jumps_to(chains | ports)
        for chain in chains:
            f, n = tuple(rs.chain("filter", chain)), tuple(rs.chain("nat", chain))
            if f or n or jumps[chain]:
                obs.put(HostChain(chain, _uplink(jumps[chain], chain), f, n))
        nat = rs.tables.get("nat")
        for chain in ports:
            if jumps[chain] or (nat is not None and chain in nat.rules):
                want = {f"{t}:{c} {rest}" for t, c, rest in host_port_jumps(chain)}
                obs.put(HostPorts(chain, tuple(rs.chain("nat", chain)), jumped=want <= jumps[chain]))

    def _ruleset(self, text: str) -> Ruleset:
        """`text` parsed; the same text as last time is not parsed again (a warm host's rules
        are the text held since the last change, observed by every change of a batch)."""
        last = self._parsed
        if last is None or last[0] != text:
            last = self._parsed = (text, Ruleset.parse(text))
        return last[1]

    async def _read(self) -> str:
        """The host's rules: as last read while nothing has changed since, else read now."""

        def held() -> str | None:  # on the netlink thread, which is in the host namespace
            gen = self.nl.generation(None) if iptables.nft_backend() else None
            return self.host.cached(gen)

        text = await self.netlink(held)
        return text if text is not None else await netns.arun_in(None, lambda: self.host.read_here()[1])

    async def apply(self, run: Run) -> None:
        for n, step in enumerate(run.steps):
            await run.check(n, step)
        chains = [s.resource for s in run.steps if isinstance(s.resource, HostChain | HostPorts)]
        delete = run.steps[0].op == "delete"

        # the jump rules sit in one block, sorted by chain, so the host's tables are a function
        # of the log and not of the order in which VPCs were made, rolled back or restored;
        # the positions are read and used under a lock shared by this host's workers
        def create() -> None:
            key, text = self.host.read_here()  # what observe read, unless a rule changed since
            # a table vpcq brings into existence gets an owner tag, so that the last VPC's
            # teardown can remove the table too and leave `nft list ruleset` as it found it
            rs = self._ruleset(text)
            doc = rs.setup({r.chain: _rules(r) for r in chains},
                           [j for r in chains for j in _jumps(r)], OWNED)
            # the text after it is the next change's to observe: its parse is kept with it
            # (parsing the host's rules is what grows with its VPCs)
            self._parsed = self.host.restore_here(key, text, doc, rs) or self._parsed

        # read, delete and drop emptied tables under the lock: two workers tearing down the
        # last two VPCs at once must not both try to remove the same table
        def teardown() -> None:
            key, text = self.host.read_here()
            rs = self._ruleset(text)
            doc = rs.teardown([r.chain for r in chains])
            if doc:
                self._parsed = self.host.restore_here(key, text, doc, rs) or self._parsed
            iptables.drop_tables_here(self._ruleset(self.host.read_here()[1]).emptied(OWNED))

        await locked(self.lock, teardown if delete else create)


def _rules(r: HostChain | HostPorts) -> dict[str, tuple[str, ...]]:
    """A host chain's rules by table (a public ports' chain is in nat alone)."""
    return {"filter": r.filter, "nat": r.nat} if isinstance(r, HostChain) else {"nat": r.rules}


def _jumps(r: HostChain | HostPorts) -> list[tuple[str, str, str]]:
    return host_jumps(r.chain, r.uplink) if isinstance(r, HostChain) else host_port_jumps(r.chain)


def _uplink(jumps: set[str], chain: str) -> str:
    """The uplink named by a complete set of jump rules, else '' (so diff repairs them)."""
    for j in jumps:
        if j.startswith("filter:FORWARD -i "):
            up = j.split()[2]
            if {f"{t}:{c} {rest}" for t, c, rest in host_jumps(chain, up)} <= jumps:
                return up
    return ""


async def locked(path: Path, work: Callable[[], None], wait: float = 30.0) -> None:
    """Run `work` on a namespace thread in the host, holding the host-rules lock that this
    host's workers share. The wait for the lock and everything done under it happen on that
    thread: the event loop goes on meanwhile, and the lock is held for the work alone, not
    also for the loop's turns back to a job between its steps (with two workers, those turns
    kept the lock held for most of a batch). A lock held elsewhere for longer than `wait` is a
    transient error: a thread never waits without end (nor, then, a worker's exit)."""

    def hold() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        with open(path, "a") as f:
            pause = 0.0005
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise KernelError("lock", "host rules", f"held elsewhere for {wait:.0f} s",
                                          transient=True) from None
                    # a little longer each time: a waiter polling every millisecond took CPU
                    # from the holder (py-spy, two workers at 2,000 subnets: 7% of one's time)
                    time.sleep(pause)
                    pause = min(pause * 2, 0.008)
            try:
                work()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    await netns.arun_in(None, hold)
