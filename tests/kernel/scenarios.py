"""The two-VPC topology most kernel tests start from, submitted through the real orchestrator."""

from __future__ import annotations

from typing import Any

from tests.kernel.conftest import Net


def two_vpcs(net: Net, *extra: dict[str, Any], apps: tuple[str, ...] = ("web",)) -> tuple[str, str]:
    """VPC a (public web 10.0.1.0/24, private db 10.0.2.0/24) and VPC b (public app
    10.1.1.0/24), apps in the named subnets of a, then `extra` commands; all must apply."""
    a, b = net.name("a"), net.name("b")
    commands: list[dict[str, Any]] = [
        {"kind": "create-vpc", "name": a, "cidr": "10.0.0.0/16"},
        {"kind": "add-subnet", "vpc": a, "name": "web", "cidr": "10.0.1.0/24", "type": "public"},
        {"kind": "add-subnet", "vpc": a, "name": "db", "cidr": "10.0.2.0/24", "type": "private"},
        *({"kind": "deploy-app", "vpc": a, "subnet": s} for s in apps),
        {"kind": "create-vpc", "name": b, "cidr": "10.1.0.0/16"},
        {"kind": "add-subnet", "vpc": b, "name": "app", "cidr": "10.1.1.0/24", "type": "public"},
    ]
    commands += [{k: (a if v == "<a>" else b if v == "<b>" else v) for k, v in c.items()}
                 for c in extra]
    results = net.client().submit(*commands)
    assert set(results) == {"applied"}, results
    return a, b


FIREWALL = {"ingress": [{"protocol": "tcp", "port": "8000", "action": "allow"}], "default": "deny"}
