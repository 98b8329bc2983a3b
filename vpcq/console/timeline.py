"""The audit log as a timeline: one entry per command (who, when, what, its outcome) and one
per drift repair, built from envelopes as they are read. Pure: no I/O.

An entry remembers where its events are in the log (`runs`), so a command's whole story
(its CommandAccepted and domain events, a redecision, its outcome, the restore after a
failure) is read back from the log on demand rather than kept in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vpcq.events.schema import (
    ChangeApplied,
    ChangeFailed,
    CommandAccepted,
    DriftRepaired,
    Envelope,
)

Outcome = Literal["pending", "applied", "failed"]


@dataclass(slots=True)
class Entry:
    id: str  # the command id, or "repair@<seq>" for a drift repair
    command_id: str
    seq: int  # its first event
    kind: str  # the command's kind, or "drift-repair"
    args: Mapping[str, Any]
    vpcs: tuple[str, ...]
    actor: str
    time: str
    outcome: Outcome = "pending"
    reason: str | None = None
    outcome_seq: int | None = None
    outcome_time: str | None = None
    caused_by: str | None = None  # a cancelled command: the failed one it depended on
    host: str | None = None  # the host whose workers apply it (None: it touches no VPC)
    runs: list[list[int]] = field(default_factory=list)  # [first, last] seq of its events

    @property
    def last_seq(self) -> int:
        return self.runs[-1][1] if self.runs else self.seq

    def what(self) -> str:
        if self.kind == "drift-repair":
            steps = self.args.get("steps", 0)
            return f"drift repaired: {steps} step{'s' if steps != 1 else ''}"
        return command_line(self.kind, self.args)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "command_id": self.command_id, "seq": self.seq,
            "last_seq": self.last_seq, "kind": self.kind, "what": self.what(),
            "vpcs": list(self.vpcs), "actor": self.actor, "time": self.time,
            "outcome": self.outcome, "reason": self.reason, "outcome_seq": self.outcome_seq,
            "outcome_time": self.outcome_time, "caused_by": self.caused_by, "host": self.host,
        }  # fmt: skip


# How the CLI spells the arguments that are flags (the others are positional, in order).
_FLAGS = {"type": "--type", "port": "--port", "host": "--host", "interface": "--interface",
          "to_seq": "--to"}
_HIDDEN = {"file_subnet"}


def command_line(kind: str, args: Mapping[str, Any]) -> str:
    """A command as one would type it: `add-subnet a web 10.0.1.0/24 --type public`."""
    words = [kind]
    for k, v in args.items():
        if v is None or k in _HIDDEN or (k == "host" and v == "default"):
            continue
        if k == "firewall":
            words.append("RULES")
        elif k in _FLAGS:
            words += [_FLAGS[k], str(v)]
        else:
            words.append(str(v))
    return " ".join(words)


class Timeline:
    """Entries in log order, found by id."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.by_id: dict[str, Entry] = {}
        self._vpcs: dict[str, None] = {}  # every VPC named, in the order it first appears

    def envelope(self, env: Envelope) -> Entry | None:
        """Take one more envelope; the entry it made or changed, if any."""
        ev = env.event
        if isinstance(ev, CommandAccepted):
            e = Entry(env.command_id, env.command_id, env.seq, ev.kind, dict(ev.args), ev.vpcs,
                      env.actor, env.time, runs=[[env.seq, env.seq]], host=ev.host)
            self._add(e)
            return e
        if isinstance(ev, DriftRepaired):
            e = Entry(f"repair@{env.seq}", env.command_id, env.seq, "drift-repair",
                      {"steps": len(ev.steps)}, ev.vpcs, env.actor, env.time, "applied",
                      outcome_seq=env.seq, outcome_time=env.time, runs=[[env.seq, env.seq]])
            self._add(e)
            return e
        known = self.by_id.get(env.command_id)
        if known is None:
            return None
        if known.runs and known.runs[-1][1] == env.seq - 1:
            known.runs[-1][1] = env.seq
        else:
            known.runs.append([env.seq, env.seq])
        if isinstance(ev, ChangeApplied | ChangeFailed) and known.outcome_seq is None:
            known.outcome = "applied" if isinstance(ev, ChangeApplied) else "failed"
            known.outcome_seq, known.outcome_time = env.seq, env.time
            if isinstance(ev, ChangeFailed):
                known.reason, known.caused_by = ev.reason, ev.caused_by
        return known

    def _add(self, e: Entry) -> None:
        self.entries.append(e)
        self.by_id[e.id] = e
        self._vpcs.update(dict.fromkeys(e.vpcs))

    def page(self, before: int | None = None, limit: int = 100, vpc: str | None = None) -> list[Entry]:
        """Up to `limit` entries that start before seq `before` (None: the newest), newest
        first, only those touching `vpc` if given."""
        out: list[Entry] = []
        for e in self._newest_first(before):
            if vpc is None or vpc in e.vpcs:
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    def _newest_first(self, before: int | None) -> Iterator[Entry]:
        i = len(self.entries)
        if before is not None:  # entries are in seq order: find where `before` falls
            lo, hi = 0, len(self.entries)
            while lo < hi:
                mid = (lo + hi) // 2
                if self.entries[mid].seq < before:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo
        for k in range(i - 1, -1, -1):
            yield self.entries[k]

    def vpcs(self) -> list[str]:
        """Every VPC the log names, in the order it first appears."""
        return list(self._vpcs)


def describe(ev: Any) -> str:
    """One line saying what an event of the log means (a command's story, event by event)."""
    t = ev.type
    if t == "CommandAccepted":
        on = f", applied on host {ev.host}" if ev.host else ""
        return f"accepted {ev.kind} on {', '.join(ev.vpcs) or 'no VPC'} ({ev.events} event(s) follow{on})"
    if t == "ChangeApplied":
        return f"applied: the kernel holds it ({ev.steps} step{'s' if ev.steps != 1 else ''})"
    if t == "ChangeFailed":
        undo = f"; undo errors: {'; '.join(ev.undo_errors)}" if ev.undo_errors else ""
        return f"failed: {ev.reason}{undo}"
    if t == "CommandRedecided":
        return f"decided again after a restore ({ev.events} event(s) follow)"
    if t == "DriftRepaired":
        return f"drift repaired on {', '.join(ev.vpcs)}: " + "; ".join(ev.steps[:5]) + (
            f"; and {len(ev.steps) - 5} more" if len(ev.steps) > 5 else "")
    if t == "VpcRestored":
        return f"{ev.vpc} restored to how it was at seq {ev.to_seq} ({ev.reason})"
    if t == "VpcCreated":
        return f"VPC {ev.name} {ev.cidr} on host {ev.host}: router {ev.router_ns}, uplink {ev.uplink.net}"
    if t == "SubnetAdded":
        return (f"subnet {ev.vpc}/{ev.name} {ev.cidr} {'public' if ev.public else 'private'}: "
                f"namespace {ev.netns}, host {ev.address}, gateway {ev.gateway}")
    if t == "FirewallApplied":
        fw = ev.firewall
        return (f"firewall on {ev.vpc}/{ev.subnet}: {len(fw.ingress)} ingress, {len(fw.egress)} egress "
                f"rule(s), default {fw.default}")
    if t == "VpcsPeered":
        return f"peered {ev.a} ({ev.a_cidr}) and {ev.b} ({ev.b_cidr}) over {ev.link.net}"
    keep = {k: v for k, v in ev.model_dump(exclude={"type"}).items() if isinstance(v, str | int | bool)}
    return f"{t}: " + " ".join(f"{k}={v}" for k, v in keep.items())
