"""decide(command, state) -> events: every choice is made here and written into the events."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from vpcq.errors import DomainError
from vpcq.events.commands import (
    AddSubnet,
    ApplyFirewall,
    Cleanup,
    Command,
    CreateLb,
    CreateVpc,
    DeleteLb,
    DeleteSubnet,
    DeleteVpc,
    DeployApp,
    Expose,
    PeerVpcs,
    Rollback,
    SetLbTargets,
    StopApp,
    Unexpose,
    UnpeerVpcs,
)
from vpcq.events.schema import (
    AppDeployed,
    AppStopped,
    CommandAccepted,
    FirewallApplied,
    LbTarget,
    LoadBalancerCreated,
    LoadBalancerDeleted,
    LoadBalancerTargetsSet,
    PortExposed,
    PortUnexposed,
    SubnetAdded,
    SubnetDeleted,
    VpcCreated,
    VpcDeleted,
    VpcRestored,
    VpcsPeered,
    VpcsUnpeered,
)
from vpcq.orchestrator import naming
from vpcq.orchestrator.evolve import DomainEvent
from vpcq.orchestrator.genesis import genesis, restore_touches
from vpcq.orchestrator.naming import network
from vpcq.orchestrator.state import Balancer, Exposure, State, Subnet, Vpc, pair, port_key

Decision = list[CommandAccepted | DomainEvent]


def decide(command: Command, state: State, past: State | None = None) -> Decision:
    """The events that carry out `command` on `state`; raises DomainError to reject it.

    `past` is the state at the rollback target, needed only by `rollback`.
    """
    match command:
        case CreateVpc():
            events: Sequence[DomainEvent] = _create_vpc(command, state)
        case AddSubnet():
            events = [_add_subnet(command, state)]
        case DeleteSubnet():
            _subnet(state, command.vpc, command.name, "name")
            events = [*_delete_subnet_services(state.vpcs[command.vpc], command.name),
                      SubnetDeleted(vpc=command.vpc, name=command.name)]
        case DeployApp():
            sub = _subnet(state, command.vpc, command.subnet, "subnet")
            if sub.app_port is not None:
                raise DomainError(
                    "subnet",
                    f"an app already runs on port {sub.app_port} in {command.vpc}/"
                    f"{command.subnet}; run stop-app first",
                )
            events = [AppDeployed(vpc=command.vpc, subnet=command.subnet, port=command.port)]
        case StopApp():
            sub = _subnet(state, command.vpc, command.subnet, "subnet")
            if sub.app_port is None:
                raise DomainError("subnet", f"no app runs in {command.vpc}/{command.subnet}")
            events = [AppStopped(vpc=command.vpc, subnet=command.subnet, port=sub.app_port)]
        case ApplyFirewall():
            sub = _subnet(state, command.vpc, command.subnet, "subnet")
            named = command.file_subnet
            if named is not None and named not in (sub.name, sub.cidr, sub.netns):
                raise DomainError(
                    "firewall.subnet",
                    f"the file names subnet {named!r}, not {command.subnet} ({sub.cidr})",
                )
            events = [
                FirewallApplied(vpc=command.vpc, subnet=command.subnet, firewall=command.firewall)
            ]
        case PeerVpcs():
            events = [_peer(command, state)]
        case UnpeerVpcs():
            _vpc(state, command.a, "a")
            _vpc(state, command.b, "b")
            if pair(command.a, command.b) not in state.peerings:
                raise DomainError("b", f"{command.a} and {command.b} are not peered")
            events = [VpcsUnpeered(a=command.a, b=command.b)]
        case DeleteVpc():
            _vpc(state, command.name, "name")
            events = _delete_vpcs(state, [command.name])
        case Cleanup():
            events = _delete_vpcs(state, _cleanup_scope(command, state))
        case Rollback():
            events = [_rollback(command, state, past)]
        case Expose():
            events = [_expose(command, state)]
        case Unexpose():
            events = [_unexpose(command, state)]
        case CreateLb():
            events = _create_lb(command, state)
        case SetLbTargets():
            vpc = _vpc(state, command.vpc, "vpc")
            _balancer(vpc, command.name)
            events = [LoadBalancerTargetsSet(vpc=vpc.name, name=command.name,
                                             targets=_targets(vpc, command.targets))]
        case DeleteLb():
            vpc = _vpc(state, command.vpc, "vpc")
            _balancer(vpc, command.name)
            events = [*_unexpose_all(vpc, lambda e: e.balancer and e.target == command.name),
                      LoadBalancerDeleted(vpc=vpc.name, name=command.name)]
    vpcs: list[str] = []
    for ev in events:
        for v in ev.aggregates():
            if v not in vpcs:
                vpcs.append(v)
    accepted = CommandAccepted(
        kind=command.kind,
        args=_args(command),
        vpcs=tuple(vpcs),
        events=len(events),
        host=_applied_on(command, state, vpcs, events),
    )
    return [accepted, *events]


def _applied_on(command: Command, state: State, vpcs: list[str],
                events: Sequence[DomainEvent]) -> str | None:
    """The host whose workers apply the command: where its VPCs are before it (a deletion is
    applied where the VPC was) or after it (where one is made). A VPC is kernel objects on one
    machine, so one command is applied by one host, and a command whose VPCs are on two is
    refused (None: the command touches no VPC)."""
    made: dict[str, str] = {}
    for ev in events:
        for g in ev.genesis if isinstance(ev, VpcRestored) else (ev,):
            if isinstance(g, VpcCreated):
                made[g.name] = g.host
    hosts: list[str] = []
    for v in vpcs:
        known = state.vpcs.get(v)
        for host in (known.host if known is not None else None, made.get(v)):
            if host is not None and host not in hosts:
                hosts.append(host)
    if len(hosts) > 1:
        if isinstance(command, Rollback):
            now, then = state.vpcs.get(command.vpc), made.get(command.vpc)
            if now is not None and then is not None and now.host != then:
                raise DomainError("to", f"{command.vpc} is on host {now.host} now and was on "
                                        f"{then} at {command.to_seq}: delete-vpc {command.vpc} "
                                        "first, then roll back")
            raise DomainError("to", f"at {command.to_seq}, {command.vpc} was peered with a VPC "
                                    f"that is on another host now ({', '.join(hosts)})")
        raise DomainError("host", f"it touches VPCs on {', '.join(hosts)}: one command is "
                                  "applied by the workers of one host")
    return hosts[0] if hosts else None


def _args(command: Command) -> dict[str, str | int | bool | None]:
    out: dict[str, str | int | bool | None] = {}
    for k, v in command.model_dump(exclude={"kind"}).items():
        if isinstance(v, str | int | bool) or v is None:
            out[k] = v
        elif isinstance(v, list | tuple) and all(isinstance(x, str | int) for x in v):
            out[k] = ",".join(str(x) for x in v)  # a list of targets: what the command parses
        else:
            out[k] = str(v) if not isinstance(v, dict) else "<file>"
    return out


# ---- lookups ---------------------------------------------------------------------------------


def _vpc(state: State, name: str, field: str) -> Vpc:
    try:
        return state.vpcs[name]
    except KeyError:
        raise DomainError(field, f"no VPC named {name!r}") from None


def _subnet(state: State, vpc: str, name: str, field: str) -> Subnet:
    v = _vpc(state, vpc, "vpc")
    try:
        return v.subnets[name]
    except KeyError:
        raise DomainError(field, f"no subnet named {name!r} in VPC {vpc}") from None


def _next_linknet(state: State) -> ipaddress.IPv4Network:
    """The next /30 link-net for an uplink or a peering.

    Every link-net ever allocated lies below the state's high-water mark, so the mark itself
    is free until the pool wraps around: no scan of every VPC and peering, whose cost would
    grow with the log.
    """
    if state.linknet_hwm < naming.LINKNET_SLOTS:
        return naming.linknet_at(state.linknet_hwm)
    used = [v.uplink.net for v in state.vpcs.values()] + [
        p.link.net for p in state.peerings.values()
    ]
    return naming.allocate_linknet(used, start=state.linknet_hwm)


# ---- commands ----------------------------------------------------------------------------------


def _create_vpc(cmd: CreateVpc, state: State) -> list[DomainEvent]:
    if cmd.name in state.vpcs:
        raise DomainError("name", f"a VPC named {cmd.name!r} already exists")
    net = network(cmd.cidr)
    if not 8 <= net.prefixlen <= 28:
        raise DomainError("cidr", f"{cmd.cidr} must be between /8 and /28")
    key = naming.short_key(cmd.name, {v.key for v in state.vpcs.values()}, 6)
    router = naming.router_ns(cmd.name)
    # a host route to the VPC, unless it would overlap another VPC's on the same host
    overlaps = any(naming.overlap(v.cidr, cmd.cidr) for v in state.vpcs.values() if v.host == cmd.host)
    uplink = naming.linknet(
        _next_linknet(state),
        None,
        naming.uplink_host_if(key),
        router,
        naming.UPLINK_IF,
    )
    return [
        VpcCreated(
            name=cmd.name,
            cidr=cmd.cidr,
            key=key,
            router_ns=router,
            interface=cmd.interface,
            uplink=uplink,
            host_route=not overlaps,
            host=cmd.host,
            dns_upstream=cmd.dns_upstream,
        )
    ]


def _name_free(vpc: Vpc, name: str, kind: str) -> None:
    """Subnets and balancers share a VPC's names: each is `<name>.<vpc>.internal`."""
    other = "subnet" if name in vpc.subnets else "balancer" if name in vpc.balancers else None
    if other == kind:
        raise DomainError("name", f"{kind} {name!r} already exists in VPC {vpc.name}")
    if other is not None:
        raise DomainError("name", f"{name}.{vpc.name}.internal already names a {other} of VPC "
                                  f"{vpc.name}: subnets and balancers share the VPC's names")


