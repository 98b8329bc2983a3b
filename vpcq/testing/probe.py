"""Probes for tests, the demo and benchmarks: real connections from inside a namespace.

A socket made by a thread that entered a namespace belongs to that namespace for good, so
the probes can run it from the test's own thread. Every address probed is one the test made.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vpcq.workers.kernel import netns


def _sock(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    return netns.run_in(ns, lambda: socket.socket(family, kind, proto))


def tcp(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    """Does a TCP connection from `ns` to ip:port open?"""
    s = _sock(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http(ns: str, ip: str, port: int = 8000, timeout: float = 2.0) -> str | None:
    """The body of GET / from `ns`, or None."""
    s = _sock(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        s.sendall(f"GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return body.decode() if head.startswith(b"HTTP/1.0 200") else None
    except OSError:
        return None
    finally:
        s.close()


RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns(ns: str, server: str, name: str, timeout: float = 2.0) -> tuple[str, list[str]]:
    """Ask `server` (from inside `ns`) for the A records of `name`: (rcode, addresses);
    ("TIMEOUT", []) or ("UNREACHABLE", []) when nothing answers. A test's client, so that a
    test can tell NXDOMAIN from REFUSED from no answer (getent cannot)."""
    tid = int.from_bytes(os.urandom(2), "big")
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", tid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    s = _sock(ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(query, (server, 53))
        while True:
            data, _ = s.recvfrom(4096)
            if data[:2] == query[:2]:
                break
    except TimeoutError:
        return "TIMEOUT", []
    except OSError:
        return "UNREACHABLE", []
    finally:
        s.close()
    flags, _qd, an = struct.unpack("!HHH", data[2:8])
    pos = 12 + len(qname) + 4
    addrs = []
    for _ in range(an):
        while data[pos] and data[pos] < 0xC0:  # the owner name: labels, or a pointer
            pos += data[pos] + 1
        pos += 2 if data[pos] >= 0xC0 else 1
        rtype, _cls, _ttl, size = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and size == 4:
            addrs.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += size
    return RCODES.get(flags & 0xF, str(flags & 0xF)), addrs


def getent(ns: str, name: str) -> str | None:
    """`ip netns exec NS getent hosts NAME`, as a user types it: the address, or None."""
    p = subprocess.run(["ip", "netns", "exec", ns, "getent", "hosts", name], capture_output=True,
                       text=True, timeout=30)
    return p.stdout.split()[0] if p.returncode == 0 and p.stdout.split() else None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(ns: str, ip: str, timeout: float = 1.0) -> bool:
    """Does an ICMP echo from `ns` to `ip` get a reply?"""
    s = _sock(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        ident = os.getpid() & 0xFFFF
        payload = b"vpcq-probe"
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
        s.sendto(packet, (ip, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                return False
            data, addr = s.recvfrom(1024)
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == 0 and rid == ident and addr[0] == ip:
                return True
        return False
    finally:
        s.close()


def udp(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    """Does a datagram from `ns` to ip:port come back (from `udp_echo`)?"""
    s = _sock(ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(b"ping", (ip, port))
        data, _ = s.recvfrom(64)
        return data == b"ping"
    except OSError:
        return False
    finally:
        s.close()


@contextmanager
def _serving(s: socket.socket, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    """Run `handle(s)` in a loop on a thread for the duration of the block, then close `s`."""
    s.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                handle(s)
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        s.close()


def _echo(s: socket.socket) -> None:
    data, addr = s.recvfrom(64)
    s.sendto(data, addr)


def _accept(s: socket.socket) -> None:
    conn, _ = s.accept()
    conn.close()


@contextmanager
def udp_echo(ns: str, port: int) -> Iterator[None]:
    """A UDP echo server inside `ns` for the duration of the block."""
    s = _sock(ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    with _serving(s, _echo):
        yield


@contextmanager
def tcp_listener(ns: str, port: int) -> Iterator[None]:
    """A TCP listener inside `ns` (accepts, then closes) for the duration of the block."""
    s = _sock(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    with _serving(s, _accept):
        yield


@contextmanager
def whoami(ns: str, port: int, name: str) -> Iterator[None]:
    """A TCP server inside `ns` for the duration of the block that answers every connection
    with `name` and the address the connection came from, then closes it."""
    s = _sock(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)

    def answer(s: socket.socket) -> None:
        conn, (peer, _) = s.accept()
        try:
            conn.sendall(f"{name} {peer}\n".encode())
        finally:
            conn.close()

    with _serving(s, answer):
        yield


@contextmanager
def talker(ns: str, port: int, name: str) -> Iterator[None]:
    """A TCP server inside `ns` for the duration of the block that answers each line a
    client sends with `name` and the line, for as long as the client keeps the connection
    (one client at a time)."""
    s = _sock(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)

    def converse(s: socket.socket) -> None:
        conn, _ = s.accept()
        conn.settimeout(10)
        with conn, conn.makefile("rwb") as f:
            for line in f:
                f.write(f"{name} {line.decode().strip()}\n".encode())
                f.flush()

    with _serving(s, converse):
        yield


def ask(ns: str, ip: str, port: int, timeout: float = 2.0, source: str | None = None) -> str | None:
    """What a TCP server at ip:port says (from `ns`, from address `source` if given) before
    it closes, or None."""
    s = _sock(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source is not None:
            s.bind((source, 0))
        s.connect((ip, port))
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data.decode().strip() or None
    except OSError:
        return None
    finally:
        s.close()


def save(ns: str | None, *argv: str) -> str:
    """Command output inside a namespace (iptables-save, nft list ruleset, ...)."""
    cmd = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return "\n".join(ln for ln in out.splitlines() if not ln.startswith("#"))
