"""Netlink on the wire: plain sockets, requests encoded, replies decoded.

Requests are encoded by pyroute2's rtnetlink message classes (`link_body`, `addr_body`,
`route_body`). Replies are decoded here with `struct`, keeping only the attributes vpcq
compares: pyroute2 decodes every attribute of every message into Python objects
(statistics, queue settings, af-specs...), which made link dumps of a router namespace with
many subnets most of an add-subnet's time, growing with its subnets.

The kernel handles an rtnetlink request inside `send()`, so its acknowledgement is already
queued when `send()` returns: a request is one send and one receive on a `Channel`, the
namespace's socket, with no event-loop round trip and no per-request machinery.

The formats are the kernel's stable ABI: <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/if_link.h>, <linux/if_addr.h>.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def _bare_package(name: str) -> None:
    """Put package `name` in sys.modules without running its __init__ until one of its own
    names is asked for; its submodules import as usual.

    pyroute2's __init__ imports the whole library (IPDB, NDB, wireless, IPVS, 9p...): 100 ms
    of every worker's, `vpcq drift`'s and `vpcq repair`'s start, for the four message classes
    used here. Code that wants the package's names (`from pyroute2 import IPRoute`) still gets
    them: the first such lookup runs the __init__ into the module.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    loading = False

    def __getattr__(attr: str) -> Any:
        nonlocal loading
        if loading or (attr.startswith("__") and attr not in ("__all__", "__version__")):
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        if importlib.util.find_spec(f"{name}.{attr}") is not None:  # `from pyroute2 import
            return importlib.import_module(f"{name}.{attr}")  # config`, as its submodules do
        loading = True
        delattr(module, "__getattr__")
        loader.exec_module(module)
        return getattr(module, attr)

    setattr(module, "__getattr__", __getattr__)  # noqa: B010 (a module's own __getattr__, PEP 562)
    sys.modules[name] = module


_bare_package("pyroute2")

from pyroute2.netlink import nlmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in an error: payload not echoed; TLVs follow
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400  # in a new-object request
IFF_UP = 0x1
SO_NETNS_COOKIE = 71
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 270, 10, 11, 12
NLMSGERR_ATTR_MSG = 1  # the kernel's own words on why a request failed
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
RTM_DELLINK, RTM_DELADDR, RTM_DELROUTE = 17, 21, 25

IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_LINK_NETNSID = 3, 5, 10, 18, 37
IFLA_INFO_KIND = 1
IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS = 29, 1 << 3
IFA_ADDRESS = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flags
# <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_GETGEN, NFT_NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | 16, (NFNL_SUBSYS_NFTABLES << 8) | 15
NFTA_GEN_ID = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
HEADER = _HDR.size
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_NLA = struct.Struct("=HH")
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id
_U32 = struct.Struct("=I")
_BE32 = struct.Struct("!I")
_S32 = struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class RawLink:
    index: int
    name: str
    flags: int
    kind: str | None
    master: int | None
    link: int | None  # the peer's ifindex (veth)
    link_netnsid: int | None


class RtnlError(OSError):
    """A request the kernel refused (errno, and its extended-ack message if it gave one)."""


_TIMEOUT = struct.pack("@ll", 10, 0)  # struct timeval: a reply never comes later than this


def _open(proto: int) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
    s.bind((0, 0))
    # a lost reply becomes EAGAIN after the timeout, not a worker stuck in recv()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
    try:  # errors without our request echoed back, with the kernel's reason attached
        s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        # dumps filtered by the kernel (an address's link, a route's table and device)
        s.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
    except OSError:
        pass  # an older kernel: plain errnos, and dumps are filtered here instead
    return s


def open_sockets() -> tuple[socket.socket, socket.socket | None]:
    """Netlink sockets for dumps (route) and the nftables generation (netfilter, None if
    this kernel has no nfnetlink: rules are then simply always read); call it inside the
    namespace they should look at (a socket stays bound to it)."""
    try:
        nf: socket.socket | None = _open(NETLINK_NETFILTER)
    except OSError:
        nf = None
    return _open(socket.NETLINK_ROUTE), nf


def cookie(sock: socket.socket) -> int:
    """The cookie of the namespace `sock` was made in (Linux 5.14+): what tells a namespace
    from any other that had or will have its name, or its nsfs inode. Once a namespace is
    freed, its inode can go to the next one made (the lowest free inode is given); a cookie
    is never given twice in a boot."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)


def cookie_here() -> int:
    """The cookie of the calling thread's namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        return cookie(s)


def generation_here() -> int | None:
    """The nftables generation of the calling thread's namespace, asked on sockets of its
    own (for a thread that must not share a channel with the event loop's)."""
    c = Channel(open_sockets())
    try:
        return c.generation()
    finally:
        c.close()


