"""Command schemas: what a user asks for, validated for shape before `decide` sees it."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from vpcq.errors import DomainError
from vpcq.events.schema import DEFERRED, MAX_RULES, Firewall, Rule
from vpcq.events.types import (
    Action,
    Address,
    IfName,
    Name,
    Network,
    Port,
    Protocol,
    Seq,
    SubnetRef,
    explain,
    is_name,
    show,
)

# The fields of a command are the types its events are made of (vpcq.events.types): what
# the CLI refuses, a JSON batch item or a hand-made event cannot slip past.


def _upstream(value: str) -> str:
    if value == "none":
        return value
    addr = ipaddress.IPv4Address(value)
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local \
            or addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{value} cannot be a resolver for a VPC's router (loopback, link-local, "
                         "multicast or broadcast); give an address it can reach, or none")
    return value


def _target(value: str) -> str:
    subnet, sep, port = value.rpartition(":")
    if not sep or not is_name(subnet) or not port.isascii() or not port.isdigit() \
            or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise ValueError(f"{show(value)} is not SUBNET:PORT (a subnet of the VPC and a port 1-65535)")
    return f"{subnet}:{int(port)}"


def _targets(value: Any) -> Any:
    """A comma-separated string (as CommandAccepted.args and `vpcq log --json` keep a list)
    is the list it was made from."""
    if isinstance(value, str):
        return [t for t in value.split(",") if t]
    return value


# an IPv4 address, or "none"
DnsUpstream = Annotated[Address | Literal["none"], AfterValidator(_upstream)]
Target = Annotated[str, AfterValidator(_target)]  # "SUBNET:PORT"
Targets = Annotated[tuple[Target, ...], BeforeValidator(_targets), Field(min_length=1, max_length=64)]
PortProtocol = Literal["tcp", "udp"]  # what a public port or a balancer forwards


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class CreateVpc(_Command):
    kind: Literal["create-vpc"] = "create-vpc"
    name: Name
    cidr: Network
    interface: IfName | None = None
    host: Name = "default"  # the host whose workers build it (their $VPCQ_HOST)
    dns_upstream: DnsUpstream | None = None  # public subnets' resolver (None: the host's)


class AddSubnet(_Command):
    kind: Literal["add-subnet"] = "add-subnet"
    vpc: Name
    name: Name
    cidr: Network
    type: Literal["public", "private"] = "private"


class DeleteSubnet(_Command):
    kind: Literal["delete-subnet"] = "delete-subnet"
    vpc: Name
    name: Name


class DeployApp(_Command):
    kind: Literal["deploy-app"] = "deploy-app"
    vpc: Name
    subnet: Name
    port: Port = 8000


class StopApp(_Command):
    kind: Literal["stop-app"] = "stop-app"
    vpc: Name
    subnet: Name


class ApplyFirewall(_Command):
    kind: Literal["apply-firewall"] = "apply-firewall"
    vpc: Name
    subnet: Name
    firewall: Firewall
    file_subnet: SubnetRef | None = None  # the file's own "subnet" field, checked by decide


class PeerVpcs(_Command):
    kind: Literal["peer-vpcs"] = "peer-vpcs"
    a: Name
    b: Name


class UnpeerVpcs(_Command):
    kind: Literal["unpeer-vpcs"] = "unpeer-vpcs"
    a: Name
    b: Name


class DeleteVpc(_Command):
    kind: Literal["delete-vpc"] = "delete-vpc"
    name: Name


class Cleanup(_Command):
    kind: Literal["cleanup"] = "cleanup"
    host: Name | None = None  # only the VPCs of this host (None: every VPC, all on one host)


class Expose(_Command):
    """Connections to the host on `host_port` reach `port` of a public subnet or a balancer."""

    kind: Literal["expose"] = "expose"
    vpc: Name
    target: Name  # a public subnet or a balancer of the VPC
    port: Port
    host_port: Port | None = None  # None: the same as `port`
    protocol: PortProtocol = "tcp"


class Unexpose(_Command):
    kind: Literal["unexpose"] = "unexpose"
    vpc: Name
    host_port: Port
    protocol: PortProtocol = "tcp"


class CreateLb(_Command):
    kind: Literal["create-lb"] = "create-lb"
    vpc: Name
    name: Name
    port: Port
    targets: Targets
    public: Port | None = None  # a host port that reaches it (an expose of it)
    address: Address | None = None  # None: one decided in the VPC, outside its subnets


class SetLbTargets(_Command):
    kind: Literal["set-lb-targets"] = "set-lb-targets"
    vpc: Name
    name: Name
    targets: Targets


class DeleteLb(_Command):
    kind: Literal["delete-lb"] = "delete-lb"
    vpc: Name
    name: Name


class Rollback(_Command):
    kind: Literal["rollback"] = "rollback"
    vpc: Name
    to_seq: Seq


Command: TypeAlias = Annotated[
    CreateVpc
    | AddSubnet
    | DeleteSubnet
    | DeployApp
    | StopApp
    | ApplyFirewall
    | PeerVpcs
    | UnpeerVpcs
    | DeleteVpc
    | Cleanup
    | Rollback
    | Expose
    | Unexpose
    | CreateLb
    | SetLbTargets
    | DeleteLb,
    Field(discriminator="kind"),
]

COMMAND: TypeAdapter[Command] = TypeAdapter(Command, config=DEFERRED)


def parse_command(data: dict[str, Any]) -> Command:
    """Validate a command's shape; a bad field becomes one DomainError naming it."""
    try:
        return COMMAND.validate_python(data)
    except ValidationError as e:
        raise _domain_error(e) from None


