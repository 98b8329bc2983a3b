"""Links, addresses and routes over netlink (pyroute2), one cached socket per namespace."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpcq.errors import KernelError
from vpcq.workers.kernel import netns, rtnl

MAIN_TABLE = 254
T = TypeVar("T")
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

    def __init__(self, max_open: int = 64, max_dumpers: int = 512) -> None:
        # the socket object is kept with its AsyncIPRoute: pyroute2 uses the descriptor, and
        # a garbage-collected socket would close it under a request in flight
        self._conns: OrderedDict[str | None, tuple[AsyncIPRoute, socket.socket]] = OrderedDict()
        # a netlink socket serves one dump at a time (EBUSY otherwise): one request per socket
        self._busy: dict[str | None, asyncio.Lock] = {}
        # name -> ifindex, filled by dumps and lookups: pyroute2's link_lookup dumps every
        # link, which dominated a profile of the worker (ifindexes are not reused soon)
        self._index: dict[str | None, dict[str, int]] = {}
        # lean dumps for observing: one plain socket per namespace, kept for many more
        # namespaces than pyroute2 connections (a no-op reconcile looks into all of them)
        self._dumpers: OrderedDict[str | None, rtnl.Dumper] = OrderedDict()
        self.max_dumpers = max_dumpers
        self._inode: dict[str, int | None] = {}  # the namespace each cached socket is bound to
        self.max_open = max_open
        self._lock = asyncio.Lock()

    async def conn(self, ns: str | None) -> AsyncIPRoute:
        entry = self._conns.get(ns)
        if entry is not None:
            self._conns.move_to_end(ns)
            return entry[0]
        async with self._lock:  # pyroute2 sets the endpoint up lazily: once, not per request
            entry = self._conns.get(ns)
            if entry is not None:
                return entry[0]
            self._pin(ns)
            sock = netns.run_in(ns, _new_socket)
            ipr = AsyncIPRoute(use_socket=sock)
            await ipr.setup_endpoint()
            self._conns[ns] = (ipr, sock)
        while len(self._conns) > self.max_open:
            gone, (old, old_sock) = self._conns.popitem(last=False)
            old.close()
            old_sock.close()
            self._busy.pop(gone, None)
        return ipr

    def _pin(self, ns: str | None) -> None:
        """Remember which namespace a new socket for `ns` is bound to."""
        if ns is not None:
            self._inode[ns] = netns.inode(ns)

    def revalidate(self, ns: str | None) -> None:
        """Drop the sockets of `ns` if its name now stands for another namespace (removed and
        made again by someone else): a socket keeps the namespace it was made in alive and
        would keep showing its old interfaces."""
        if ns is not None and ns in self._inode and netns.inode(ns) != self._inode[ns]:
            self.forget(ns)

    def generation(self, ns: str | None) -> int | None:
        d = self._dumpers.get(ns)
        return d.generation() if d is not None else None

    def forget(self, ns: str | None) -> None:
        if ns is not None:
            self._inode.pop(ns, None)
        self._busy.pop(ns, None)
        self._index.pop(ns, None)
        d = self._dumpers.pop(ns, None)
        if d is not None:
            d.close()
        entry = self._conns.pop(ns, None)
        if entry is not None:
            entry[0].close()
            entry[1].close()

    def close(self) -> None:
        for ns in {*self._conns, *self._dumpers}:
            self.forget(ns)

    # ---- reading ----------------------------------------------------------------------------

    def lock(self, ns: str | None) -> asyncio.Lock:
        lock = self._busy.get(ns)
        if lock is None:
            lock = self._busy[ns] = asyncio.Lock()
        return lock

    async def dumper(self, ns: str | None) -> rtnl.Dumper:
        d = self._dumpers.get(ns)
        if d is not None:
            self._dumpers.move_to_end(ns)
            return d
        self._pin(ns)
        d = self._dumpers[ns] = rtnl.Dumper(netns.run_in(ns, rtnl.open_sockets))
        while len(self._dumpers) > self.max_dumpers:
            _, old = self._dumpers.popitem(last=False)
            old.close()
        return d

    async def _read(self, ns: str | None, what: str, fn: Callable[[rtnl.Dumper], T]) -> T:
        try:
            return fn(await self.dumper(ns))
        except OSError as e:
            raise KernelError("read", f"{what} in {ns or 'host'}", str(e), transient=True) from e

    async def links(self, ns: str | None) -> dict[str, LinkInfo]:
        raw = await self._read(ns, "links", rtnl.Dumper.links)
        names = {m.index: m.name for m in raw}
        self._index[ns] = {name: idx for idx, name in names.items()}
        return {
            m.name: LinkInfo(
                name=m.name,
                index=m.index,
                kind=m.kind,
                master=names.get(m.master) if m.master else None,
                up=bool(m.flags & IFF_UP),
                peer_index=m.link,
                peer_nsid=m.link_netnsid,
            )
            for m in raw
        }

    async def addrs(self, ns: str | None, links: dict[str, LinkInfo]) -> list[tuple[str, str, int]]:
        by_index = {li.index: li.name for li in links.values()}
        found = await self._read(ns, "addresses", rtnl.Dumper.addrs4)
        return [(by_index.get(i, "?"), a, p) for i, a, p in found]

    async def routes(
        self, ns: str | None, links: dict[str, LinkInfo]
    ) -> list[tuple[str, str | None, str]]:
        """(dst, gateway, dev) of the main table's routes that have a gateway."""
        by_index = {li.index: li.name for li in links.values()}
        return [(dst, gw, by_index.get(oif, "?") if oif is not None else "?")
                for dst, gw, oif in await self._read(ns, "routes", lambda d: d.routes4(MAIN_TABLE))
                if gw is not None]

    # ---- writing (idempotent: EEXIST on add, ENODEV/ENOENT on delete are success) ------------

    async def _call(self, op: str, obj: str, ns: str | None, coro: Any, ok: set[int]) -> int:
        """Run one request; 0, or the error code in `ok` that counts as success."""
        try:
            async with self.lock(ns):
                await coro
        except OSError as e:  # e.g. the peer's namespace file is missing
            raise KernelError(op, f"{obj} in {ns or 'host'}", str(e)) from e
        except NetlinkError as e:
            if e.code in ok:
                return int(e.code)
            reason = e.args[1] if len(e.args) > 1 else str(e)
            transient = e.code in (errno.EBUSY, errno.EAGAIN)
            raise KernelError(op, f"{obj} in {ns or 'host'}", reason, transient=transient) from e
        return 0

    async def _lookup(self, ns: str | None, name: str) -> list[int]:
        try:
            found = (await self.dumper(ns)).link(name)
        except OSError as e:
            raise KernelError("find", f"link {name} in {ns or 'host'}", str(e), transient=True) from e
        return [] if found is None else [found.index]

    async def exists(self, ns: str | None, name: str) -> bool:
        return bool(await self._lookup(ns, name))

    async def index(self, ns: str | None, name: str) -> int:
        cached = self._index.get(ns, {}).get(name)
        if cached is not None:
            return cached
        # one RTM_GETLINK by name: a dump would cost as much as the namespace has links
        found = await self._lookup(ns, name)
        if not found:
            raise KernelError("find", f"link {name} in {ns or 'host'}", "no such interface")
        self._index.setdefault(ns, {})[name] = found[0]
        return found[0]

    async def add_bridge(self, ns: str | None, name: str, up: bool = False) -> None:
        """A bridge; with `up`, created up (one request). One that exists is set up."""
        ipr = await self.conn(ns)
        spec: dict[str, Any] = {"state": "up"} if up else {}
        code = await self._call("add", f"bridge {name}", ns,
                                ipr.link("add", ifname=name, kind="bridge", **spec), {errno.EEXIST})
        if code and up:
            await self.set_link(ns, name, None)

    async def add_veth(
        self, ns: str | None, name: str, peer_ns: str, peer: str, up: bool = False,
        master: str | None = None,
    ) -> None:
        """A veth pair; with `up`, its first end is created up and in bridge `master` (one
        request). A pair that exists is set so."""
        ipr = await self.conn(ns)
        spec: dict[str, Any] = {"ifname": peer}
        if ns != peer_ns:
            spec["net_ns_fd"] = peer_ns
        own: dict[str, Any] = {}
        if up:
            own["state"] = "up"
            if master is not None:
                own["master"] = await self.index(ns, master)
        code = await self._call("add", f"veth {name}", ns,
                                ipr.link("add", ifname=name, kind="veth", peer=spec, **own),
                                {errno.EEXIST})
        if not code:
            return
        # "exists" is success only if it is the pair: an end whose namespace was just removed
        # lingers until the kernel has torn it down, and must not pass for the new pair
        if not (await self.exists(ns, name) and await self.exists(peer_ns, peer)):
            raise KernelError("add", f"veth {name} in {ns or 'host'}",
                              f"an old {name} or {peer} is still being torn down", transient=True)
        if up:
            await self.set_link(ns, name, master)

    async def delete_link(self, ns: str | None, name: str) -> None:
        ipr = await self.conn(ns)
        self._index.get(ns, {}).pop(name, None)
        found = await self._lookup(ns, name)  # never a cached index: it may be stale
        if found:
            await self._call("delete", f"link {name}", ns, ipr.link("del", index=found[0]), GONE)

    async def set_link(self, ns: str | None, name: str, master: str | None) -> None:
        ipr = await self.conn(ns)
        idx = await self.index(ns, name)
        spec: dict[str, Any] = {"index": idx, "state": "up"}
        if master is not None:
            spec["master"] = await self.index(ns, master)
        try:
            await self._call("set", f"{name} up", ns, ipr.link("set", **spec), set())
        except KernelError:
            self._index.get(ns, {}).pop(name, None)  # perhaps a stale index: look it up next time
            raise

    async def add_addr(self, ns: str | None, dev: str, address: str, prefixlen: int) -> None:
        ipr = await self.conn(ns)
        idx = await self.index(ns, dev)
        await self._call("add", f"address {address}/{prefixlen} on {dev}", ns,
                         ipr.addr("add", index=idx, address=address, prefixlen=prefixlen),
                         {errno.EEXIST})

    async def del_addr(self, ns: str | None, dev: str, address: str, prefixlen: int) -> None:
        ipr = await self.conn(ns)
        found = await self._lookup(ns, dev)
        if found:
            await self._call("delete", f"address {address}/{prefixlen} on {dev}", ns,
                             ipr.addr("del", index=found[0], address=address, prefixlen=prefixlen),
                             GONE)

    async def replace_route(self, ns: str | None, dst: str, gateway: str, dev: str) -> None:
        ipr = await self.conn(ns)
        idx = await self.index(ns, dev)
        await self._call("set", f"route {dst} via {gateway}", ns,
                         ipr.route("replace", dst=dst, gateway=gateway, oif=idx), set())

    async def del_route(self, ns: str | None, dst: str) -> None:
        ipr = await self.conn(ns)
        await self._call("delete", f"route {dst}", ns,
                         ipr.route("del", dst=dst, table=MAIN_TABLE), GONE)
