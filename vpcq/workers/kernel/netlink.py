"""The kernel's network objects, per namespace, over netlink: links, addresses, routes.

One plain socket per namespace (`wire.Channel`), made without forking: a thread enters the
namespace to make it, and a netlink socket stays bound to the namespace it was made in.
"""

from __future__ import annotations

import errno
import os
import resource
import secrets
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from vpcq.errors import KernelError
from vpcq.workers.kernel import netns, wire
from vpcq.workers.kernel.wire import (
    IFF_UP,
    MAIN_TABLE,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RT_SCOPE_NOWHERE,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTN_UNICAST,
    RTPROT_STATIC,
)

T = TypeVar("T")
GONE = {errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL}
CREATE = NLM_F_CREATE | NLM_F_EXCL
FEW = 8  # up to this many links of a namespace are looked up one by one, not dumped
FDS_PER_CHANNEL = 2  # a channel holds a route socket and a netfilter one (wire.open_sockets)
FDS_KEPT = 512  # descriptors left for everything else: Redis, files, pipes to iptables


def channel_budget() -> int:
    """How many namespaces may keep their sockets open, within this process's descriptor
    limit: a whole-host observation looks into every namespace of the host, through each
    driver in turn, so a cache smaller than the namespaces thrashes (least recently used
    first, in the same order each time: every lookup misses, and each namespace is entered
    once per driver instead of once)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, (soft - FDS_KEPT) // FDS_PER_CHANNEL)


def raise_descriptor_limit(wanted: int = 1 << 16) -> None:
    """The soft limit on open descriptors up to `wanted` (at most the hard limit), as
    network daemons do: each namespace vpcq looks into keeps two sockets open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    index: int
    kind: str | None
    master: str | None
    up: bool
    peer_index: int | None
    peer_nsid: int | None


def _ns_file(ns: str | None) -> str:
    # the calling thread is in the namespace that plays the host
    return "/proc/thread-self/ns/net" if ns is None else netns.path(ns)


