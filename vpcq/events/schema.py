"""Event schemas: frozen, past-tense, versioned, and the envelope that carries them in the log.

Addresses and networks are stored as canonical strings: `decide` has validated them already,
and a trusted replay should not pay for re-parsing them (see LIBRARIES.md, pydantic costs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# Validators are built when first used, not when the module is imported: a CLI command
# validates a few of these types, or none, and building all of them costs it more than its
# requests to Redis do.
DEFERRED = ConfigDict(defer_build=True)


class Frozen(BaseModel):
    """Base of every stored model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class LinkNet(Frozen):
    """A point-to-point veth pair on a /30 from 100.64.0.0/10; side `a` is the host or peer `a`."""

    net: str
    a_ns: str | None  # None = the host namespace
    a_if: str
    a_addr: str
    b_ns: str
    b_if: str
    b_addr: str
    prefixlen: int = 30


class Rule(Frozen):
    """One security-group rule, in the order the user wrote it."""

    protocol: Literal["tcp", "udp", "icmp", "all"]
    action: Literal["allow", "deny"]
    port: str | None = None  # "80" or "8000-8010"; tcp/udp only
    cidr: str | None = None  # source (ingress) or destination (egress)


class Firewall(Frozen):
    """A subnet's security group: ordered rules, first match wins, then the default."""

    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    default: Literal["allow", "deny"] = "allow"


# ---- command bookkeeping -------------------------------------------------------------------


class CommandAccepted(Frozen):
    """A command passed validation; its domain events follow in the same append."""

    type: Literal["CommandAccepted"] = "CommandAccepted"
    kind: str
    args: dict[str, str | int | bool | None]
    vpcs: tuple[str, ...]
    events: int  # how many domain events of this command follow it in the same append
    # the host whose workers apply it, decided with it (None: it touches no VPC, or it was
    # written before commands named their host; the fold then works it out as decide did)
    host: str | None = None

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class ChangeApplied(Frozen):
    """A worker brought the kernel to the state the log had after the command."""

    type: Literal["ChangeApplied"] = "ChangeApplied"
    command_id: str
    vpcs: tuple[str, ...]
    steps: int = 0

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class ChangeFailed(Frozen):
    """Applying the command failed; the kernel was brought back and the change removed."""

    type: Literal["ChangeFailed"] = "ChangeFailed"
    command_id: str
    vpcs: tuple[str, ...]
    reason: str
    undo_errors: tuple[str, ...] = ()
    caused_by: str | None = None  # set when cancelled because an earlier change failed

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class CommandRedecided(Frozen):
    """A pending deletion decided again: an earlier change on its VPCs failed and they were
    restored to how they were before it, so what the deletion had decided no longer fits.
    Its new domain events follow in the same commit (a deletion is never cancelled)."""

    type: Literal["CommandRedecided"] = "CommandRedecided"
    kind: str
    vpcs: tuple[str, ...]
    events: int  # how many domain events follow it in the same commit

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class DriftRepaired(Frozen):
    """A worker found the kernel different from the log (a reboot, a hand edit) and fixed it."""

    type: Literal["DriftRepaired"] = "DriftRepaired"
    vpcs: tuple[str, ...]
    steps: tuple[str, ...]  # what was done, one line each (at most 100)

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


# ---- the domain ----------------------------------------------------------------------------


class VpcCreated(Frozen):
    type: Literal["VpcCreated"] = "VpcCreated"
    name: str
    cidr: str
    key: str  # short stable id used in kernel names
    router_ns: str
    interface: str | None  # internet interface; None = $VPCQ_UPLINK or the default route's
    uplink: LinkNet
    host_route: bool  # False when the CIDR overlaps an existing VPC of its host
    host: str = "default"  # the host whose workers build it (their $VPCQ_HOST)
    # where its public subnets' resolver sends names it does not know: an address, "none",
    # or None for the host's setting ($VPCQ_DNS_UPSTREAM, else the host's resolver)
    dns_upstream: str | None = None

    def aggregates(self) -> tuple[str, ...]:
        return (self.name,)


