"""Sysctls under /proc/sys, per namespace (ip_forward, send_redirects)."""

from __future__ import annotations

from typing import ClassVar

from vpcq.errors import KernelError
from vpcq.orchestrator.topology import Sysctl
from vpcq.proc import read_bytes
from vpcq.safepath import component
from vpcq.workers.kernel import netns
from vpcq.workers.kernel.driver import Observation, Run


class Sysctls:
    """Sysctl. Blocking: a thread enters the namespace to read or write /proc/sys there."""

    kinds: ClassVar[tuple[type, ...]] = (Sysctl,)

    def observe(self, obs: Observation) -> None:
        by_ns: dict[str | None, list[str]] = {}
        for where, name in sorted(obs.scope.sysctls, key=lambda k: (k[0] or "", k[1])):
            if where is not None and where not in obs.present:
                continue  # no such namespace (yet)
            want = obs.desired.get(("sysctl", where, name))
            if want is not None and obs.trusted(want.key):
                obs.put(want)
            else:
                by_ns.setdefault(where, []).append(name)
        for where, names in by_ns.items():  # one thread into the namespace reads them all
            values = netns.run_in(where, lambda n=names: [_read(x) for x in n])  # type: ignore[misc]
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    obs.put(Sysctl(where, name, value))

    def apply(self, run: Run, lo: int, hi: int) -> None:
        for n in range(lo, hi):
            step, r = run.steps[n], run.steps[n].resource
            assert isinstance(r, Sysctl)
            run.check_here(n, step)
            if step.op != "delete":  # a namespace's sysctls go with it; the host's stay
                netns.run_in(r.ns, lambda r=r: _write(r.name, r.value))  # type: ignore[misc]


def _path(name: str) -> str:
    """/proc/sys/`name`, each of whose components is one (an interface's name is one)."""
    try:
        return "/proc/sys/" + "/".join(component(c) for c in name.split("/"))
    except ValueError as e:
        raise KernelError("set", f"sysctl {name!r}"[:80], str(e)) from None


def _read(name: str) -> str | None:
    data = read_bytes(_path(name), 4096)
    return None if data is None else data.decode().strip()


def _write(name: str, value: str) -> None:
    try:
        with open(_path(name), "w") as f:
            f.write(value)
    except OSError as e:
        raise KernelError("set", f"sysctl {name}", str(e)) from e
