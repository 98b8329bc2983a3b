"""Links: bridges, veth pairs, and a link's master and state."""

from __future__ import annotations

from typing import ClassVar

from vpcq.orchestrator.topology import UNKNOWN, Bridge, LinkState, Veth
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.netlink import LinkInfo, Netlink


class Links:
    """Bridge, Veth, LinkState. Blocking: on the netlink thread."""

    kinds: ClassVar[tuple[type, ...]] = (Bridge, Veth, LinkState)

    def __init__(self, nl: Netlink) -> None:
        self.nl = nl

    def observe(self, obs: Observation) -> None:
        if obs.scope.host_links:  # looked up by name: the host holds every VPC's uplink
            obs.links[None] = self.nl.links(None, obs.scope.host_links)
        for name in obs.namespaces:
            obs.links[name] = self.nl.links(name)
        self._veths(obs)
        for ns, lmap in obs.links.items():
            for li in lmap.values():
                if li.kind == "bridge" and ns is not None:
                    obs.put(Bridge(ns, li.name))
                obs.put(LinkState(ns, li.name, li.master, li.up))

    def _veths(self, obs: Observation) -> None:
        """Each known pair that exists, and every other veth end as a stray.

        Only namespaces in scope are looked into. Deleting either end of a veth deletes the
        pair, so an end seen in one namespace vouches for its peer in a namespace not looked
        into (another VPC's router, a subnet this change does not touch).
        """

        def end(ns: str | None, name: str) -> bool | None:
            if ns not in obs.links:
                return None  # not looked into
            li: LinkInfo | None = obs.links[ns].get(name)
            return li is not None and li.kind == "veth"

        known: dict[tuple[object, ...], Veth] = {r.key: r for r in obs.scope.veths}
        known.update((k, r) for k, r in obs.desired.items() if isinstance(r, Veth))
        covered: set[tuple[str | None, str]] = set()
        for r in known.values():
            a, b = end(r.ns, r.name), end(r.peer_ns, r.peer_name)
            if (a or a is None) and (b or b is None) and (a or b):
                obs.put(r)
                covered |= {(r.ns, r.name), (r.peer_ns, r.peer_name)}
        for ns, lmap in obs.links.items():
            for li in lmap.values():
                if li.kind == "veth" and (ns, li.name) not in covered:
                    obs.put(Veth(ns, li.name, UNKNOWN, UNKNOWN))  # broken or not wanted

    def apply(self, run: Run, lo: int, hi: int) -> None:
        n = lo
        while n < hi:
            step, r = run.steps[n], run.steps[n].resource
            if step.op == "delete" and isinstance(r, Veth):
                # veths of one namespace deleted one after another go in one request
                end = n + 1
                while end < hi and run.steps[end].op == "delete" and \
                        isinstance(run.steps[end].resource, Veth) and run.steps[end].resource.ns == r.ns:
                    end += 1
                for m in range(n, end):
                    run.check_here(m, run.steps[m])
                self.nl.delete_links(r.ns, [s.resource.name for s in run.steps[n:end]  # type: ignore[union-attr]
                                            ])
                n = end
                continue
            run.check_here(n, step)
            match r:
                case Bridge():
                    if step.op == "delete":
                        self.nl.delete_link(r.ns, r.name)
                    else:
                        self.nl.add_bridge(r.ns, r.name, up=step.state is not None)
                case Veth():
                    st = step.state
                    self.nl.add_veth(r.ns, r.name, r.peer_ns, r.peer_name, st is not None,
                                     st.master if st is not None else None)
                case LinkState() if step.op != "delete":  # a link's state goes with the link
                    self.nl.set_link(r.ns, r.name, r.master)
            n += 1