def _add_subnet(cmd: AddSubnet, state: State) -> SubnetAdded:
    vpc = _vpc(state, cmd.vpc, "vpc")
    _name_free(vpc, cmd.name, "subnet")
    net = network(cmd.cidr)
    if not net.subnet_of(network(vpc.cidr)):
        raise DomainError("cidr", f"{cmd.cidr} is not inside VPC {cmd.vpc} ({vpc.cidr})")
    if net.prefixlen > 29:
        raise DomainError("cidr", f"{cmd.cidr} is smaller than a /29")
    for sib in vpc.subnets.values():
        if naming.overlap(sib.cidr, cmd.cidr):
            raise DomainError("cidr", f"{cmd.cidr} overlaps subnet {sib.name} ({sib.cidr})")
    for lb in vpc.balancers.values():
        if ipaddress.IPv4Address(lb.address) in net:
            raise DomainError("cidr", f"{cmd.cidr} holds {lb.address}, the address of balancer "
                                      f"{lb.name} (a balancer's address is outside every subnet)")
    netns = naming.subnet_ns(cmd.vpc, cmd.name)
    # "a-b" + "c" and "a" + "b-c" name the same namespace: only a VPC whose name ends at one
    # of the name's dashes can hold it (not a scan of every subnet of every VPC)
    for i in (i for i, ch in enumerate(netns) if ch == "-"):
        other = state.vpcs.get(netns[:i])
        s = other.subnets.get(netns[i + 1 :]) if other is not None else None
        if other is not None and s is not None:
            raise DomainError(
                "name", f"namespace {netns!r} is already used by subnet {other.name}/{s.name}"
            )
    key = naming.short_key(f"{cmd.vpc}/{cmd.name}", {s.key for s in vpc.subnets.values()}, 6)
    return SubnetAdded(
        vpc=cmd.vpc,
        name=cmd.name,
        cidr=cmd.cidr,
        public=cmd.type == "public",
        key=key,
        netns=netns,
        bridge=naming.bridge_if(key),
        veth=naming.subnet_veth_if(key),
        gateway=str(net.broadcast_address - 1),
        address=str(net.network_address + 1),
        prefixlen=net.prefixlen,
    )


