"""The tutorial's whole scenario, run for real in a throwaway host: `python -m vpcq.testing.demo`.

It makes a namespace that plays the host and one that plays the internet, starts vpcq's
embedded Redis and two workers under a temporary $VPCQ_HOME, runs the tutorial's commands
through the real `vpcq` CLI, checks each promise with real connections, cleans up, and
prints `N passed, M failed`. Nothing touches the machine's own interfaces.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vpcq.testing import probe
from vpcq.testing.sandbox import (
    ETC_NETNS,
    INTERNET_DNS,
    INTERNET_IP,
    INTERNET_NAME,
    build_internet,
    remove_resolv_conf,
    serve_dns,
    started_with,
    sweep,
)
from vpcq.workers.kernel import netns

VPC, OTHER = "my-vpc", "other-vpc"
WEB, DB, APP = f"{VPC}-web-subnet", f"{VPC}-db-subnet", f"{OTHER}-app-subnet"
RULES = {
    "subnet": "10.0.1.0/24",
    "ingress": [
        {"port": 8000, "protocol": "tcp", "action": "allow"},
        {"port": 22, "protocol": "tcp", "action": "deny"},
    ],
}


class Demo:
    def __init__(self, home: Path, tok: str) -> None:
        self.home = home
        self.tok = tok
        self.host = f"{tok}h"
        self.internet = f"{tok}i"
        self.passed = 0
        self.failed = 0
        self.env = {
            **os.environ,
            "VPCQ_HOME": str(home),
            "VPCQ_NETNS": self.host,
            "VPCQ_UPLINK": "inet0",
            # the internet namespace's DNS server, never this machine's resolver
            "VPCQ_DNS_UPSTREAM": INTERNET_DNS,
        }
        self.env.pop("VPCQ_REDIS_URL", None)

    def vpcq(self, *args: str) -> subprocess.CompletedProcess[str]:
        print(f"$ vpcq {' '.join(args)}", flush=True)
        p = subprocess.run([sys.executable, "-I", "-m", "vpcq.cli.main", *args], env=self.env,
                           capture_output=True, text=True, timeout=300)
        for line in (p.stdout + p.stderr).rstrip().splitlines():
            print(f"    {line}")
        return p

    def check(self, what: str, fn: Callable[[], bool]) -> None:
        try:
            ok = bool(fn())
        except Exception as e:
            ok = False
            what += f" ({type(e).__name__}: {e})"
        self.passed += ok
        self.failed += not ok
        print(f"  [{'PASS' if ok else 'FAIL'}] {what}", flush=True)

    def run(self) -> None:
        print("== start vpcq (embedded Redis, 2 workers) in a throwaway host")
        self.check("vpcq up starts Redis and workers", lambda: self.vpcq("up", "--workers", "2")
                   .returncode == 0)

        print("\n== create the VPCs and subnets (the tutorial's commands)")
        self.check("create-vpc my-vpc 10.0.0.0/16", lambda: self.ok("create-vpc", VPC, "10.0.0.0/16"))
        self.check("add-subnet web-subnet (public)", lambda: self.ok(
            "add-subnet", VPC, "web-subnet", "10.0.1.0/24", "--type", "public"))
        self.check("add-subnet db-subnet (private)", lambda: self.ok(
            "add-subnet", VPC, "db-subnet", "10.0.2.0/24", "--type", "private"))
        self.check("deploy-app in web-subnet :8000", lambda: self.ok("deploy-app", VPC, "web-subnet",
                                                                    "--port", "8000"))
        self.check("deploy-app in db-subnet :8000", lambda: self.ok("deploy-app", VPC, "db-subnet"))
        self.check("create-vpc other-vpc 10.1.0.0/16", lambda: self.ok("create-vpc", OTHER,
                                                                        "10.1.0.0/16"))
        self.check("add-subnet app-subnet (public)", lambda: self.ok(
            "add-subnet", OTHER, "app-subnet", "10.1.1.0/24", "--type", "public"))
        self.check("deploy-app in app-subnet", lambda: self.ok("deploy-app", OTHER, "app-subnet"))
        self.vpcq("list")

        print("\n== test 1: communication inside a VPC")
        self.check("web-subnet reaches the app in db-subnet",
                   lambda: probe.http(WEB, "10.0.2.1") is not None)
        self.check("the host reaches the app in the public subnet (curl http://10.0.1.1:8000)",
                   lambda: "web-subnet" in (probe.http(self.host, "10.0.1.1") or ""))
        self.check("the host reaches the app in the private subnet",
                   lambda: "db-subnet" in (probe.http(self.host, "10.0.2.1") or ""))

        print("\n== test 2: isolation between VPCs")
        self.check("my-vpc cannot reach other-vpc (TCP)", lambda: probe.http(WEB, "10.1.1.1") is None)
        self.check("other-vpc cannot reach my-vpc (ICMP)", lambda: not probe.ping(APP, "10.0.1.1"))

        print("\n== test 3: NAT")
        self.check("the public subnet reaches the internet", lambda: probe.ping(WEB, INTERNET_IP))
        self.check("the private subnet does not", lambda: not probe.ping(DB, INTERNET_IP))
        self.check("the internet cannot open a connection into a subnet",
                   lambda: not probe.tcp(self.internet, "10.0.1.1", 8000))
        self.check("iptables -t nat shows the MASQUERADE on the host", lambda: "MASQUERADE" in
                   probe.save(self.host, "iptables", "-t", "nat", "-L", "-n"))

        print("\n== test 4: peering")
        self.check("peer-vpcs my-vpc other-vpc", lambda: self.ok("peer-vpcs", VPC, OTHER))
        self.check("my-vpc reaches other-vpc through the peering",
                   lambda: probe.http(WEB, "10.1.1.1") is not None)
        self.check("other-vpc reaches my-vpc's private subnet",
                   lambda: probe.http(APP, "10.0.2.1") is not None)
        self.check("unpeer-vpcs restores isolation", lambda: self.ok("unpeer-vpcs", VPC, OTHER)
                   and probe.http(WEB, "10.1.1.1") is None)

        print("\n== test 5: firewall (security group)")
        rules = self.home / "rules.json"
        rules.write_text(json.dumps(RULES))
        self.check("apply-firewall my-vpc web-subnet rules.json",
                   lambda: self.ok("apply-firewall", VPC, "web-subnet", str(rules)))
        listing = probe.save(WEB, "iptables", "-L", "-n")
        print("$ ip netns exec my-vpc-web-subnet iptables -L -n")
        print("    " + "\n    ".join(listing.splitlines()))
        self.check("port 8000 is allowed", lambda: probe.http(self.host, "10.0.1.1") is not None)
        with probe.tcp_listener(WEB, 22):
            self.check("port 22 is denied", lambda: not probe.tcp(self.host, "10.0.1.1", 22, 0.5))
        self.check("applying it again changes nothing", lambda: self.same_rules(rules))

        self.services()

        print("\n== audit, drift, cleanup")
        self.check("vpcq log has the whole story", lambda: self.vpcq("log", "--vpc", VPC)
                   .stdout.count("ChangeApplied") >= 6)
        self.check("vpcq drift: the kernel matches the log", lambda: self.vpcq("drift")
                   .returncode == 0)
        self.check("vpcq cleanup", lambda: self.ok("cleanup"))
        self.check("no VPC namespace is left", lambda: not [
            n for n in netns.list_names() if n.startswith((VPC, OTHER, f"vpcq_{VPC}", f"vpcq_{OTHER}"))])
        self.check("no resolver and no /etc/netns file is left", lambda: not list(
            ETC_NETNS.glob(f"{VPC}-*")) and not started_with(self.home / "dns"))
        self.check("no host chain or route is left", lambda: "VPCQ" not in probe.save(
            self.host, "iptables-save") and "10.0.0.0" not in probe.save(self.host, "ip", "route"))

    def services(self) -> None:
        print("\n== test 6: DNS, a public port, a load balancer")
        print("$ ip netns exec my-vpc-web-subnet getent hosts db-subnet")
        self.check("db-subnet resolves in web-subnet (search my-vpc.internal)",
                   lambda: probe.getent(WEB, "db-subnet") == "10.0.2.1")
        self.check(f"the public subnet resolves {INTERNET_NAME} through the internet's resolver",
                   lambda: probe.getent(WEB, INTERNET_NAME) == INTERNET_IP)
        self.check("the private subnet does not", lambda: probe.getent(DB, INTERNET_NAME) is None)
        self.check("other-vpc (not peered) does not know my-vpc's names",
                   lambda: probe.dns(APP, "10.1.1.254", "db-subnet.my-vpc.internal")[0] == "NXDOMAIN")
        self.check("expose my-vpc web-subnet 8000 --host-port 8080",
                   lambda: self.ok("expose", VPC, "web-subnet", "8000", "--host-port", "8080"))
        self.check("the internet reaches it on the host's port 8080", lambda: "web-subnet" in (
            probe.http(self.internet, "198.51.100.2", 8080) or ""))
        self.check("a private subnet is refused, with the reason", lambda: self.vpcq(
            "expose", VPC, "db-subnet", "8000").returncode == 2)
        self.check("create-lb my-vpc web-lb --port 80 --target web-subnet:8000 --target db-subnet:8000",
                   lambda: self.ok("create-lb", VPC, "web-lb", "--port", "80", "--target",
                                   "web-subnet:8000", "--target", "db-subnet:8000"))
        lb = probe.getent(WEB, "web-lb") or "10.0.255.254"
        print(f"    web-lb.my-vpc.internal is {lb}")
        self.check("40 connections to web-lb:80 are spread 20/20",
                   lambda: self.spread(lb, 40) == {"web-subnet": 20, "db-subnet": 20})
        self.check("stop-app in db-subnet: within 5 s every connection goes to web-subnet",
                   lambda: self.ok("stop-app", VPC, "db-subnet") and self.within(
                       5, lambda: set(self.spread(lb, 6)) == {"web-subnet"}))
        self.vpcq("list")
        self.check("deploy-app in db-subnet again: back in rotation within 5 s",
                   lambda: self.ok("deploy-app", VPC, "db-subnet") and self.within(
                       5, lambda: "db-subnet" in self.spread(lb, 6)))

    def spread(self, lb: str, n: int) -> dict[str, int]:
        """Which subnet's app answered each of n new connections from the host."""
        counts: dict[str, int] = {}
        for _ in range(n):
            body = probe.http(self.host, lb, 80, timeout=1) or ""
            who = next((s for s in ("web-subnet", "db-subnet") if s in body), "none")
            counts[who] = counts.get(who, 0) + 1
        return counts

    def within(self, seconds: float, fn: Callable[[], bool]) -> bool:
        start = time.monotonic()
        while not fn():
            if time.monotonic() - start > seconds:
                return False
            time.sleep(0.1)
        print(f"    (after {time.monotonic() - start:.1f} s)")
        return True

    def ok(self, *args: str) -> bool:
        return self.vpcq(*args).returncode == 0

    def same_rules(self, rules: Path) -> bool:
        before = probe.save(WEB, "iptables-save")
        return self.ok("apply-firewall", VPC, "web-subnet", str(rules)) and \
            probe.save(WEB, "iptables-save") == before


