"""IPv4 routes with a gateway, in the main table."""

from __future__ import annotations

from typing import ClassVar

from vpcq.orchestrator.topology import Route
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.netlink import Netlink


class Routes:
    """Route. Blocking: on the netlink thread."""

    kinds: ClassVar[tuple[type, ...]] = (Route,)

    def __init__(self, nl: Netlink) -> None:
        self.nl = nl

    def observe(self, obs: Observation) -> None:
        for ns, lmap in obs.links.items():
            for dst, gw, dev in self.nl.routes(ns, lmap, each=ns is None):
                obs.put(Route(ns, dst, gw, dev))

    def apply(self, run: Run, lo: int, hi: int) -> None:
        for n in range(lo, hi):
            step, r = run.steps[n], run.steps[n].resource
            assert isinstance(r, Route)
            run.check_here(n, step)
            if step.op == "delete":
                self.nl.del_route(r.ns, r.dst)
            else:
                self.nl.replace_route(r.ns, r.dst, r.gateway, r.dev)