def _cleanup_scope(cmd: Cleanup, state: State) -> list[str]:
    """The VPCs a cleanup deletes. One command is applied by the workers of one host, so
    with VPCs on several hosts it names the host."""
    hosts = sorted({v.host for v in state.vpcs.values()})
    if cmd.host is not None and cmd.host not in hosts:
        # a typo must not look like a cleanup that worked
        raise DomainError("host", f"no VPC is on host {cmd.host!r} (VPCs are on: "
                                  f"{', '.join(hosts) or 'no host, there is no VPC'})")
    if cmd.host is None and len(hosts) > 1:
        raise DomainError("host", f"VPCs are on {len(hosts)} hosts ({', '.join(hosts)}): "
                                  "clean up one at a time (vpcq cleanup --host HOST)")
    return sorted(n for n, v in state.vpcs.items() if cmd.host in (None, v.host))


def _peer(cmd: PeerVpcs, state: State) -> VpcsPeered:
    if cmd.a == cmd.b:
        raise DomainError("b", "a VPC cannot be peered with itself")
    a = _vpc(state, cmd.a, "a")
    b = _vpc(state, cmd.b, "b")
    if pair(a.name, b.name) in state.peerings:
        raise DomainError("b", f"{a.name} and {b.name} are already peered")
    if a.host != b.host:
        raise DomainError("b", f"{a.name} and {b.name} are on different hosts ({a.host}, {b.host}): "
                               "a peering is a veth pair between two routers of one host")
    if naming.overlap(a.cidr, b.cidr):
        raise DomainError("b", f"{a.name} ({a.cidr}) and {b.name} ({b.cidr}) overlap")
    link = naming.linknet(
        _next_linknet(state),
        a.router_ns,
        naming.peer_if(b.key),
        b.router_ns,
        naming.peer_if(a.key),
    )
    return VpcsPeered(a=a.name, b=b.name, a_cidr=a.cidr, b_cidr=b.cidr, link=link)


