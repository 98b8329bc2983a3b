"""A comparable picture of everything vpcq may touch: namespaces, links, addresses, routes,
rules, apps. Interface indexes and MAC addresses are left out (they change when an object
is made again); names, kinds, masters, states and addresses are in."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from vpcq.testing.probe import save
from vpcq.testing.sandbox import ETC_NETNS
from vpcq.workers.kernel import netns
from vpcq.workers.kernel.apps import Apps
from vpcq.workers.kernel.iptables import normalise
from vpcq.workers.kernel.resolvers import ROLES, Resolvers


def _ipj(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def namespace(ns: str) -> dict[str, Any]:
    links = sorted(
        (ln["ifname"], (ln.get("linkinfo") or {}).get("info_kind"), ln.get("master"),
         "UP" in ln.get("flags", []))
        for ln in _ipj(ns, "-d", "link", "show")
    )
    addrs = sorted(
        (a["ifname"], i["local"], i["prefixlen"])
        for a in _ipj(ns, "-4", "addr", "show") for i in a.get("addr_info", [])
    )
    routes = sorted(
        (r.get("dst"), r.get("gateway"), r.get("dev"))
        for r in _ipj(ns, "-4", "route", "show", "table", "main")
    )
    return {"links": links, "addrs": addrs, "routes": routes,
            "rules": normalise(save(ns, "iptables-save"))}


def snapshot(tok: str, host: str, apps_dir: Any) -> dict[str, Any]:
    names = sorted(n for n in netns.list_names() if tok in n and n != f"{tok}i")
    apps = Apps(apps_dir)
    resolvers = Resolvers(apps_dir.with_name("dns"))
    return {
        "namespaces": names,
        "detail": {n: namespace(n) for n in names},
        "apps": sorted((n, a.port) for n in names if (a := apps.running(n)) is not None),
        # the resolvers by what they serve (a rolled-back one is a new process)
        "resolvers": sorted((n, role, r[1]) for n in names if n.startswith("vpcq_") for role in ROLES
                            if (r := resolvers.running(n, role)) is not None),
        "resolv.conf": sorted((p.parent.name, p.read_text()) for p in ETC_NETNS.glob(f"*{tok}*/resolv.conf")),
        "host": namespace(host),
    }
