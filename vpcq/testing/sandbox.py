"""A throwaway host with a simulated internet, for tests, the demo and the benchmarks.

    <tok>i  "the internet": 198.51.100.1 on the link, 203.0.113.10 on lo, and a route to
            10.0.0.0/8 via the host (so connection attempts from outside really arrive);
            with `serve_dns`, a DNS server on 203.0.113.53 that knows one name
      |  veth
    <tok>h  "the host": inet0 198.51.100.2, default route via 198.51.100.1; vpcq's workers
            run here ($VPCQ_NETNS) with VPCQ_UPLINK=inet0

Every name starts with the token, so `sweep` finds all of it. No packet leaves these
namespaces: the only addresses anything is sent to are the ones made here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from vpcq.orchestrator.dns import MARK
from vpcq.workers.kernel import netns

INTERNET_IP = "203.0.113.10"
INTERNET_DNS = "203.0.113.53"  # the internet's resolver: point VPCQ_DNS_UPSTREAM here
INTERNET_NAME = "www.example.test"  # the one name it knows (INTERNET_IP); .test never exists
ETC_NETNS = Path("/etc/netns")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def build_internet(tok: str) -> None:
    host, inet = f"{tok}h", f"{tok}i"
    for ns in (host, inet):
        netns.create(ns)
    a, b = f"{tok}a0", f"{tok}b0"
    _ip("-n", host, "link", "add", a, "type", "veth", "peer", "name", b, "netns", inet)
    _ip("-n", host, "link", "set", a, "name", "inet0")
    _ip("-n", host, "addr", "add", "198.51.100.2/24", "dev", "inet0")
    _ip("-n", host, "link", "set", "inet0", "up")
    _ip("-n", host, "link", "set", "lo", "up")
    _ip("-n", host, "route", "add", "default", "via", "198.51.100.1")
    _ip("-n", inet, "addr", "add", "198.51.100.1/24", "dev", b)
    _ip("-n", inet, "addr", "add", f"{INTERNET_IP}/24", "dev", "lo")
    _ip("-n", inet, "link", "set", b, "up")
    _ip("-n", inet, "link", "set", "lo", "up")
    _ip("-n", inet, "route", "add", "10.0.0.0/8", "via", "198.51.100.2")


def serve_dns(tok: str, directory: Path) -> None:
    """A DNS server in the internet namespace, on INTERNET_DNS, that answers INTERNET_NAME and
    forwards nothing anywhere (dnsmasq, as vpcq's resolvers are). `sweep` stops it."""
    inet = f"{tok}i"
    _ip("-n", inet, "addr", "add", f"{INTERNET_DNS}/32", "dev", "lo")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "internet-dns.conf"
    conf.write_text(f"port=53\nbind-interfaces\nlisten-address={INTERNET_DNS}\nno-resolv\nno-hosts\n"
                    f"no-poll\nhost-record={INTERNET_NAME},{INTERNET_IP}\n")
    subprocess.run(["ip", "netns", "exec", inet, "dnsmasq", f"--conf-file={conf}",
                    f"--pid-file={directory / 'internet-dns.pid'}",
                    f"--log-facility={directory / 'internet-dns.log'}"],
                   check=True, capture_output=True, cwd="/")


def remove_resolv_conf(directory: Path) -> None:
    """Remove a resolv.conf vpcq wrote under /etc/netns (it starts with vpcq's mark), and its
    directory once empty: someone else's files stay."""
    conf = directory / "resolv.conf"
    try:
        if conf.read_text().startswith(MARK):
            conf.unlink()
        directory.rmdir()
    except OSError:
        pass


def in_namespaces(inodes: set[int]) -> dict[int, int]:
    """The processes whose network namespace is one of these (by nsfs inode): pid -> inode."""
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ino = os.stat(proc / "ns" / "net").st_ino
            except OSError:
                continue  # exited, or a zombie
            if ino in inodes:
                out[int(proc.name)] = ino
    return out


def started_with(home: Path) -> list[int]:
    """The processes whose command line names a file under `home` (vpcq's resolvers and apps
    do), wherever they run: a namespace removed while a process ran in it has no name left."""
    needle = str(home).encode() + b"/"
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def sweep(tok: str, home: Path) -> list[str]:
    """Remove everything a test made; return what had to be removed besides its own two
    namespaces and their processes (apps, resolvers, VPC namespaces, files under /etc/netns),
    for the leak check."""
    leaked: list[str] = []
    mine = {f"{tok}h", f"{tok}i"}
    inodes = {ns: i for ns in netns.list_names() if tok in ns and (i := netns.inode(ns)) is not None}
    for pid, ino in in_namespaces(set(inodes.values())).items():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        if ino not in {inodes.get(n) for n in mine}:  # the internet's DNS server is the test's
            leaked.append(f"process {pid} in a VPC's namespace")
    for pidfile in (home / "apps").glob("*.json") if (home / "apps").exists() else []:
        pid = json.loads(pidfile.read_text())["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
            leaked.append(f"app pid {pid}")
        except ProcessLookupError:
            pass
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"vpcq.workers.app" in cmd and tok.encode() in cmd:
            leaked.append(f"app process {proc.name}")
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in started_with(home):
        try:
            os.kill(pid, signal.SIGKILL)
            leaked.append(f"process {pid} of {home}")
        except ProcessLookupError:
            pass
    for ns in netns.list_names():
        if tok in ns:
            if ns not in mine:
                leaked.append(f"netns {ns}")
            netns.remove(ns)
    for d in ETC_NETNS.glob(f"*{tok}*") if ETC_NETNS.is_dir() else []:
        leaked.append(f"{d}")
        shutil.rmtree(d, ignore_errors=True)
    return leaked

