"""The lean rtnetlink dumps read the same links, addresses and routes as pyroute2 does."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pyroute2 import AsyncIPRoute

from tests.kernel.conftest import Net
from tests.kernel.scenarios import two_vpcs
from vpcq.workers.kernel import netns, rtnl

pytestmark = pytest.mark.kernel


async def pyroute2_view(ns: str) -> tuple[set[tuple[object, ...]], set[tuple[object, ...]], set[tuple[object, ...]]]:
    sock = netns.run_in(ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE))
    ipr = AsyncIPRoute(use_socket=sock)
    try:
        links = {(m.get("index"), m.get("ifname"), m.get("flags"), m.get(("linkinfo", "kind")),
                  m.get("master"), m.get("link_netnsid"))
                 async for m in await ipr.link("dump")}
        addrs = {(m.get("index"), m.get("address"), m.get("prefixlen"))
                 async for m in await ipr.addr("dump", family=socket.AF_INET)}
        routes = set()
        async for m in await ipr.route("dump", family=socket.AF_INET):
            if m.get("table") == 254:
                dst = m.get("dst")
                routes.add(("default" if dst is None else f"{dst}/{m.get('dst_len')}",
                            m.get("gateway"), m.get("oif")))
        return links, addrs, routes
    finally:
        ipr.close()
        sock.close()


def test_lean_dumps_agree_with_pyroute2(net: Net):
    net.start_worker()
    a, _b = two_vpcs(net)
    for ns in (f"vpcq_{a}", f"{a}-web", net.host):
        d = rtnl.Dumper(netns.run_in(ns, rtnl.open_sockets))
        try:
            links = {(m.index, m.name, m.flags, m.kind, m.master, m.link_netnsid) for m in d.links()}
            addrs = set(d.addrs4())
            routes = set(d.routes4(254))
            by_name = {m.name: m.index for m in d.links()}
            assert d.link("lo") is not None and d.link("lo").index == by_name["lo"]  # type: ignore[union-attr]
            assert d.link("nosuch0") is None
        finally:
            d.close()
        want = asyncio.run(pyroute2_view(ns))
        assert (links, addrs, routes) == want, ns
        assert len(links) >= 2 and addrs and routes, ns  # the scenario made things to compare