class Channel:
    """Synchronous requests over one namespace's sockets. A dump is a few hundred
    microseconds of kernel work and a change less, read in one go, so each is done inline
    and never interleaves with another (a netlink socket serves one dump at a time)."""

    def __init__(self, socks: tuple[socket.socket, socket.socket | None]) -> None:
        self.sock, self.nf = socks
        self._seq = 0
        self._buf = bytearray(1 << 16)

    def close(self) -> None:
        self.sock.close()
        if self.nf is not None:
            self.nf.close()

    def generation(self) -> int | None:
        """The namespace's nftables ruleset generation: every committed change to any table
        (iptables-nft included) increments it. None when nftables cannot tell."""
        if self.nf is None:
            return None
        try:
            msgs, _ = self._request(NFT_GETGEN, NLM_F_REQUEST, _NFGEN.pack(socket.AF_UNSPEC, 0, 0),
                                    sock=self.nf, reply=NFT_NEWGEN)
        except OSError:
            return None
        for data, off, end in msgs:
            for t, a, _b in _attrs(data, off + _NFGEN.size, end):
                if t == NFTA_GEN_ID:
                    return int(_BE32.unpack_from(data, a)[0])
        return None

    def links(self) -> list[RawLink]:
        return [_link(*m) for m in self._dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                                              + _NO_STATS)]

    def link(self, name: str | None = None, index: int = 0) -> RawLink | None:
        """One link by name or by index (RTM_GETLINK: the kernel looks it up), or None."""
        nla = _NO_STATS
        if name is not None:
            raw = name.encode() + b"\0"
            nla += _NLA.pack(_NLA.size + len(raw), IFLA_IFNAME) + raw + b"\0" * (-len(raw) % 4)
        try:
            msgs, _ = self._request(RTM_GETLINK, NLM_F_REQUEST,
                                    _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + nla)
        except RtnlError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return _link(*msgs[0]) if msgs else None

    def addrs4(self, link: int = 0) -> list[tuple[int, str, int]]:
        """(ifindex, address, prefixlen) of every IPv4 address, or of one link's."""
        out = []
        for data, off, end in self._dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, link)):
            fam, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(data, off)
            if fam != socket.AF_INET or (link and index != link):
                continue
            for t, a, _b in _attrs(data, off + _IFADDR.size, end):
                if t == IFA_ADDRESS:
                    out.append((index, socket.inet_ntoa(data[a : a + 4]), prefixlen))
        return out

    def routes4(self, table: int, oif: int = 0) -> list[tuple[str, str | None, int | None]]:
        """(dst, gateway, oif) of the IPv4 routes of one table (through link `oif` only, if
        given); dst is "default" or a CIDR."""
        out = []
        hdr = _RTMSG.pack(socket.AF_INET, 0, 0, 0, table, 0, 0, 0, 0)
        if oif:
            hdr += _NLA.pack(_NLA.size + _U32.size, RTA_OIF) + _U32.pack(oif)
        for data, off, end in self._dump(RTM_GETROUTE, hdr):
            fam, dst_len, _s, _tos, tbl, _p, _sc, _ty, _f = _RTMSG.unpack_from(data, off)
            if fam != socket.AF_INET:
                continue
            dst, gw, dev = None, None, None
            for t, a, _b in _attrs(data, off + _RTMSG.size, end):
                if t == RTA_TABLE:
                    tbl = _U32.unpack_from(data, a)[0]
                elif t == RTA_DST:
                    dst = socket.inet_ntoa(data[a : a + 4])
                elif t == RTA_GATEWAY:
                    gw = socket.inet_ntoa(data[a : a + 4])
                elif t == RTA_OIF:
                    dev = _U32.unpack_from(data, a)[0]
            if tbl == table and (not oif or dev == oif):
                out.append(("default" if dst is None else f"{dst}/{dst_len}", gw, dev))
        return out

    def change(self, msg_type: int, flags: int, body: bytes) -> None:
        """Send one change request (`body`: the message after its netlink header) and wait
        for the kernel's acknowledgement; RtnlError if it refused."""
        self._request(msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, body, reply=NLMSG_ERROR)

    def _dump(self, msg_type: int, body: bytes) -> list[tuple[bytes, int, int]]:
        """(buffer, body offset, message end) of each answer; retried if the dump was
        interrupted by a concurrent change (NLM_F_DUMP_INTR)."""
        for _ in range(5):
            msgs, interrupted = self._request(msg_type, NLM_F_REQUEST | NLM_F_DUMP, body)
            if not interrupted:
                return msgs
        raise RtnlError(errno.EAGAIN, "netlink dump kept being interrupted")

    def _request(
        self, msg_type: int, flags: int, body: bytes, sock: socket.socket | None = None,
        reply: int | None = None,
    ) -> tuple[list[tuple[bytes, int, int]], bool]:
        sock = sock or self.sock
        reply = msg_type - 2 if reply is None else reply  # RTM_NEW* answers RTM_GET*
        self._seq += 1
        seq = self._seq
        sock.send(_HDR.pack(_HDR.size + len(body), msg_type, flags, seq, 0) + body)
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        out: list[tuple[bytes, int, int]] = []
        interrupted = False
        while True:
            n = sock.recv_into(self._buf, 0, socket.MSG_TRUNC)  # n: the real length
            if n > len(self._buf):
                raise RtnlError(errno.EMSGSIZE, f"netlink message of {n} bytes")
            data = bytes(self._buf[:n])
            off = 0
            while off + _HDR.size <= n:
                length, mtype, mflags, mseq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size or off + length > n:
                    raise RtnlError(errno.EPROTO, "truncated netlink message")
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out, interrupted
                    if mtype == NLMSG_ERROR:
                        code = -_S32.unpack_from(data, off + _HDR.size)[0]
                        if code:
                            why = _ext_ack(data, off, off + length, mflags)
                            raise RtnlError(code, why or os.strerror(code))
                        return out, interrupted
                    interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                    if mtype == reply:
                        out.append((data, off + _HDR.size, off + length))
                        if not dump:
                            return out, False
                off += (length + 3) & ~3