def main() -> int:
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces)", file=sys.stderr)
        return 3
    taken = [n for n in netns.list_names() if n.startswith((VPC, OTHER, f"vpcq_{VPC}",
                                                             f"vpcq_{OTHER}"))]
    if taken:
        print(f"refusing to run: namespaces {taken} already exist", file=sys.stderr)
        return 3
    tok = "demo" + secrets.token_hex(2)
    home = Path(tempfile.mkdtemp(prefix="vpcq-demo-"))
    demo = Demo(home, tok)
    start = time.monotonic()
    try:
        build_internet(tok)
        serve_dns(tok, home / "internet")
        demo.run()
    finally:
        demo.vpcq("down")
        sweep(tok, home)
        for n in netns.list_names():
            if n.startswith((f"{VPC}-", f"{OTHER}-", f"vpcq_{VPC}", f"vpcq_{OTHER}")):
                netns.remove(n)
        for d in ETC_NETNS.glob(f"{VPC}-*") if ETC_NETNS.is_dir() else []:  # a cleanup cut short
            remove_resolv_conf(d)
        shutil.rmtree(home, ignore_errors=True)
    print(f"\n(took {time.monotonic() - start:.1f} s)")
    print(f"{demo.passed} passed, {demo.failed} failed")
    return 0 if demo.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