def _delete_vpcs(state: State, names: list[str]) -> list[DomainEvent]:
    out: list[DomainEvent] = []
    seen: set[str] = set()
    for name in names:
        for p in state.peers_of(name):
            k = pair(p.a, p.b)
            if k not in seen:
                seen.add(k)
                out.append(VpcsUnpeered(a=p.a, b=p.b))
        out.append(VpcDeleted(name=name))
    return out


def _rollback(cmd: Rollback, state: State, past: State | None) -> VpcRestored:
    if past is None or past.seq != cmd.to_seq:
        raise DomainError("to", "the state at the target sequence number was not provided")
    if cmd.to_seq > state.seq:
        raise DomainError("to", f"{cmd.to_seq} is beyond the end of the log ({state.seq})")
    if cmd.vpc not in state.vpcs and cmd.vpc not in past.vpcs:
        raise DomainError("vpc", f"no VPC named {cmd.vpc!r} now or at {cmd.to_seq}")
    return VpcRestored(
        vpc=cmd.vpc,
        to_seq=cmd.to_seq,
        reason=f"rollback to {cmd.to_seq}",
        genesis=tuple(genesis(past, cmd.vpc, live=state)),
        touches=restore_touches(state, cmd.vpc, past),
    )


# ---- public ports and balancers --------------------------------------------------------------


def _balancer(vpc: Vpc, name: str, field: str = "name") -> Balancer:
    try:
        return vpc.balancers[name]
    except KeyError:
        raise DomainError(field, f"no balancer named {name!r} in VPC {vpc.name}") from None


def _targets(vpc: Vpc, specs: Sequence[str]) -> tuple[LbTarget, ...]:
    """A balancer's targets: each a subnet of its VPC and a port, none twice."""
    out: list[LbTarget] = []
    for spec in specs:
        subnet, _, port = spec.rpartition(":")
        if subnet not in vpc.subnets:
            raise DomainError("targets", f"{spec}: no subnet named {subnet!r} in VPC {vpc.name} "
                                         "(a balancer's targets are subnets of its VPC)")
        target = LbTarget(subnet=subnet, port=int(port))
        if target in out:
            raise DomainError("targets", f"{spec} is given twice")
        out.append(target)
    return tuple(out)


def _check_host_port(state: State, vpc: Vpc, host_port: int, protocol: str) -> None:
    """A host port is exposed once on a host, whichever VPC exposes it."""
    key = port_key(host_port, protocol)
    for other in state.vpcs.values():
        e = other.exposures.get(key)
        if other.host == vpc.host and e is not None:
            raise DomainError("host_port", f"host port {key} is already exposed: it reaches "
                                           f"{other.name}/{e.target}:{e.port}")


def _expose(cmd: Expose, state: State) -> PortExposed:
    vpc = _vpc(state, cmd.vpc, "vpc")
    host_port = cmd.host_port or cmd.port
    lb = vpc.balancers.get(cmd.target)
    if lb is not None:
        if cmd.protocol != "tcp":
            raise DomainError("protocol", f"balancer {lb.name} balances tcp, not {cmd.protocol}")
        if cmd.port != lb.port:
            raise DomainError("port", f"balancer {lb.name} listens on port {lb.port}, not {cmd.port}")
    else:
        sub = _subnet(state, cmd.vpc, cmd.target, "target")
        if not sub.public:
            raise DomainError("target", f"subnet {sub.name} is private: only public subnets and "
                                        "balancers are exposed (a private subnet is reached through "
                                        f"a balancer: create-lb {vpc.name} NAME --port P --target "
                                        f"{sub.name}:{cmd.port} --public {host_port})")
    _check_host_port(state, vpc, host_port, cmd.protocol)
    return PortExposed(vpc=vpc.name, host_port=host_port, protocol=cmd.protocol, target=cmd.target,
                       balancer=lb is not None, port=cmd.port)


