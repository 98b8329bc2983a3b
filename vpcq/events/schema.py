"""Event schemas: frozen, past-tense, versioned, and the envelope that carries them in the log.

Every field has a constrained type (vpcq.events.types): the log is read by root, and anyone
who can write to Redis can write to it, so an event that names a kernel object outside
vpcq's naming, or holds a newline, a reserved range or a port out of range, can be neither
built nor read. Addresses and networks are stored in their canonical form and checked by
pattern on read, not parsed again (see LIBRARIES.md, pydantic costs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal, NamedTuple, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from vpcq.events.types import (
    Action,
    Actor,
    Address,
    ArgKey,
    ArgText,
    Cidr,
    CommandId,
    Count,
    IfName,
    Key,
    LinkAddress,
    LinkEndA,
    LinkEndB,
    LinkNetwork,
    Name,
    Port,
    Ports,
    Protocol,
    RouterNs,
    Seq,
    SubnetNetwork,
    SubnetPrefix,
    Text,
    Time,
    Version,
    VpcNetwork,
)

# What a CommandAccepted may name: the kinds of commands there are.
CommandKind = Literal[
    "create-vpc", "add-subnet", "delete-subnet", "deploy-app", "stop-app", "apply-firewall",
    "peer-vpcs", "unpeer-vpcs", "delete-vpc", "cleanup", "rollback",
    "expose", "unexpose", "create-lb", "set-lb-targets", "delete-lb",
]  # fmt: skip
DeletionKind = Literal["delete-subnet", "delete-vpc", "unpeer-vpcs", "stop-app", "cleanup",
                       "unexpose", "delete-lb"]
# what groups the commands of one submit; "" for a worker's own record (a repair), as logs
# have always held it
Correlation = Literal[""] | CommandId
MAX_RULES = 256  # per direction of a security group (AWS allows 60 by default, Neutron 100)

# Validators are built when first used, not when the module is imported: a CLI command
# validates a few of these types, or none, and building all of them costs it more than its
# requests to Redis do.
DEFERRED = ConfigDict(defer_build=True)


class Frozen(BaseModel):
    """Base of every stored model: immutable, no unknown fields.

    No string cache for JSON (cache_strings): read from the log, a string is a name, a key, a
    command id or an address, most of them unique to their entry, so looking each up in the
    cache costs more than it saves (a replay's validation takes 8 to 10% less without it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, cache_strings=False)


class LinkNet(Frozen):
    """A point-to-point veth pair on a /30 from 100.64.0.0/10; side `a` is the host or peer `a`."""

    net: LinkNetwork
    a_ns: RouterNs | None  # None = the host namespace
    a_if: LinkEndA
    a_addr: LinkAddress
    b_ns: RouterNs
    b_if: LinkEndB
    b_addr: LinkAddress
    prefixlen: Literal[30] = 30

    @model_validator(mode="after")
    def _ends(self) -> LinkNet:
        # a host end is an uplink (vq...u: the host's rules know vpcq's links by that prefix),
        # a router end of an uplink is `uplink`, and a peering is vp-... at both ends
        host = self.a_ns is None
        if host != self.a_if.startswith("vq") or host != (self.b_if == "uplink"):
            raise ValueError(f"link {self.a_if} <-> {self.b_if} is neither an uplink (host vq<key>u, "
                             "router uplink) nor a peering (vp-<key> in two routers)")
        return self


class Rule(Frozen):
    """One security-group rule, in the order the user wrote it."""

    protocol: Protocol
    action: Action
    port: Ports | None = None  # "80" or "8000-8010"; tcp/udp only
    cidr: Cidr | None = None  # source (ingress) or destination (egress)

    @model_validator(mode="after")
    def _port_needs_protocol(self) -> Rule:
        if self.port is not None and self.protocol in ("icmp", "all"):
            raise ValueError(f"a port makes no sense with protocol {self.protocol}")
        return self

    def match(self) -> tuple[str, str | None, str]:
        """What the rule matches (an absent source is anywhere)."""
        return self.protocol, self.port, self.cidr or "0.0.0.0/0"


class Firewall(Frozen):
    """A subnet's security group: ordered rules, first match wins, then the default."""

    ingress: tuple[Rule, ...] = Field((), max_length=MAX_RULES)
    egress: tuple[Rule, ...] = Field((), max_length=MAX_RULES)
    default: Action = "allow"

    @model_validator(mode="after")
    def _no_duplicates(self) -> Firewall:
        # as Neutron refuses a rule that exists (409): a rule matching what an earlier one
        # matches could never take effect (first match wins)
        for direction, rules in (("ingress", self.ingress), ("egress", self.egress)):
            seen: dict[tuple[str, str | None, str], int] = {}
            for i, r in enumerate(rules):
                first = seen.setdefault(r.match(), i)
                if first != i:
                    raise ValueError(f"{direction} rule {i + 1} matches what rule {first + 1} "
                                     f"matches ({_describe(r)}): it would never apply")
        return self


def _misnamed(*checks: tuple[str, str, str]) -> ValueError:
    """The first of (field, value, what vpcq derives) that differs, as the error. Only built
    on failure: the checks themselves are one expression each (a replay runs them all)."""
    field, value, expected = next(c for c in checks if c[1] != c[2])
    return ValueError(f"{field} is {value!r}, not {expected!r} as vpcq names it")


def _describe(r: Rule) -> str:
    return f"{r.protocol}{' port ' + r.port if r.port else ''}, {r.cidr or 'anywhere'}"


# ---- command bookkeeping -------------------------------------------------------------------


class CommandAccepted(Frozen):
    """A command passed validation; its domain events follow in the same append."""

    type: Literal["CommandAccepted"] = "CommandAccepted"
    kind: CommandKind
    args: dict[ArgKey, ArgText | int | bool | None]
    vpcs: tuple[Name, ...]
    events: Count  # how many domain events of this command follow it in the same append
    # the host whose workers apply it, decided with it (None: it touches no VPC, or it was
    # written before commands named their host; the fold then works it out as decide did)
    host: Name | None = None

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class ChangeApplied(Frozen):
    """A worker brought the kernel to the state the log had after the command."""

    type: Literal["ChangeApplied"] = "ChangeApplied"
    command_id: CommandId
    vpcs: tuple[Name, ...]
    steps: Count = 0

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class ChangeFailed(Frozen):
    """Applying the command failed; the kernel was brought back and the change removed."""

    type: Literal["ChangeFailed"] = "ChangeFailed"
    command_id: CommandId
    vpcs: tuple[Name, ...]
    reason: Text
    undo_errors: tuple[Text, ...] = ()
    caused_by: CommandId | None = None  # set when cancelled because an earlier change failed

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class CommandRedecided(Frozen):
    """A pending deletion decided again: an earlier change on its VPCs failed and they were
    restored to how they were before it, so what the deletion had decided no longer fits.
    Its new domain events follow in the same commit (a deletion is never cancelled)."""

    type: Literal["CommandRedecided"] = "CommandRedecided"
    kind: DeletionKind
    vpcs: tuple[Name, ...]
    events: Count  # how many domain events follow it in the same commit

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


class DriftRepaired(Frozen):
    """A worker found the kernel different from the log (a reboot, a hand edit) and fixed it."""

    type: Literal["DriftRepaired"] = "DriftRepaired"
    vpcs: tuple[Name, ...]
    steps: tuple[Text, ...] = Field(max_length=100)  # what was done, one line each

    def aggregates(self) -> tuple[str, ...]:
        return self.vpcs


# ---- the domain ----------------------------------------------------------------------------


class VpcCreated(Frozen):
    type: Literal["VpcCreated"] = "VpcCreated"
    name: Name
    cidr: VpcNetwork
    key: Key  # short stable id used in kernel names
    router_ns: str  # vpcq_<name>: checked by _derived, so no pattern of its own to pay for
    interface: IfName | None  # internet interface; None = $VPCQ_UPLINK or the default route's
    uplink: LinkNet
    host_route: bool  # False when the CIDR overlaps an existing VPC of its host
    host: Name = "default"  # the host whose workers build it (their $VPCQ_HOST)
    # where its public subnets' resolver sends names it does not know: an address, "none",
    # or None for the host's setting ($VPCQ_DNS_UPSTREAM, else the host's resolver)
    dns_upstream: Address | Literal["none"] | None = None

    @model_validator(mode="after")
    def _derived(self) -> VpcCreated:
        # the kernel names are the core's, derived from the name and the key: an event that
        # names another object (someone else's namespace, another VPC's uplink) is refused
        up = self.uplink
        if self.router_ns != "vpcq_" + self.name or up.a_if != "vq" + self.key + "u" \
                or up.b_ns != self.router_ns:
            raise _misnamed(("router_ns", self.router_ns, "vpcq_" + self.name),
                            ("uplink.a_if", up.a_if, "vq" + self.key + "u"),
                            ("uplink.b_ns", up.b_ns, self.router_ns))
        return self

    def aggregates(self) -> tuple[str, ...]:
        return (self.name,)


class SubnetAdded(Frozen):
    type: Literal["SubnetAdded"] = "SubnetAdded"
    vpc: Name
    name: Name
    cidr: SubnetNetwork
    public: bool
    key: Key
    # derived from the names and the key, and checked to be (_derived): no pattern to pay for
    netns: str  # "<vpc>-<subnet>", the tutorial's name
    bridge: str  # in the router namespace, holds the gateway
    veth: str  # router-side end; the subnet-side end is eth0
    gateway: Address  # last host address
    address: Address  # first host address
    prefixlen: SubnetPrefix

    @model_validator(mode="after")
    def _derived(self) -> SubnetAdded:
        if self.netns != self.vpc + "-" + self.name or self.bridge != "vb-" + self.key \
                or self.veth != "vs-" + self.key or not self.cidr.endswith(f"/{self.prefixlen}"):
            raise _misnamed(("netns", self.netns, self.vpc + "-" + self.name),
                            ("bridge", self.bridge, "vb-" + self.key),
                            ("veth", self.veth, "vs-" + self.key),
                            ("prefixlen", str(self.prefixlen), self.cidr.rpartition("/")[2]))
        return self

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class SubnetDeleted(Frozen):
    type: Literal["SubnetDeleted"] = "SubnetDeleted"
    vpc: Name
    name: Name

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class AppDeployed(Frozen):
    type: Literal["AppDeployed"] = "AppDeployed"
    vpc: Name
    subnet: Name
    port: Port

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class AppStopped(Frozen):
    type: Literal["AppStopped"] = "AppStopped"
    vpc: Name
    subnet: Name
    port: Port

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class FirewallApplied(Frozen):
    type: Literal["FirewallApplied"] = "FirewallApplied"
    vpc: Name
    subnet: Name
    firewall: Firewall

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class VpcsPeered(Frozen):
    type: Literal["VpcsPeered"] = "VpcsPeered"
    a: Name
    b: Name
    a_cidr: VpcNetwork
    b_cidr: VpcNetwork
    link: LinkNet  # a side in a's router, b side in b's router

    @model_validator(mode="after")
    def _derived(self) -> VpcsPeered:
        if self.link.a_ns != "vpcq_" + self.a or self.link.b_ns != "vpcq_" + self.b:
            raise _misnamed(("link.a_ns", str(self.link.a_ns), "vpcq_" + self.a),
                            ("link.b_ns", self.link.b_ns, "vpcq_" + self.b))
        return self

    def aggregates(self) -> tuple[str, ...]:
        return (self.a, self.b)


class VpcsUnpeered(Frozen):
    type: Literal["VpcsUnpeered"] = "VpcsUnpeered"
    a: Name
    b: Name

    def aggregates(self) -> tuple[str, ...]:
        return (self.a, self.b)


class VpcDeleted(Frozen):
    type: Literal["VpcDeleted"] = "VpcDeleted"
    name: Name

    def aggregates(self) -> tuple[str, ...]:
        return (self.name,)


class LbTarget(Frozen):
    """A balancer's target: a subnet of its VPC, and the port connections go to there."""

    subnet: Name
    port: Port


class LoadBalancerCreated(Frozen):
    """A balancer: an address in its VPC (outside every subnet) whose port `port` spreads
    new connections over the healthy targets."""

    type: Literal["LoadBalancerCreated"] = "LoadBalancerCreated"
    vpc: Name
    name: Name
    key: Key  # short stable id used in its chain's name
    address: Address
    port: Port
    targets: tuple[LbTarget, ...] = Field(min_length=1, max_length=64)

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class LoadBalancerTargetsSet(Frozen):
    type: Literal["LoadBalancerTargetsSet"] = "LoadBalancerTargetsSet"
    vpc: Name
    name: Name
    targets: tuple[LbTarget, ...] = Field(min_length=1, max_length=64)

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class LoadBalancerDeleted(Frozen):
    type: Literal["LoadBalancerDeleted"] = "LoadBalancerDeleted"
    vpc: Name
    name: Name

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class PortExposed(Frozen):
    """Connections to the host on `host_port` reach `port` of a public subnet or of a
    balancer of the VPC."""

    type: Literal["PortExposed"] = "PortExposed"
    vpc: Name
    host_port: Port
    protocol: Literal["tcp", "udp"]
    target: Name  # a subnet or a balancer of the VPC
    balancer: bool  # whether `target` names a balancer
    port: Port

    def aggregates(self) -> tuple[str, ...]:
        return (self.vpc,)


class PortUnexposed(Frozen):
    type: Literal["PortUnexposed"] = "PortUnexposed"
    vpc: Name
    host_port: Port
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
    vpc: Name
    to_seq: Seq
    reason: Text
    genesis: tuple[GenesisEvent, ...]
    touches: tuple[Name, ...] = ()  # peers whose routers change with it

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

    seq: Seq = 0  # position in the log; assigned by the store on append
    schema_version: Version = 1
    command_id: CommandId
    correlation_id: Correlation
    actor: Actor  # "user@host"
    time: Time  # ISO 8601, UTC
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
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True,
                              cache_strings=False)

    seq: Seq = Field(0, alias="s")  # the first event's sequence number
    command_id: CommandId = Field(alias="c")
    correlation_id: Correlation = Field(alias="r")
    actor: Actor = Field(alias="a")
    time: Time = Field(alias="t")
    versions: tuple[Version, ...] = Field(alias="v", min_length=1)  # each event's, as stored
    events: tuple[Event, ...] = Field(alias="e", min_length=1)

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


class Rejected(NamedTuple):
    """A stream entry that is not a commit vpcq wrote: quarantined where it is read (never
    folded, never applied), and shown by `vpcq log` and `vpcq fsck`.

    It still stands at its place in the log: it takes the sequence numbers `seq`..`last`
    (its id's, and as many as the events it claims, as the append script counts them), so
    the commits after it keep theirs and appends go on after it.
    """

    entry_id: str
    seq: int
    last: int
    reason: str

    def line(self) -> str:
        """One line naming the entry and why it was rejected."""
        return f"log entry {self.entry_id} rejected: {self.reason}"