class SubnetAdded(Frozen):
    type: Literal["SubnetAdded"] = "SubnetAdded"
    vpc: str
    name: str
    cidr: str
    public: bool
    key: str
    netns: str  # "<vpc>-<subnet>", the tutorial's name
    bridge: str  # in the router namespace, holds the gateway
    veth: str  # router-side end; the subnet-side end is eth0
    gateway: str  # last host address
    address: str  # first host address
    prefixlen: int

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class SubnetDeleted(Frozen):
    type: Literal["SubnetDeleted"] = "SubnetDeleted"
    vpc: str
    name: str

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class AppDeployed(Frozen):
    type: Literal["AppDeployed"] = "AppDeployed"
    vpc: str
    subnet: str
    port: int

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class AppStopped(Frozen):
    type: Literal["AppStopped"] = "AppStopped"
    vpc: str
    subnet: str
    port: int

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class FirewallApplied(Frozen):
    type: Literal["FirewallApplied"] = "FirewallApplied"
    vpc: str
    subnet: str
    firewall: Firewall

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class VpcsPeered(Frozen):
    type: Literal["VpcsPeered"] = "VpcsPeered"
    a: str
    b: str
    a_cidr: str
    b_cidr: str
    link: LinkNet  # a side in a's router, b side in b's router

    def aggregates(self) -> tuple[str, ...]:
        return (self.a, self.b)


class VpcsUnpeered(Frozen):
    type: Literal["VpcsUnpeered"] = "VpcsUnpeered"
    a: str
    b: str

    def aggregates(self) -> tuple[str, ...]:
        return (self.a, self.b)


class VpcDeleted(Frozen):
    type: Literal["VpcDeleted"] = "VpcDeleted"
    name: str

    def aggregates(self) -> tuple[str, ...]:
        return (self.name,)


class LbTarget(Frozen):
    """A balancer's target: a subnet of its VPC, and the port connections go to there."""

    subnet: str
    port: int = Field(ge=1, le=65535)


class LoadBalancerCreated(Frozen):
    """A balancer: an address in its VPC (outside every subnet) whose port `port` spreads
    new connections over the healthy targets."""

    type: Literal["LoadBalancerCreated"] = "LoadBalancerCreated"
    vpc: str
    name: str
    key: str  # short stable id used in its chain's name
    address: str
    port: int = Field(ge=1, le=65535)
    targets: tuple[LbTarget, ...]

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class LoadBalancerTargetsSet(Frozen):
    type: Literal["LoadBalancerTargetsSet"] = "LoadBalancerTargetsSet"
    vpc: str
    name: str
    targets: tuple[LbTarget, ...]

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class LoadBalancerDeleted(Frozen):
    type: Literal["LoadBalancerDeleted"] = "LoadBalancerDeleted"
    vpc: str
    name: str

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class PortExposed(Frozen):
    """Connections to the host on `host_port` reach `port` of a public subnet or of a
    balancer of the VPC."""

    type: Literal["PortExposed"] = "PortExposed"
    vpc: str
    host_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"]
    target: str  # a subnet or a balancer of the VPC
    balancer: bool  # whether `target` names a balancer
    port: int = Field(ge=1, le=65535)

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class PortUnexposed(Frozen):
    type: Literal["PortUnexposed"] = "PortUnexposed"
    vpc: str
    host_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"]

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


GenesisEvent: TypeAlias = Annotated[
    VpcCreated | SubnetAdded | AppDeployed | FirewallApplied | VpcsPeered | LoadBalancerCreated
    | PortExposed,
    Field(discriminator="type"),
]


class VpcRestored(Frozen):
    """A VPC's state replaced by the one rebuilt from `genesis` (empty: the VPC is gone).

    Appended by rollback and by a failed change: the log is never rewritten.
    """

    type: Literal["VpcRestored"] = "VpcRestored"
    vpc: str
    to_seq: int
    reason: str
    genesis: tuple[GenesisEvent, ...]
    touches: tuple[str, ...] = ()  # peers whose routers change with it

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc, *(t for t in self.touches if t != self.vpc))


Event: TypeAlias = Annotated[
    CommandAccepted
    | ChangeApplied
    | ChangeFailed
    | CommandRedecided
    | DriftRepaired
    | VpcCreated
    | SubnetAdded
    | SubnetDeleted
    | AppDeployed
    | AppStopped
    | FirewallApplied
    | VpcsPeered
    | VpcsUnpeered
    | VpcDeleted
    | VpcRestored
    | LoadBalancerCreated
    | LoadBalancerTargetsSet
    | LoadBalancerDeleted
    | PortExposed
    | PortUnexposed,
    Field(discriminator="type"),
]

EVENT: TypeAdapter[Event] = TypeAdapter(Event, config=DEFERRED)