def _unexpose(cmd: Unexpose, state: State) -> PortUnexposed:
    vpc = _vpc(state, cmd.vpc, "vpc")
    if port_key(cmd.host_port, cmd.protocol) not in vpc.exposures:
        raise DomainError("host_port", f"host port {port_key(cmd.host_port, cmd.protocol)} is not "
                                       f"exposed by VPC {vpc.name}")
    return PortUnexposed(vpc=vpc.name, host_port=cmd.host_port, protocol=cmd.protocol)


def _unexpose_all(vpc: Vpc, which: Callable[[Exposure], bool]) -> list[DomainEvent]:
    return [PortUnexposed(vpc=vpc.name, host_port=e.host_port, protocol=e.protocol)
            for _, e in sorted(vpc.exposures.items()) if which(e)]


def _delete_subnet_services(vpc: Vpc, subnet: str) -> list[DomainEvent]:
    """What goes with a subnet: its public ports. A subnet a balancer sends to stays until
    the balancer no longer does (its connections would go nowhere)."""
    for lb in sorted(vpc.balancers.values(), key=lambda b: b.name):
        if any(t.subnet == subnet for t in lb.targets):
            raise DomainError("name", f"subnet {subnet} is a target of balancer {lb.name}: "
                                      f"set-lb-targets {vpc.name} {lb.name} without it, or delete-lb, "
                                      "first")
    return _unexpose_all(vpc, lambda e: not e.balancer and e.target == subnet)


def _create_lb(cmd: CreateLb, state: State) -> list[DomainEvent]:
    vpc = _vpc(state, cmd.vpc, "vpc")
    _name_free(vpc, cmd.name, "balancer")
    targets = _targets(vpc, cmd.targets)
    key = naming.short_key(f"{vpc.name}/lb/{cmd.name}", {b.key for b in vpc.balancers.values()}, 6)
    created = LoadBalancerCreated(vpc=vpc.name, name=cmd.name, key=key,
                                  address=_balancer_address(vpc, cmd.address), port=cmd.port,
                                  targets=targets)
    if cmd.public is None:
        return [created]
    _check_host_port(state, vpc, cmd.public, "tcp")
    return [created, PortExposed(vpc=vpc.name, host_port=cmd.public, protocol="tcp",
                                 target=cmd.name, balancer=True, port=cmd.port)]


def _balancer_address(vpc: Vpc, requested: str | None) -> str:
    """The balancer's address: in the VPC, outside every subnet (so that a client sends to it
    through the router, which balances), and no other balancer's. By default the highest
    such address of the VPC's range."""
    net = network(vpc.cidr)
    spans = sorted(naming.span(s.cidr) for s in vpc.subnets.values())
    taken = {b.address: b.name for b in vpc.balancers.values()}
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    if requested is not None:
        a = int(ipaddress.IPv4Address(requested))
        if not first <= a <= last:
            raise DomainError("address", f"{requested} is not a host address of VPC {vpc.name} "
                                         f"({vpc.cidr})")
        for s in vpc.subnets.values():
            lo, hi = naming.span(s.cidr)
            if lo <= a <= hi:
                raise DomainError("address", f"{requested} is in subnet {s.name} ({s.cidr}); a "
                                             "balancer's address is outside every subnet")
        if requested in taken:
            raise DomainError("address", f"{requested} is the address of balancer {taken[requested]}")
        return requested
    a = last
    while a >= first:
        inside = next((lo for lo, hi in spans if lo <= a <= hi), None)
        if inside is not None:
            a = inside - 1
        elif str(ipaddress.IPv4Address(a)) in taken:
            a -= 1
        else:
            return str(ipaddress.IPv4Address(a))
    raise DomainError("address", f"every address of VPC {vpc.name} ({vpc.cidr}) is in a subnet or "
                                 "a balancer: a balancer needs one outside them")
