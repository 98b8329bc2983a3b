"""IPv4 addresses on links."""

from __future__ import annotations

from typing import ClassVar

from vpcq.orchestrator.topology import Addr
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.netlink import Netlink


class Addresses:
    """Addr. Blocking: on the netlink thread."""

    kinds: ClassVar[tuple[type, ...]] = (Addr,)

    def __init__(self, nl: Netlink) -> None:
        self.nl = nl

    def observe(self, obs: Observation) -> None:
        for ns, lmap in obs.links.items():
            # the host's are asked for link by link (the kernel filters): it holds every uplink
            for dev, address, prefixlen in self.nl.addrs(ns, lmap, each=ns is None):
                if dev != "lo":
                    obs.put(Addr(ns, dev, address, prefixlen))

    def apply(self, run: Run, lo: int, hi: int) -> None:
        for n in range(lo, hi):
            step, r = run.steps[n], run.steps[n].resource
            assert isinstance(r, Addr)
            run.check_here(n, step)
            if step.op == "delete":
                self.nl.del_addr(r.ns, r.dev, r.address, r.prefixlen)
            else:
                self.nl.add_addr(r.ns, r.dev, r.address, r.prefixlen)