def _domain_error(e: ValidationError) -> DomainError:
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    # drop the discriminator tag pydantic puts first ("create-vpc", ...), and the names of
    # the validators pydantic puts in the path of a union or a constrained type
    if loc and loc[0] in _KINDS:
        loc = loc[1:]
    field = ".".join(p for p in loc if not p.startswith(("function-", "json-or-python")))
    return DomainError(field or "command", explain(err))


_KINDS = {
    "create-vpc", "add-subnet", "delete-subnet", "deploy-app", "stop-app", "apply-firewall",
    "peer-vpcs", "unpeer-vpcs", "delete-vpc", "cleanup", "rollback",
    "expose", "unexpose", "create-lb", "set-lb-targets", "delete-lb",
}  # fmt: skip


# ---- firewall files (the tutorial's JSON) --------------------------------------------------


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    protocol: Protocol = "tcp"
    action: Action
    port: int | str | None = None
    cidr: str | None = None

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | str):  # `true` is not port 1
            raise ValueError(f"{show(v)} is not a port or a range like 8000-8010")
        text = str(v)
        lo_hi = text.split("-") if isinstance(v, str) else [text]
        if len(lo_hi) > 2 or not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in lo_hi):
            raise ValueError(f"{show(v)} is not a port or a range like 8000-8010")
        lo, hi = int(lo_hi[0]), int(lo_hi[-1])
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise ValueError(f"port {text} is outside 1-65535")
        if lo > hi:
            raise ValueError(f"port range {text} is reversed")
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, str) or len(v) > 18 or not v.isascii():
            raise ValueError(f"{show(v)} is not an IPv4 address or network")
        try:  # a host address is the /32 it is; host bits set are the network's
            return str(ipaddress.IPv4Network(v, strict=False))
        except ValueError:
            raise ValueError(f"{show(v)} is not an IPv4 address or network") from None

    @model_validator(mode="after")
    def _port_needs_protocol(self) -> _RuleFile:
        if self.port is not None and self.protocol in ("icmp", "all"):
            raise ValueError(f"a port makes no sense with protocol {self.protocol}")
        return self


class _FirewallFile(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    subnet: SubnetRef | None = None
    ingress: list[_RuleFile] = Field([], max_length=MAX_RULES)
    egress: list[_RuleFile] = Field([], max_length=MAX_RULES)
    default: Action = "allow"


def parse_firewall(data: Any) -> tuple[Firewall, str | None]:
    """Parse the tutorial's firewall JSON; return the policy and the file's `subnet` field.
    Every way rules come in (a file, a JSON batch item) goes through here."""
    try:
        f = _FirewallFile.model_validate(data)
        fw = Firewall(
            ingress=tuple(Rule(protocol=r.protocol, action=r.action, port=r.port, cidr=r.cidr)
                          for r in f.ingress),
            egress=tuple(Rule(protocol=r.protocol, action=r.action, port=r.port, cidr=r.cidr)
                         for r in f.egress),
            default=f.default,
        )
    except ValidationError as e:
        err = _domain_error(e)
        raise DomainError(f"firewall.{err.field}" if err.field != "command" else "firewall",
                          err.reason) from None
    return fw, f.subnet
