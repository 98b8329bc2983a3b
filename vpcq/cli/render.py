"""Human and JSON renderings of the state and the log."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vpcq.config import DEFAULT_HOST
from vpcq.events.observed import Deleting, Health
from vpcq.events.schema import Envelope, Rejected
from vpcq.orchestrator import dns
from vpcq.orchestrator.naming import overlap
from vpcq.orchestrator.state import Balancer, CommandRecord, State, Vpc, is_deletion

# VPC -> balancer -> "subnet:port" -> its last health check
HealthMap = Mapping[str, Mapping[str, Mapping[str, Health]]]


def progress_json(p: Deleting | None) -> dict[str, Any]:
    """A deletion's progress (nothing yet: no attempt has failed)."""
    if p is None:
        return {"left": None, "sample": [], "error": None, "tries": 0}
    return {"left": p.left, "sample": list(p.sample), "error": p.error, "tries": p.tries, "at": p.at}


def deletions(state: State) -> list[CommandRecord]:
    """The pending commands that remove things, in log order."""
    return [state.commands[c] for c in state.pending if is_deletion(state.commands[c].kind)]


def _upstream(v: Vpc) -> str:
    """What a VPC's public subnets' resolver does with other names, as the log says."""
    return "host" if v.dns_upstream is None else v.dns_upstream


def _targets_json(v: Vpc, b: Balancer, health: HealthMap) -> list[dict[str, Any]]:
    out = []
    for t in b.targets:
        h = health.get(v.name, {}).get(b.name, {}).get(f"{t.subnet}:{t.port}")
        sub = v.subnets.get(t.subnet)
        out.append({"subnet": t.subnet, "port": t.port, "address": sub.address if sub else None,
                    "health": "unknown" if h is None else "up" if h.up else "down",
                    "since": h.since if h else None, "checked": h.checked if h else None,
                    "error": h.error if h else None})
    return out


def _services_json(v: Vpc, health: HealthMap) -> dict[str, Any]:
    return {
        "dns": {"zone": dns.zone(v.name), "upstream": _upstream(v)},
        "balancers": [
            {"name": b.name, "address": b.address, "port": b.port, "key": b.key,
             "dns_name": f"{b.name}.{dns.zone(v.name)}", "targets": _targets_json(v, b, health)}
            for b in sorted(v.balancers.values(), key=lambda b: b.name)
        ],
        "ports": [
            {"host_port": e.host_port, "protocol": e.protocol, "target": e.target,
             "kind": "balancer" if e.balancer else "subnet", "port": e.port}
            for e in sorted(v.exposures.values(), key=lambda e: (e.host_port, e.protocol))
        ],
    }


def state_json(state: State, progress: Mapping[str, Deleting] | None = None,
               health: HealthMap | None = None) -> dict[str, Any]:
    """Every name, address, gateway and interface name, for machines; the balancers with
    their targets' health, the public ports; and the deletions under way with what they
    have left."""
    vpcs = []
    for v in sorted(state.vpcs.values(), key=lambda v: v.name):
        vpcs.append(
            {
                "name": v.name,
                "cidr": v.cidr,
                "host": v.host,
                "router_namespace": v.router_ns,
                "interface": v.interface,
                "host_route": v.host_route,
                "uplink": v.uplink.model_dump(),
                "pending": [c.id for c in state.pending_for(v.name)],
                "subnets": [
                    {
                        "name": s.name,
                        "cidr": s.cidr,
                        "type": "public" if s.public else "private",
                        "namespace": s.netns,
                        "address": s.address,
                        "gateway": s.gateway,
                        "bridge": s.bridge,
                        "router_veth": s.veth,
                        "interface": "eth0",
                        "app_port": s.app_port,
                        "firewall": s.firewall.model_dump() if s.firewall else None,
                        "dns_name": f"{s.name}.{dns.zone(v.name)}",
                        "resolver": s.gateway,
                    }
                    for s in sorted(v.subnets.values(), key=lambda s: s.name)
                ],
                **_services_json(v, health or {}),
                "peers": [
                    {
                        "vpc": p.b if p.a == v.name else p.a,
                        "interface": p.link.a_if if p.a == v.name else p.link.b_if,
                        "address": p.link.a_addr if p.a == v.name else p.link.b_addr,
                        "peer_address": p.link.b_addr if p.a == v.name else p.link.a_addr,
                    }
                    for p in state.peers_of(v.name)
                ],
            }
        )
    deleting = [
        {"command_id": c.id, "kind": c.kind, "args": dict(c.args), "vpcs": list(c.vpcs),
         **progress_json((progress or {}).get(c.id))}
        for c in deletions(state)
    ]
    return {"seq": state.seq, "vpcs": vpcs, "deleting": deleting}


def state_text(state: State, progress: Mapping[str, Deleting] | None = None,
               health: HealthMap | None = None) -> str:
    """A readable tree, like the tutorial's `list`, then the deletions under way."""
    lines: list[str] = []
    for v in sorted(state.vpcs.values(), key=lambda v: v.name):
        lines += _vpc_lines(state, v, health or {})
    for c in deletions(state):
        what = " ".join(str(v) for v in c.args.values() if v is not None)
        p = (progress or {}).get(c.id)
        lines.append(f"deleting: {c.kind} {what} ({c.id})"
                     + (f": {p.describe().removeprefix('deleting: ')}" if p is not None else ""))
    if not state.vpcs:
        lines.insert(0, f"no VPCs (log at seq {state.seq})")
    return "\n".join(lines)


