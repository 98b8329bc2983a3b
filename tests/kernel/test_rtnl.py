"""The lean rtnetlink channel: its dumps read what pyroute2 reads, and the changes sent on
it (encoded by pyroute2's message classes) are what pyroute2 then reads back."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from pyroute2 import AsyncIPRoute

from tests.kernel.conftest import Net
from tests.kernel.scenarios import two_vpcs
from vpcq.errors import KernelError
from vpcq.workers.kernel import netns, wire
from vpcq.workers.kernel.netlink import FEW, Netlink

pytestmark = pytest.mark.kernel

T = TypeVar("T")


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
        d = wire.Channel(netns.run_in(ns, wire.open_sockets))
        try:
            links = {(m.index, m.name, m.flags, m.kind, m.master, m.link_netnsid) for m in d.links()}
            addrs = set(d.addrs4())
            routes = set(d.routes4(254))
            by_name = {m.name: m.index for m in d.links()}
            assert d.link("lo") is not None and d.link("lo").index == by_name["lo"]  # type: ignore[union-attr]
            assert d.link("nosuch0") is None
            assert d.link(index=by_name["lo"]) == d.link("lo")
            # asked link by link (filtered by the kernel), the same as the whole dump
            assert set().union(*(d.addrs4(i) for i in by_name.values())) == addrs
            assert set().union(*(d.routes4(254, i) for i in by_name.values())) == {r for r in routes if r[2]}
        finally:
            d.close()
        want = asyncio.run(pyroute2_view(ns))
        assert (links, addrs, routes) == want, ns
        assert len(links) >= 2 and addrs and routes, ns  # the scenario made things to compare

    # a few links are looked up by name; many are dumped; both read the same
    nl = Netlink()
    try:
        router = f"vpcq_{a}"
        full = nl.links(router)
        assert any(li.master for li in full.values())  # a bridge port, whose master is named
        few = [n for n, li in full.items() if li.master]
        many = [*full, *(f"nosuch{i}" for i in range(FEW))]  # too many to look up: a dump
        for only in (few, many):
            part = {n: full[n] for n in only if n in full}
            assert nl.links(router, only) == part
            addrs_each = nl.addrs(router, part, each=True)
            assert sorted(addrs_each) == sorted(nl.addrs(router, part))
            routes_each = nl.routes(router, part, each=True)
            assert sorted(routes_each) == sorted(nl.routes(router, part))
        assert len(few) <= FEW < len(many) and nl.addrs(router, full)
        assert nl.links(router, ["nosuch0"]) == {}
    finally:
        nl.close()


def test_changes_are_what_pyroute2_reads_back(net: Net):
    a, b = net.name("ra"), net.name("rb")
    for ns in (a, b):
        netns.create(ns)
    nl = Netlink()

    def build() -> None:
        nl.add_bridge(a, "br0", up=True)
        nl.add_veth(a, "v0", b, "eth0", up=True, master="br0")
        nl.add_addr(a, "br0", "10.9.0.254", 24)
        nl.add_addr(b, "eth0", "10.9.0.1", 24)
        nl.set_link(b, "eth0", None)
        nl.set_link(b, "lo", None)
        nl.replace_route(b, "default", "10.9.0.254", "eth0")
        nl.replace_route(b, "10.8.0.0/16", "10.9.0.254", "eth0")

    try:
        build()
        build()  # again: everything exists, and that is success
        links_a, addrs_a, _ = asyncio.run(pyroute2_view(a))
        links_b, addrs_b, routes_b = asyncio.run(pyroute2_view(b))
        by_name = {li[1]: li for li in links_a}
        eth0 = {li[1]: li for li in links_b}["eth0"]
        assert by_name["br0"][3] == "bridge" and by_name["br0"][2] & 1
        assert by_name["v0"][3] == "veth" and by_name["v0"][2] & 1
        assert by_name["v0"][4] == by_name["br0"][0]  # in the bridge
        assert eth0[3] == "veth" and eth0[2] & 1 and eth0[5] is not None  # peer made in b, up
        assert (by_name["br0"][0], "10.9.0.254", 24) in addrs_a
        assert (eth0[0], "10.9.0.1", 24) in addrs_b
        assert ("default", "10.9.0.254", eth0[0]) in routes_b
        assert ("10.8.0.0/16", "10.9.0.254", eth0[0]) in routes_b

        def tear_down() -> None:
            nl.del_route(b, "10.8.0.0/16")
            nl.delete_link(a, "br0")

        tear_down()
        tear_down()  # again: what is gone counts as deleted
        links_a, _, _ = asyncio.run(pyroute2_view(a))
        _, addrs_b, routes_b = asyncio.run(pyroute2_view(b))
        assert "br0" not in {li[1] for li in links_a} and "v0" in {li[1] for li in links_a}
        assert {r for r in routes_b if r[1]} == {("default", "10.9.0.254", eth0[0])}  # only it went
        for _ in range(2):
            nl.del_addr(b, "eth0", "10.9.0.1", 24)
        assert (eth0[0], "10.9.0.1", 24) not in asyncio.run(pyroute2_view(b))[1]

        # a refusal names the object and carries the kernel's own reason (extended ack)
        with pytest.raises(KernelError) as e:
            nl.replace_route(b, "10.7.0.0/16", "192.0.2.1", "eth0")
        assert str(e.value).startswith("set route 10.7.0.0/16 via 192.0.2.1 in ")
        assert "gateway" in str(e.value).lower()  # "Nexthop has invalid gateway", not errno text
        with pytest.raises(KernelError, match=r"No such file"):
            nl.add_veth(a, "v1", net.name("nosuch"), "eth1")
    finally:
        nl.close()
        for ns in (a, b):
            netns.remove(ns)


def made_again_with_its_inode(ns: str, make_old: Callable[[], T], make_new: Callable[[], None]) -> T:
    """Make `ns` (`make_old` makes it, lets go of it and returns what was known of it), remove
    it and make it again (`make_new`, which lets go of it too), until the new namespace has the
    old one's nsfs inode; return what was known of the old one.

    The kernel gives a new namespace the lowest free inode, and frees a removed one's some time
    later (20 to 80 ms here). The inode just freed comes back once it is free, if no lower one
    was freed meanwhile (e.g. an earlier test's). So each try starts from the inode the last
    one got, every removal is given time, more on each try, and nothing may keep a removed
    namespace alive: freed late, its inode would be the lowest free one on every try.
    """
    for attempt in range(1, 51):
        settle = min(0.02 * attempt, 0.5)
        known = make_old()
        inode = netns.inode(ns)
        netns.remove(ns)
        time.sleep(settle)
        make_new()
        if netns.inode(ns) == inode:
            return known
        netns.remove(ns)
        time.sleep(settle)
    pytest.fail("the kernel never gave a freed namespace's inode again: the premise no longer holds")


def test_a_namespace_made_again_is_told_apart_though_it_has_the_old_inode(net: Net):
    """A freed namespace's nsfs inode can go to the next namespace made, by anyone: a worker
    that waited for the links of a namespace it knew by inode waited on another's."""
    ns = net.name("again")
    nl = Netlink()

    def make_old() -> int:
        netns.create(ns)
        known = nl.identity(ns)
        assert nl.identity(ns) == known  # the same namespace, asked again
        nl.forget(ns)  # its socket no longer keeps it alive
        return known

    try:
        old_id = made_again_with_its_inode(ns, make_old, lambda: netns.create(ns))
        assert nl.identity(ns) != old_id
    finally:
        nl.close()
        netns.remove(ns)


def test_a_namespace_whose_socket_was_let_go_is_not_known_by_its_old_links(net: Net):
    """Past `max_open` namespaces, the least recently used one's socket is closed. Nothing
    keeps that namespace alive then: made again, it may have the old inode, and the link
    indexes known through the old socket must have gone with it."""
    a, b = net.name("lru-a"), net.name("lru-b")
    nl = Netlink(max_open=1)

    def make(links: list[str]) -> None:
        netns.create(a)
        for name in links:
            nl.add_bridge(a, name, up=False)

    def make_old() -> int:
        make(["x0", "br0"])
        known = nl.lookup(a, "br0", cached=True)
        nl.channel(b)  # a's socket is let go
        return known

    def make_new() -> None:
        make(["br0"])
        nl.channel(b)  # let go again: a try that fails removes this one

    try:
        netns.create(b)
        old_index = made_again_with_its_inode(a, make_old, make_new)
        nl.revalidate(a)  # what an observation does first
        assert nl.lookup(a, "br0", cached=True) == nl.lookup(a, "br0") != old_index
    finally:
        nl.close()
        for ns in (a, b):
            netns.remove(ns)
