"""What vpcq may have made for a test, from the kernel and the files alone: for checks that
a deletion or a cleanup left nothing behind."""

from __future__ import annotations

from tests.kernel.conftest import Net
from vpcq.testing import probe
from vpcq.testing.sandbox import ETC_NETNS, started_with
from vpcq.workers.kernel import netns


def kernel_objects(net: Net) -> dict[str, set[str]]:
    """Everything vpcq may have made for this test: namespaces, host links, host chains
    (and the jumps to them), host routes to VPCs, app processes, resolvers (dnsmasq
    processes started with the test's files) and the subnets' resolv.conf files."""
    links = {ln.split(": ")[1].split("@")[0] for ln in probe.save(net.host, "ip", "-o", "link").splitlines()}
    rules = {ln for ln in probe.save(net.host, "iptables-save").splitlines() if "VPCQ" in ln}
    routes = {ln for ln in probe.save(net.host, "ip", "route").splitlines() if " via 100.64." in ln}
    apps = {p.name for p in (net.home / "apps").glob("*.json")} if (net.home / "apps").exists() else set()
    return {
        "namespaces": {n for n in netns.list_names() if net.tok in n} - {net.host, net.internet},
        "host links": {x for x in links if x.startswith("vq")},
        "host rules": rules,
        "host routes": routes,
        "apps": apps,
        "resolvers": {str(pid) for pid in started_with(net.home / "dns")},
        "resolv.conf": {str(p) for p in ETC_NETNS.glob(f"*{net.tok}*")} if ETC_NETNS.is_dir() else set(),
    }


def nothing_left(net: Net) -> dict[str, set[str]]:
    return {k: v for k, v in kernel_objects(net).items() if v}