class Netlink:
    """Netlink per namespace, opened without forking (the socket is made by a thread that
    entered the namespace; a netlink socket stays bound to the namespace it was made in).

    Every call blocks: the kernel handles a request inside send(), under the rtnl lock, which
    it also holds for long stretches while it destroys removed namespaces (seconds, after a
    cleanup). So the kernel adapter makes these calls on a thread of its own, never on the
    event loop, and only from that one thread (the caches here are not locked).

    Sockets pin their namespace, so `forget` one before removing the namespace.
    """

    def __init__(self, max_open: int | None = None) -> None:
        # one plain socket per namespace, for many namespaces: a no-op reconcile looks into
        # all of them
        self._channels: OrderedDict[str | None, wire.Channel] = OrderedDict()
        self.max_open = channel_budget() if max_open is None else max_open
        # name -> ifindex, filled by dumps and lookups (ifindexes are not reused soon)
        self._index: dict[str | None, dict[str, int]] = {}
        self._inode: dict[str, int | None] = {}  # the namespace each cached socket is bound to

    def channel(self, ns: str | None) -> wire.Channel:
        c = self._channels.get(ns)
        if c is not None:
            self._channels.move_to_end(ns)
            return c
        if ns is not None:  # remember which namespace the new socket is bound to
            self._inode[ns] = netns.inode(ns)
        c = self._channels[ns] = wire.Channel(netns.run_in(ns, wire.open_sockets))
        while len(self._channels) > self.max_open:  # the least recently used, and what was
            self.forget(next(iter(self._channels)))  # known through it: nothing pins it now
        return c

    def revalidate(self, ns: str | None) -> None:
        """Drop the sockets of `ns` if its name now stands for another namespace (removed and
        made again by someone else): a socket keeps the namespace it was made in alive and
        would keep showing its old interfaces. (Alive, that namespace keeps its inode: no
        other can have it, so comparing inodes is enough here.)"""
        if ns is not None and ns in self._inode and netns.inode(ns) != self._inode[ns]:
            self.forget(ns)

    def identity(self, ns: str | None) -> int:
        """The cookie of the namespace `ns` names now (see wire.cookie)."""
        self.revalidate(ns)
        try:
            return wire.cookie(self.channel(ns).sock)
        except OSError as e:
            raise KernelError("read", f"the cookie of {ns or 'host'}", str(e)) from e

    def generation(self, ns: str | None) -> int | None:
        """The namespace's nftables generation (see wire), None if it cannot be had."""
        try:
            return self.channel(ns).generation()
        except (OSError, KernelError):
            return None

    def forget(self, ns: str | None) -> None:
        if ns is not None:
            self._inode.pop(ns, None)
        self._index.pop(ns, None)
        c = self._channels.pop(ns, None)
        if c is not None:
            c.close()

    def close(self) -> None:
        for ns in list(self._channels):
            self.forget(ns)

    # ---- reading ----------------------------------------------------------------------------

    def _read(self, ns: str | None, what: str, fn: Callable[..., T], *args: Any) -> T:
        """fn(the namespace's channel, *args), its failure a KernelError about `what`."""
        try:
            return fn(self.channel(ns), *args)
        except OSError as e:
            raise KernelError("read", f"{what} in {ns or 'host'}", str(e), transient=True) from e

    def links(self, ns: str | None, only: Collection[str] | None = None) -> dict[str, LinkInfo]:
        """The links of `ns`, or only those named in `only`; what is known of their indexes
        is what was seen now. A few are looked up one by one: a dump costs as much as the
        namespace has links (the host holds every VPC's uplink)."""
        if only is not None and len(only) <= FEW:
            raw = [m for n in sorted(only)
                   if (m := self._read(ns, f"link {n}", wire.Channel.link, n)) is not None]
            names = {m.index: m.name for m in raw}
            for i in {m.master for m in raw if m.master and m.master not in names}:
                master = self._read(ns, "master link", wire.Channel.link, None, i)
                if master is not None:
                    names[i] = master.name
            known = self._index.setdefault(ns, {})
            for n in only:
                known.pop(n, None)
            known.update({m.name: m.index for m in raw})
        else:
            raw = self._read(ns, "links", wire.Channel.links)
            names = {m.index: m.name for m in raw}
            self._index[ns] = {name: idx for idx, name in names.items()}
            if only is not None:
                raw = [m for m in raw if m.name in only]
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

    def addrs(
        self, ns: str | None, links: dict[str, LinkInfo], each: bool = False
    ) -> list[tuple[str, str, int]]:
        """(dev, address, prefixlen) of the IPv4 addresses on `links`; with `each`, asked
        for link by link (the kernel filters) instead of dumping the namespace's."""
        by_index = {li.index: li.name for li in links.values()}
        if each:
            found = [a for i in by_index for a in self._read(ns, "addresses", wire.Channel.addrs4, i)]
        else:
            found = self._read(ns, "addresses", wire.Channel.addrs4)
        return [(by_index[i], a, p) for i, a, p in found if i in by_index]

    def routes(
        self, ns: str | None, links: dict[str, LinkInfo], each: bool = False
    ) -> list[tuple[str, str, str]]:
        """(dst, gateway, dev) of the main table's routes through `links` that have a
        gateway; with `each`, asked for link by link, as `addrs` does."""
        by_index = {li.index: li.name for li in links.values()}
        if each:
            found = [r for i in by_index
                     for r in self._read(ns, "routes", wire.Channel.routes4, MAIN_TABLE, i)]
        else:
            found = self._read(ns, "routes", wire.Channel.routes4, MAIN_TABLE)
        return [(dst, gw, by_index[oif]) for dst, gw, oif in found
                if gw is not None and oif in by_index]

    def lookup(self, ns: str | None, name: str, cached: bool = False) -> int | None:
        """The index of link `name`, None if there is none: one RTM_GETLINK by name (not a
        dump, which costs as much as the namespace has links). With `cached`, the index last
        seen (by a dump or a lookup) if there is one: for a request, which fails on a stale
        index and then forgets it."""
        if cached and (known := self._index.get(ns, {}).get(name)) is not None:
            return known
        found = self._read(ns, f"link {name}", wire.Channel.link, name)
        if found is None:
            self._index.get(ns, {}).pop(name, None)
            return None
        self._index.setdefault(ns, {})[name] = found.index
        return found.index

    def _index_for(self, ns: str | None, name: str) -> int:
        """`lookup(cached=True)` for a request that names the link: it must be there."""
        found = self.lookup(ns, name, cached=True)
        if found is None:
            raise KernelError("find", f"link {name} in {ns or 'host'}", "no such interface")
        return found

    # ---- writing (idempotent: EEXIST on add, ENODEV/ENOENT on delete are success) ------------

    def _change(self, op: str, obj: str, ns: str | None, msg_type: int, flags: int, body: bytes,
                ok: set[int]) -> int:
        """Send one request; 0, or the error code in `ok` that counts as success."""
        try:
            self.channel(ns).change(msg_type, flags, body)
        except OSError as e:  # refused (RtnlError), or the socket or namespace is gone
            if e.errno in ok and isinstance(e, wire.RtnlError):
                return e.errno
            transient = e.errno in (errno.EBUSY, errno.EAGAIN)
            raise KernelError(op, f"{obj} in {ns or 'host'}", e.strerror or str(e),
                              transient=transient) from e
        return 0

    def add_bridge(self, ns: str | None, name: str, up: bool = False) -> None:
        """A bridge; with `up`, created up (one request). One that exists is set up."""
        flag = IFF_UP if up else 0
        body = wire.link_body({"flags": flag, "change": flag}, [
            ("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}),
        ])  # fmt: skip
        code = self._change("add", f"bridge {name}", ns, RTM_NEWLINK, CREATE, body, {errno.EEXIST})
        if code and up:
            self.set_link(ns, name, None)

    def add_veth(
        self, ns: str | None, name: str, peer_ns: str, peer: str, up: bool = False,
        master: str | None = None,
    ) -> None:
        """A veth pair; with `up`, its first end is created up and in bridge `master` (one
        request). A pair that exists is set so."""
        own: list[tuple[str, Any]] = [("IFLA_IFNAME", name)]
        if up and master is not None:
            own.append(("IFLA_MASTER", self._index_for(ns, master)))
        flag = IFF_UP if up else 0
        fd = None
        try:
            peer_attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", peer)]
            if ns != peer_ns:  # the peer is made right in its namespace
                fd = os.open(_ns_file(peer_ns), os.O_RDONLY | os.O_CLOEXEC)
                peer_attrs.append(("IFLA_NET_NS_FD", fd))
            info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {
                "attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]}
            body = wire.link_body({"flags": flag, "change": flag},
                         [*own, ("IFLA_LINKINFO", info)])
            code = self._change("add", f"veth {name}", ns, RTM_NEWLINK, CREATE, body, {errno.EEXIST})
        except OSError as e:  # the peer's namespace file is missing
            raise KernelError("add", f"veth {name} in {ns or 'host'}", str(e)) from e
        finally:
            if fd is not None:
                os.close(fd)
        if not code:
            return
        # "exists" is success only if it is the pair: an end whose namespace was just removed
        # lingers until the kernel has torn it down, and must not pass for the new pair
        if self.lookup(ns, name) is None or self.lookup(peer_ns, peer) is None:
            raise KernelError("add", f"veth {name} in {ns or 'host'}",
                              f"an old {name} or {peer} is still being torn down", transient=True)
        if up:
            self.set_link(ns, name, master)

    def delete_link(self, ns: str | None, name: str) -> None:
        found = self.lookup(ns, name)  # never a cached index: it may be stale
        if found is not None:
            body = wire.link_body({"index": found}, [])
            try:
                self._change("delete", f"link {name}", ns, RTM_DELLINK, 0, body, GONE)
            finally:  # a link made again under the name has another index
                self._index.get(ns, {}).pop(name, None)

    def delete_links(self, ns: str | None, names: Collection[str]) -> None:
        """Delete several links of one namespace with one request. Deleting a link waits for
        the kernel to be sure nothing uses it any more (synchronize_net, a grace period each);
        links deleted by group share that wait. The links are put in a group of their own
        first: a random number, so no link vpcq did not name is in it."""
        if len(names) < 2:
            for name in names:
                self.delete_link(ns, name)
            return
        group = secrets.randbelow(2**32 - 2) + 1  # 0 is every link's default group
        for name in names:
            self._index.get(ns, {}).pop(name, None)
            body = wire.link_body({"index": 0}, [("IFLA_IFNAME", name), ("IFLA_GROUP", group)])
            self._change("mark", f"link {name} for deletion", ns, RTM_NEWLINK, 0, body, GONE)
        body = wire.link_body({"index": 0}, [("IFLA_GROUP", group)])
        self._change("delete", f"links {', '.join(sorted(names))}", ns, RTM_DELLINK, 0, body, GONE)

    def set_link(self, ns: str | None, name: str, master: str | None) -> None:
        """The link up, and in bridge `master` if one is given. The link is named in the
        request (the kernel looks it up when the index is 0): no lookup of its own index,
        which a new namespace's `lo` and `eth0` would each have cost."""
        attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name)]
        if master is not None:
            attrs.append(("IFLA_MASTER", self._index_for(ns, master)))
        body = wire.link_body({"index": 0, "flags": IFF_UP, "change": IFF_UP}, attrs)
        try:
            self._change("set", f"{name} up", ns, RTM_NEWLINK, 0, body, set())
        except KernelError:
            if master is not None:  # perhaps a stale index of the bridge: look it up next time
                self._index.get(ns, {}).pop(master, None)
            raise

    def add_addr(self, ns: str | None, dev: str, address: str, prefixlen: int) -> None:
        body = wire.addr_body(self._index_for(ns, dev), address, prefixlen)
        self._change("add", f"address {address}/{prefixlen} on {dev}", ns, RTM_NEWADDR, CREATE,
                     body, {errno.EEXIST})

    def del_addr(self, ns: str | None, dev: str, address: str, prefixlen: int) -> None:
        found = self.lookup(ns, dev)
        if found is not None:
            self._change("delete", f"address {address}/{prefixlen} on {dev}", ns, RTM_DELADDR, 0,
                         wire.addr_body(found, address, prefixlen), GONE)

    def replace_route(self, ns: str | None, dst: str, gateway: str, dev: str) -> None:
        attrs: list[tuple[str, Any]] = [("RTA_GATEWAY", gateway), ("RTA_OIF", self._index_for(ns, dev))]
        fields = {"proto": RTPROT_STATIC, "type": RTN_UNICAST}
        self._change("set", f"route {dst} via {gateway}", ns, RTM_NEWROUTE,
                     NLM_F_CREATE | NLM_F_REPLACE, wire.route_body(dst, fields, attrs), set())

    def del_route(self, ns: str | None, dst: str) -> None:
        # scope "nowhere" matches the route whatever its scope, as `ip route del` does
        self._change("delete", f"route {dst}", ns, RTM_DELROUTE, 0,
                     wire.route_body(dst, {"scope": RT_SCOPE_NOWHERE}, []), GONE)
