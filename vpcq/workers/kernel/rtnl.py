"""Lean rtnetlink dumps for observation: links, IPv4 addresses and IPv4 routes.

pyroute2 decodes every attribute of every message into Python objects (statistics, queue
settings, af-specs...). A profile of the worker showed link dumps of a router namespace
with many subnets taking most of an add-subnet's time, growing with the subnets. Observing
needs a handful of attributes, so dumps are read here with `struct` from a plain netlink
socket made inside the namespace, and only those attributes are kept. Changes still go
through pyroute2 (netlink.py).

The formats are the kernel's stable ABI: <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/if_link.h>, <linux/if_addr.h>.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLM_F_DUMP_INTR = 0x10
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24

IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_LINK_NETNSID = 3, 5, 10, 18, 37
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flags
# <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_GETGEN, NFT_NEWGEN = (NFNL_SUBSYS_NFTABLES << 8) | 16, (NFNL_SUBSYS_NFTABLES << 8) | 15
NFTA_GEN_ID = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
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


class DumpError(OSError):
    pass


def _open(proto: int) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
    s.bind((0, 0))
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


class Dumper:
    """Synchronous dumps over one socket. A dump is a few hundred microseconds of kernel
    work, read in one go, so it is done inline and never interleaves with another."""

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
        return [_link(*m) for m in self._dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0))]

    def link(self, name: str) -> RawLink | None:
        """One link by name (RTM_GETLINK with IFLA_IFNAME: the kernel looks it up), or None."""
        raw = name.encode() + b"\0"
        nla = _NLA.pack(_NLA.size + len(raw), IFLA_IFNAME) + raw + b"\0" * (-len(raw) % 4)
        try:
            msgs, _ = self._request(RTM_GETLINK, NLM_F_REQUEST,
                                    _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + nla)
        except DumpError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return _link(*msgs[0]) if msgs else None

    def addrs4(self) -> list[tuple[int, str, int]]:
        """(ifindex, address, prefixlen) of every IPv4 address."""
        out = []
        for data, off, end in self._dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            fam, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(data, off)
            if fam != socket.AF_INET:
                continue
            for t, a, _b in _attrs(data, off + _IFADDR.size, end):
                if t == IFA_ADDRESS:
                    out.append((index, socket.inet_ntoa(data[a : a + 4]), prefixlen))
        return out

    def routes4(self, table: int) -> list[tuple[str, str | None, int | None]]:
        """(dst, gateway, oif) of the IPv4 routes of one table; dst is "default" or a CIDR."""
        out = []
        hdr = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        for data, off, end in self._dump(RTM_GETROUTE, hdr):
            fam, dst_len, _s, _tos, tbl, _p, _sc, _ty, _f = _RTMSG.unpack_from(data, off)
            if fam != socket.AF_INET:
                continue
            dst, gw, oif = None, None, None
            for t, a, _b in _attrs(data, off + _RTMSG.size, end):
                if t == RTA_TABLE:
                    tbl = _U32.unpack_from(data, a)[0]
                elif t == RTA_DST:
                    dst = socket.inet_ntoa(data[a : a + 4])
                elif t == RTA_GATEWAY:
                    gw = socket.inet_ntoa(data[a : a + 4])
                elif t == RTA_OIF:
                    oif = _U32.unpack_from(data, a)[0]
            if tbl == table:
                out.append(("default" if dst is None else f"{dst}/{dst_len}", gw, oif))
        return out

    def _dump(self, msg_type: int, body: bytes) -> list[tuple[bytes, int, int]]:
        """(buffer, body offset, message end) of each answer; retried if the dump was
        interrupted by a concurrent change (NLM_F_DUMP_INTR)."""
        for _ in range(5):
            msgs, interrupted = self._request(msg_type, NLM_F_REQUEST | NLM_F_DUMP, body)
            if not interrupted:
                return msgs
        raise DumpError(errno.EAGAIN, "netlink dump kept being interrupted")

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
                raise DumpError(errno.EMSGSIZE, f"netlink message of {n} bytes")
            data = bytes(self._buf[:n])
            off = 0
            while off + _HDR.size <= n:
                length, mtype, mflags, mseq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size or off + length > n:
                    raise DumpError(errno.EPROTO, "truncated netlink message")
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out, interrupted
                    if mtype == NLMSG_ERROR:
                        code = -_S32.unpack_from(data, off + _HDR.size)[0]
                        if code:
                            raise DumpError(code, os.strerror(code))
                        return out, interrupted
                    interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                    if mtype == reply:
                        out.append((data, off + _HDR.size, off + length))
                        if not dump:
                            return out, False
                off += (length + 3) & ~3


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


def _attrs(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each netlink attribute in data[off:end]."""
    while off + _NLA.size <= end:
        length, t = _NLA.unpack_from(data, off)
        if length < _NLA.size:
            return
        yield t & NLA_TYPE_MASK, off + _NLA.size, off + length
        off += (length + 3) & ~3
