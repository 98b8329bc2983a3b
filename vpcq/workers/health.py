"""Balancers' health checks: a TCP connection to every target of every balancer of this
host's VPCs, from the balancer's router, every $VPCQ_HEALTH_INTERVAL seconds (2).

One worker of a host checks: the one holding the host's health lease (a lock in Redis,
`health@<host>`, renewed like a VPC's). Checks from every worker would be as many
connections to each target, with results that could disagree. If that worker stops or
dies, its lease lapses within 5 s and another worker of the host takes the checks over.

A target that fails a check is checked again at once (after `confirm` seconds), and is out
of its balancer's rotation once that fails too: one lost SYN is not an outage. A target out
of rotation is back after one check that succeeds. With the defaults, a target that stops
answering is out within about 2 + 1 + 0.3 + 1 s (the next check, its timeout, the second
check and its timeout) and back within about 2 s.

Results are observed state, kept beside the log (`vpcq:observed`, field `health:<vpc>`),
never appended to it. When they change, the checker brings the VPC's router rules in line
(Controller.follow_health), retrying while a change to the VPC is being applied (that
change plans with the health too).
"""

from __future__ import annotations

import asyncio
import os

import structlog

from vpcq import config
from vpcq.errors import LockLost
from vpcq.events.observed import Health, Observed, down_of
from vpcq.orchestrator.service import utc_now
from vpcq.orchestrator.state import State
from vpcq.workers.controller import Controller
from vpcq.workers.kernel.health import tcp_check
from vpcq.workers.locks import Busy, Lease, Locks

log = structlog.get_logger("vpcq.health")
Target = tuple[str, str, str]  # (VPC, balancer, "subnet:port")


class HealthChecker:
    """Checks targets while it holds this host's health lease; see the module's docstring."""

    def __init__(self, controller: Controller, redis: object, interval: float | None = None,
                 timeout: float | None = None, confirm: float = 0.3) -> None:
        self.controller = controller
        self.locks = Locks(redis, config.KEY_PREFIX)  # type: ignore[arg-type]
        self.observed = Observed(redis)  # type: ignore[arg-type]
        self.interval = interval or float(os.environ.get("VPCQ_HEALTH_INTERVAL", "2"))
        self.timeout = timeout or float(os.environ.get("VPCQ_HEALTH_TIMEOUT", "1"))
        self.confirm = confirm
        self.health: dict[str, dict[str, dict[str, Health]]] = {}  # VPC -> balancer -> target
        self.applied: dict[str, frozenset[Target]] = {}  # VPC -> targets out of its rotation now

    @property
    def lease_name(self) -> str:
        return f"health@{self.controller.host}"  # '@' is in no VPC's name

    async def run(self) -> None:
        """Check while holding the lease; wait for it while another worker holds it."""
        while True:
            try:
                async with self.locks.hold([self.lease_name]) as lease:
                    log.info("checking the balancers' targets", host=self.controller.host)
                    self.applied.clear()  # what the last holder brought the routers to is unknown
                    await self._lead(lease)
            except Busy:
                await asyncio.sleep(1.0)
            except LockLost:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away, a router being made again: check again soon
                log.warning("health checks interrupted", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(1.0)

    async def _lead(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        while lease.valid:
            start = loop.time()
            state = await self.controller.cache.refresh()
            await self.check(state)
            while True:
                behind = await self.follow(state)
                left = start + self.interval - loop.time()
                if left <= 0 or not lease.valid:
                    break
                await asyncio.sleep(min(left, 0.2) if behind else left)

    async def check(self, state: State) -> None:
        """Check every target of this host's balancers once, and record what was seen."""
        routers: dict[str, str] = {}
        targets: dict[Target, tuple[str, int]] = {}
        for v in state.vpcs.values():
            if v.host != self.controller.host or not v.balancers:
                continue
            routers[v.name] = v.router_ns
            for lb in v.balancers.values():
                for t in lb.targets:
                    sub = v.subnets.get(t.subnet)
                    if sub is not None:
                        targets[v.name, lb.name, f"{t.subnet}:{t.port}"] = (sub.address, t.port)
        errors = await self._check(routers, targets)
        was_up = {k for k in targets if self._known(k) in (None, True)}
        again = [k for k in targets if errors[k] is not None and k in was_up]
        if again:  # failing for the first time: once more before it leaves the rotation
            await asyncio.sleep(self.confirm)
            errors.update(await self._check(routers, {k: targets[k] for k in again}))
        now = utc_now()
        health: dict[str, dict[str, dict[str, Health]]] = {}
        for (vpc, name, target), error in errors.items():
            up = error is None
            old = self.health.get(vpc, {}).get(name, {}).get(target)
            since = old.since if old is not None and old.up == up else now
            if old is not None and old.up != up:
                log.info("target " + ("back in rotation" if up else "out of rotation"), vpc=vpc,
                         balancer=name, target=target, error=error)
            health.setdefault(vpc, {}).setdefault(name, {})[target] = Health(up, since, now, error)
        for vpc in sorted(set(self.health) | set(health)):
            await self.observed.set_health(vpc, health.get(vpc, {}))
        self.health = health

    def _known(self, k: Target) -> bool | None:
        h = self.health.get(k[0], {}).get(k[1], {}).get(k[2])
        return None if h is None else h.up

    async def _check(self, routers: dict[str, str], targets: dict[Target, tuple[str, int]]
                     ) -> dict[Target, str | None]:
        keys = list(targets)
        results = await asyncio.gather(*(tcp_check(routers[k[0]], *targets[k], self.timeout)
                                         for k in keys))
        return dict(zip(keys, results, strict=True))

    async def follow(self, state: State) -> bool:
        """Bring each VPC's rotations in line with the health; True if some could not be now."""
        down = down_of(self.health)
        behind = False
        for vpc in sorted(set(self.health) | set(self.applied)):
            want = frozenset(d for d in down if d[0] == vpc)
            if self.applied.get(vpc) == want:
                continue
            if vpc not in state.vpcs:
                self.applied.pop(vpc, None)
            elif await self.controller.follow_health(vpc):
                self.applied[vpc] = want
            else:
                behind = True
        return behind