def _vpc_lines(state: State, v: Vpc, health: HealthMap) -> list[str]:
    up = v.uplink
    head = (
        f"VPC {v.name}  {v.cidr}  router {v.router_ns}  uplink {up.a_if} {up.a_addr} <-> "
        f"{up.b_addr}  internet {v.interface or 'auto'}"
        + (f"  host {v.host}" if v.host != DEFAULT_HOST else "")
    )
    out = [head]
    if not v.host_route:
        others = [
            o.name
            for o in state.vpcs.values()
            if o.name != v.name
            and overlap(o.cidr, v.cidr)
        ]
        out.append(
            f"  ! not reachable from the host: {v.cidr} overlaps "
            f"{', '.join(others) or 'a VPC that existed at its creation'}"
        )
    subs = sorted(v.subnets.values(), key=lambda s: s.name)
    for i, s in enumerate(subs):
        branch = "└─" if i == len(subs) - 1 else "├─"
        extra = f"  app :{s.app_port}" if s.app_port else ""
        if s.firewall:
            n = len(s.firewall.ingress) + len(s.firewall.egress)
            extra += f"  firewall {n} rules, default {s.firewall.default}"
        out.append(
            f"  {branch} {s.name}  {'public ' if s.public else 'private'}  {s.cidr}  "
            f"ns {s.netns}  host {s.address}  gw {s.gateway}  bridge {s.bridge}{extra}"
        )
    for p in state.peers_of(v.name):
        other = p.b if p.a == v.name else p.a
        ifname = p.link.a_if if p.a == v.name else p.link.b_if
        out.append(f"  ⇄ peered with {other} via {ifname}")
    out += _service_lines(v, health)
    pending = state.pending_for(v.name)
    if pending:
        out.append(f"  … {len(pending)} change(s) not yet applied")
    return out


def _service_lines(v: Vpc, health: HealthMap) -> list[str]:
    out = []
    if v.subnets:
        up = _upstream(v)
        where = "the workers' upstream ($VPCQ_DNS_UPSTREAM, else the host's resolver)" \
            if up == "host" else up
        out.append(f"  dns {dns.zone(v.name)} at each subnet's gateway; public subnets forward other "
                   f"names to {where}, private ones nowhere")
    for b in sorted(v.balancers.values(), key=lambda b: b.name):
        targets = []
        for t in _targets_json(v, b, health):
            state = t["health"] + (f" ({t['error']})" if t["error"] else "")
            targets.append(f"{t['subnet']}:{t['port']} {state}")
        out.append(f"  ⚖ balancer {b.name}  {b.address}:{b.port}  {b.name}.{dns.zone(v.name)}  -> "
                   + ", ".join(targets))
    for e in sorted(v.exposures.values(), key=lambda e: (e.host_port, e.protocol)):
        kind = "balancer" if e.balancer else "subnet"
        out.append(f"  ↗ host port {e.host_port}/{e.protocol} -> {kind} {e.target}:{e.port}")
    return out


def summary(env: Envelope) -> str:
    """One line saying what an event means."""
    ev = env.event
    d = ev.model_dump(exclude={"type"})
    match ev.type:
        case "CommandAccepted":
            args = " ".join(f"{k}={v}" for k, v in d["args"].items() if v is not None)
            return f"{d['kind']} {args}".strip()
        case "ChangeApplied":
            return f"applied {d['command_id']} ({d['steps']} steps)"
        case "ChangeFailed":
            return f"failed {d['command_id']}: {d['reason']}"
        case "DriftRepaired":
            return f"repaired {len(d['steps'])} difference(s): {'; '.join(d['steps'][:3])}"
        case "VpcRestored":
            return f"{d['vpc']} restored to seq {d['to_seq']} ({d['reason']})"
        case "LoadBalancerCreated" | "LoadBalancerTargetsSet":
            targets = ",".join(f"{t['subnet']}:{t['port']}" for t in d["targets"])
            keep = {k: v for k, v in d.items() if isinstance(v, str | int) and k != "key"}
            return " ".join(f"{k}={v}" for k, v in keep.items()) + f" targets={targets}"
    keep = {k: v for k, v in d.items() if isinstance(v, str | int | bool) and v is not None}
    return " ".join(f"{k}={v}" for k, v in keep.items())


def log_line(env: Envelope) -> str:
    vpcs = ",".join(env.vpcs) or "-"
    return (
        f"{env.seq:>6}  {env.time}  {env.actor:<20}  {env.type:<16}  {vpcs:<16}  "
        f"{env.command_id}  {summary(env)}"
    )


def log_json(env: Envelope) -> str:
    return json.dumps(
        {**env.model_dump(mode="json"), "type": env.type, "vpcs": list(env.vpcs)},
        separators=(",", ":"),
    )


def rejected_line(r: Rejected) -> str:
    """A quarantined entry where it stands in `vpcq log`: never applied, and why."""
    return f"{r.seq:>6}  {'REJECTED':<29}  {'-':<20}  entry {r.entry_id}: {r.reason}"


def rejected_json(r: Rejected) -> str:
    return json.dumps({"seq": r.seq, "last_seq": r.last, "type": "Rejected",
                       "entry": r.entry_id, "reason": r.reason}, separators=(",", ":"))
