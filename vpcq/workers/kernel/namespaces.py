"""Network namespaces: the routers and the subnets, made and removed by name."""

from __future__ import annotations

from typing import ClassVar, Protocol

from vpcq.orchestrator.topology import Netns
from vpcq.workers.kernel import netns
from vpcq.workers.kernel.driver import Observation, Run
from vpcq.workers.kernel.netlink import Netlink


class Forgets(Protocol):
    def forget(self, ns: str) -> None: ...


class Namespaces:
    """Netns. Blocking: on the netlink thread, where the sockets it forgets live."""

    kinds: ClassVar[tuple[type, ...]] = (Netns,)

    def __init__(self, nl: Netlink, rules: Forgets) -> None:
        self.nl = nl
        self.rules = rules

    def observe(self, obs: Observation) -> None:
        for name in sorted(obs.scope.namespaces):
            self.nl.revalidate(name)
            if netns.exists(name):
                obs.put(Netns(name))
                obs.present.add(name)
            elif ("netns", name) not in obs.desired and netns.leftover(name):
                obs.put(Netns(name))  # a removal cut short: removing it again finishes it

    def apply(self, run: Run, lo: int, hi: int) -> None:
        for n in range(lo, hi):
            step = run.steps[n]
            run.check_here(n, step)
            name = step.resource.name  # type: ignore[union-attr]
            # what is known through the name goes first: its sockets pin the namespace, and
            # a namespace made again under the name is another one
            self.nl.forget(name)
            self.rules.forget(name)
            if step.op == "delete":
                netns.remove(name)
            else:
                netns.create(name)
