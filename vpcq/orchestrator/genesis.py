"""genesis(state, vpc): the events that rebuild one VPC from nothing (for VpcRestored)."""

from __future__ import annotations

from vpcq.events.schema import (
    AppDeployed,
    FirewallApplied,
    LoadBalancerCreated,
    PortExposed,
    SubnetAdded,
    VpcCreated,
    VpcsPeered,
)
from vpcq.orchestrator.state import State, VpcView, view_of

Genesis = (VpcCreated | SubnetAdded | AppDeployed | FirewallApplied | VpcsPeered | LoadBalancerCreated
           | PortExposed)


def genesis(state: State, vpc: str, live: State | None = None) -> list[Genesis]:
    """Events that recreate `vpc` as it is in `state`; empty when it does not exist there.

    With `live`, peerings whose other side no longer exists in `live` are left out.
    """
    return genesis_of(view_of(state, vpc), None if live is None else set(live.vpcs))


def genesis_of(view: VpcView, live: set[str] | None = None) -> list[Genesis]:
    """Events that recreate the VPC of `view`; peerings with VPCs not in `live` left out."""
    v = view.vpc
    if v is None:
        return []
    vpc = v.name
    out: list[Genesis] = [
        VpcCreated(
            name=v.name,
            cidr=v.cidr,
            key=v.key,
            router_ns=v.router_ns,
            interface=v.interface,
            uplink=v.uplink,
            host_route=v.host_route,
            host=v.host,
            dns_upstream=v.dns_upstream,
        )
    ]
    for s in v.subnets.values():
        out.append(
            SubnetAdded(
                vpc=vpc,
                name=s.name,
                cidr=s.cidr,
                public=s.public,
                key=s.key,
                netns=s.netns,
                bridge=s.bridge,
                veth=s.veth,
                gateway=s.gateway,
                address=s.address,
                prefixlen=s.prefixlen,
            )
        )
        if s.firewall is not None:
            out.append(FirewallApplied(vpc=vpc, subnet=s.name, firewall=s.firewall))
        if s.app_port is not None:
            out.append(AppDeployed(vpc=vpc, subnet=s.name, port=s.app_port))
    for b in v.balancers.values():
        out.append(LoadBalancerCreated(vpc=vpc, name=b.name, key=b.key, address=b.address,
                                       port=b.port, targets=b.targets))
    for e in v.exposures.values():
        out.append(PortExposed(vpc=vpc, host_port=e.host_port, protocol=e.protocol,
                               target=e.target, balancer=e.balancer, port=e.port))
    for p in view.peerings:
        other = p.b if p.a == vpc else p.a
        if live is None or other in live:
            out.append(VpcsPeered(a=p.a, b=p.b, a_cidr=p.a_cidr, b_cidr=p.b_cidr, link=p.link))
    return out


def restore_touches(state: State, vpc: str, target: State) -> tuple[str, ...]:
    """Every VPC a restore of `vpc` to `target` changes: itself and old and new peers."""
    names = {vpc}
    for s in (state, target):
        for p in s.peers_of(vpc):
            names.update((p.a, p.b))
    return tuple(sorted(n for n in names if n == vpc or n in state.vpcs))
