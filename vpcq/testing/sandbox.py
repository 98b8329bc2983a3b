"""A throwaway host with a simulated internet, for tests, the demo and the benchmarks.

    <tok>i  "the internet": 198.51.100.1 on the link, 203.0.113.10 on lo, and a route to
            10.0.0.0/8 via the host (so connection attempts from outside really arrive)
      |  veth
    <tok>h  "the host": inet0 198.51.100.2, default route via 198.51.100.1; vpcq's workers
            run here ($VPCQ_NETNS) with VPCQ_UPLINK=inet0

Every name starts with the token, so `sweep` finds all of it. No packet leaves these
namespaces: the only addresses anything is sent to are the ones made here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from vpcq.workers.kernel import netns

INTERNET_IP = "203.0.113.10"


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


def sweep(tok: str, home: Path) -> list[str]:
    """Remove everything a test made; return what had to be removed besides its own two
    namespaces (apps, VPC namespaces), for the leak check."""
    leaked: list[str] = []
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
    for ns in netns.list_names():
        if tok in ns:
            if ns not in (f"{tok}h", f"{tok}i"):
                leaked.append(f"netns {ns}")
            netns.remove(ns)
    return leaked


