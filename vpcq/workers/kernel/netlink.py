"""Links, addresses and routes over netlink (pyroute2), one cached socket per namespace."""

from __future__ import annotations

import errno
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpcq.errors import KernelError
from vpcq.workers.kernel import netns

MAIN_TABLE = 254
IFF_UP = 1
GONE = {errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL}


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    index: int
    kind: str | None
    master: str | None
    up: bool
    peer_index: int | None
    peer_nsid: int | None


def _new_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)


class Netlink:
    """Async netlink per namespace, opened without forking (the socket is made by a thread
    that entered the namespace; a netlink socket stays bound to the namespace it was made in).

    Sockets pin their namespace, so `forget` one before removing the namespace.
    """

    def __init__(self, max_open: int = 64) -> None:
        self._conns: OrderedDict[str | None, AsyncIPRoute] = OrderedDict()
        self.max_open = max_open

    def conn(self, ns: str | None) -> AsyncIPRoute:
        ipr = self._conns.get(ns)
        if ipr is not None:
            self._conns.move_to_end(ns)
            return ipr
        sock = netns.run_in(ns, _new_socket)
        ipr = AsyncIPRoute(use_socket=sock)
        self._conns[ns] = ipr
        while len(self._conns) > self.max_open:
            _, old = self._conns.popitem(last=False)
            old.close()
        return ipr

    def forget(self, ns: str | None) -> None:
        ipr = self._conns.pop(ns, None)
        if ipr is not None:
            ipr.close()

    def close(self) -> None:
        for ns in list(self._conns):
            self.forget(ns)

    # ---- reading ----------------------------------------------------------------------------

    async def links(self, ns: str | None) -> dict[str, LinkInfo]:
        ipr = self.conn(ns)
        raw = [m async for m in await ipr.link("dump")]
        names = {m.get("index"): m.get("ifname") for m in raw}
        out = {}
        for m in raw:
            name = m.get("ifname")
            out[name] = LinkInfo(
                name=name,
                index=m.get("index"),
                kind=m.get(("linkinfo", "kind")),
                master=names.get(m.get("master")),
                up=bool(m.get("flags", 0) & IFF_UP),
                peer_index=m.get("link"),
                peer_nsid=m.get("link_netnsid"),
            )
        return out

    async def addrs(self, ns: str | None, links: dict[str, LinkInfo]) -> list[tuple[str, str, int]]:
        by_index = {li.index: li.name for li in links.values()}
        ipr = self.conn(ns)
        return [
            (by_index.get(m.get("index"), "?"), m.get("address"), m.get("prefixlen"))
            async for m in await ipr.addr("dump", family=socket.AF_INET)
        ]

    async def routes(
        self, ns: str | None, links: dict[str, LinkInfo]
    ) -> list[tuple[str, str | None, str]]:
        """(dst, gateway, dev) of the main table's routes that have a gateway."""
        by_index = {li.index: li.name for li in links.values()}
        ipr = self.conn(ns)
        out = []
        async for m in await ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE):
            gw = m.get("gateway")
            if gw is None:
                continue
            dst = m.get("dst")
            dst_s = "default" if dst is None else f"{dst}/{m.get('dst_len')}"
            out.append((dst_s, gw, by_index.get(m.get("oif"), "?")))
        return out

    # ---- writing (idempotent: EEXIST on add, ENODEV/ENOENT on delete are success) ------------

    async def _call(self, what: str, ns: str | None, coro: Any, ok: set[int]) -> None:
        try:
            await coro
        except NetlinkError as e:
            if e.code in ok:
                return
            where = ns or "host"
            raise KernelError(what.split()[0], f"{what.split(' ', 1)[1]} in {where}",
                              e.args[1] if len(e.args) > 1 else str(e),
                              transient=e.code in (errno.EBUSY, errno.EAGAIN)) from e

    async def index(self, ns: str | None, name: str) -> int:
        found = await self.conn(ns).link_lookup(ifname=name)
        if not found:
            raise KernelError("find", f"link {name} in {ns or 'host'}", "no such interface")
        return int(found[0])

    async def add_bridge(self, ns: str | None, name: str) -> None:
        await self._call(f"add bridge {name}", ns,
                         self.conn(ns).link("add", ifname=name, kind="bridge"), {errno.EEXIST})

    async def add_veth(self, ns: str | None, name: str, peer_ns: str, peer: str) -> None:
        if ns == peer_ns:
            spec: dict[str, Any] = {"ifname": peer}
        else:
            spec = {"ifname": peer, "net_ns_fd": peer_ns}
        await self._call(f"add veth {name}", ns,
                         self.conn(ns).link("add", ifname=name, kind="veth", peer=spec),
                         {errno.EEXIST})

    async def delete_link(self, ns: str | None, name: str) -> None:
        found = await self.conn(ns).link_lookup(ifname=name)
        if found:
            await self._call(f"delete link {name}", ns,
                             self.conn(ns).link("del", index=found[0]), GONE)

    async def set_link(self, ns: str | None, name: str, master: str | None) -> None:
        ipr = self.conn(ns)
        idx = await self.index(ns, name)
        if master is not None:
            midx = await self.index(ns, master)
            await self._call(f"set master of {name}", ns, ipr.link("set", index=idx, master=midx),
                             set())
        await self._call(f"set up {name}", ns, ipr.link("set", index=idx, state="up"), set())

    async def add_addr(self, ns: str | None, dev: str, address: str, prefixlen: int) -> None:
        idx = await self.index(ns, dev)
        await self._call(f"add address {address}/{prefixlen} on {dev}", ns,
                         self.conn(ns).addr("add", index=idx, address=address, prefixlen=prefixlen),
                         {errno.EEXIST})

    async def del_addr(self, ns: str | None, dev: str, address: str, prefixlen: int) -> None:
        found = await self.conn(ns).link_lookup(ifname=dev)
        if found:
            await self._call(f"delete address {address}/{prefixlen} on {dev}", ns,
                             self.conn(ns).addr("del", index=found[0], address=address,
                                                prefixlen=prefixlen), GONE)

    async def replace_route(self, ns: str | None, dst: str, gateway: str, dev: str) -> None:
        idx = await self.index(ns, dev)
        await self._call(f"set route {dst} via {gateway}", ns,
                         self.conn(ns).route("replace", dst=dst, gateway=gateway, oif=idx), set())

    async def del_route(self, ns: str | None, dst: str) -> None:
        await self._call(f"delete route {dst}", ns,
                         self.conn(ns).route("del", dst=dst, table=MAIN_TABLE), GONE)