# The schema version of each event type as written today. Older stored versions are
# upcast on read (see vpcq.events.upcast); a stored event is never edited.
SCHEMA_VERSIONS: dict[str, int] = {
    "CommandAccepted": 1,
    "ChangeApplied": 1,
    "ChangeFailed": 1,
    "CommandRedecided": 1,
    "DriftRepaired": 1,
    "VpcCreated": 1,
    "SubnetAdded": 1,
    "SubnetDeleted": 1,
    "AppDeployed": 1,
    "AppStopped": 1,
    "FirewallApplied": 1,
    "VpcsPeered": 1,
    "VpcsUnpeered": 1,
    "VpcDeleted": 1,
    "VpcRestored": 1,
    "LoadBalancerCreated": 1,
    "LoadBalancerTargetsSet": 1,
    "LoadBalancerDeleted": 1,
    "PortExposed": 1,
    "PortUnexposed": 1,
}


class Envelope(Frozen):
    """One entry of the log: a typed event and the facts of who, when, why."""

    seq: int = 0  # position in the log; assigned by the store on append
    schema_version: int = 1
    command_id: str
    correlation_id: str
    actor: str  # "user@host"
    time: str  # ISO 8601, UTC
    event: Event

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def vpcs(self) -> tuple[str, ...]:
        return self.event.aggregates()


ENVELOPE: TypeAdapter[Envelope] = TypeAdapter(Envelope)


OUTCOMES = ("ChangeApplied", "ChangeFailed")


class Commit(Frozen):
    """One entry of the log's stream: the events one append wrote for one command.

    Who, when and why are stored once per commit, not once per event, and the events are
    numbered from `seq` (the stream entry's id). A command's CommandAccepted and its domain
    events are one commit; an outcome (ChangeApplied, ChangeFailed) is always a commit of its
    own, so the store can write it at most once per command.
    """

    # Stored under one-letter keys: a replay parses every commit's header, and JSON parsing
    # costs by the byte (the full names would be repeated in every commit).
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    seq: int = Field(0, alias="s")  # the first event's sequence number
    command_id: str = Field(alias="c")
    correlation_id: str = Field(alias="r")
    actor: str = Field(alias="a")
    time: str = Field(alias="t")
    versions: tuple[int, ...] = Field(alias="v")  # each event's schema version, as stored
    events: tuple[Event, ...] = Field(alias="e")

    @property
    def last(self) -> int:
        """The last event's sequence number."""
        return self.seq + len(self.events) - 1

    def envelopes(self) -> list[Envelope]:
        """The commit's events, one envelope each (trusted: no validation again)."""
        return [
            Envelope.model_construct(
                seq=self.seq + i, schema_version=v, command_id=self.command_id,
                correlation_id=self.correlation_id, actor=self.actor, time=self.time, event=ev,
            )
            for i, (v, ev) in enumerate(zip(self.versions, self.events, strict=True))
        ]  # fmt: skip

    def clip(self, after: int, upto: int | None) -> Commit | None:
        """The part of the commit with `after` < seq <= `upto` (None: nothing)."""
        lo = max(after + 1 - self.seq, 0)
        hi = len(self.events) if upto is None else min(upto + 1 - self.seq, len(self.events))
        if lo == 0 and hi == len(self.events):
            return self
        if lo >= hi:
            return None
        return self.model_copy(
            update={"seq": self.seq + lo, "versions": self.versions[lo:hi], "events": self.events[lo:hi]}
        )


def commits_of(envelopes: Iterable[Envelope]) -> list[Commit]:
    """Group consecutive envelopes into commits (same command, actor, time and correlation);
    an outcome event always stands alone. Sequence numbers are the store's to assign."""
    out: list[Commit] = []
    run: list[Envelope] = []

    def close() -> None:
        if run:
            h = run[0]
            out.append(Commit.model_construct(
                seq=h.seq, command_id=h.command_id, correlation_id=h.correlation_id, actor=h.actor,
                time=h.time, versions=tuple(e.schema_version for e in run),
                events=tuple(e.event for e in run),
            ))  # fmt: skip
            run.clear()

    for env in envelopes:
        if run:
            h = run[-1]
            if (
                env.event.type in OUTCOMES
                or h.event.type in OUTCOMES
                or (env.command_id, env.correlation_id, env.actor, env.time)
                != (h.command_id, h.correlation_id, h.actor, h.time)
            ):
                close()
        run.append(env)
    close()
    return out


COMMIT: TypeAdapter[Commit] = TypeAdapter(Commit)