# Without a link's statistics (IFLA_EXT_MASK): the kernel sums each one's per-CPU counters
# for every link it dumps, and they are a quarter of each message, for nothing vpcq reads.
_NO_STATS = _NLA.pack(_NLA.size + 4, IFLA_EXT_MASK) + struct.pack("=I", RTEXT_FILTER_SKIP_STATS)


def _link(data: bytes, off: int, end: int) -> RawLink:
    _fam, _type, index, flags, _chg = _IFINFO.unpack_from(data, off)
    name, kind, master, link, nsid = "", None, None, None, None
    for t, a, b in _attrs(data, off + _IFINFO.size, end):
        if t == IFLA_IFNAME:
            name = data[a:b].split(b"\0", 1)[0].decode()
        elif t == IFLA_MASTER:
            master = _U32.unpack_from(data, a)[0]
        elif t == IFLA_LINK:
            link = _U32.unpack_from(data, a)[0]
        elif t == IFLA_LINK_NETNSID:
            nsid = _S32.unpack_from(data, a)[0]
        elif t == IFLA_LINKINFO:
            for t2, a2, b2 in _attrs(data, a, b):
                if t2 == IFLA_INFO_KIND:
                    kind = data[a2:b2].split(b"\0", 1)[0].decode()
    return RawLink(index, name, flags, kind, master, link, nsid)


def _ext_ack(data: bytes, off: int, end: int, flags: int) -> str | None:
    """The kernel's message in an error's extended ack, if any (NETLINK_EXT_ACK)."""
    if not flags & NLM_F_ACK_TLVS:
        return None
    # nlmsgerr: the error code, then the request's header (and its payload unless capped)
    start = off + _HDR.size + _S32.size
    echoed = _HDR.size if flags & NLM_F_CAPPED else _HDR.unpack_from(data, start)[0]
    for t, a, b in _attrs(data, start + ((echoed + 3) & ~3), end):
        if t == NLMSGERR_ATTR_MSG:
            return data[a:b].split(b"\0", 1)[0].decode(errors="replace") or None
    return None


def _attrs(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each netlink attribute in data[off:end]."""
    while off + _NLA.size <= end:
        length, t = _NLA.unpack_from(data, off)
        if length < _NLA.size:
            return
        yield t & NLA_TYPE_MASK, off + _NLA.size, off + length
        off += (length + 3) & ~3


# ---- requests, encoded by pyroute2's rtnetlink message classes ----------------------------

MAIN_TABLE = 254
RTPROT_STATIC, RTN_UNICAST, RT_SCOPE_NOWHERE = 4, 1, 255


def body(msg: nlmsg, fields: dict[str, int], attrs: list[tuple[str, Any]]) -> bytes:
    """A request as pyroute2 encodes it, without the netlink header (the channel's)."""
    for k, v in fields.items():
        msg[k] = v
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data[HEADER : msg["header"]["length"]])


def link_body(fields: dict[str, int], attrs: list[tuple[str, Any]]) -> bytes:
    """An RTM_NEWLINK or RTM_DELLINK request."""
    return body(ifinfmsg(), fields, attrs)


def addr_body(index: int, address: str, prefixlen: int) -> bytes:
    """An RTM_NEWADDR or RTM_DELADDR request for an IPv4 address on link `index`."""
    return body(ifaddrmsg(), {"family": socket.AF_INET, "prefixlen": prefixlen, "index": index},
                [("IFA_LOCAL", address), ("IFA_ADDRESS", address)])


def route_body(dst: str, fields: dict[str, int], attrs: list[tuple[str, Any]]) -> bytes:
    """An RTM_NEWROUTE or RTM_DELROUTE request for an IPv4 route of the main table to `dst`
    ("default" or a CIDR)."""
    if dst != "default":
        net, plen = dst.split("/")
        attrs = [("RTA_DST", net), *attrs]
        fields = {**fields, "dst_len": int(plen)}
    return body(rtmsg(), {"family": socket.AF_INET, "table": MAIN_TABLE, **fields}, attrs)
