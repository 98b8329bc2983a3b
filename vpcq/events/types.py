"""The constrained types every command and every event is built from.

The log is a trust boundary: root acts on what it says, and anyone who can write to Redis
can write to it. So a field that names a kernel object, or goes into a rule line, a route or
a path, has a type that cannot hold a newline, a control character, a path separator, a
reserved range or a name outside vpcq's own naming. A command that breaks them is refused
with the reason; an event that breaks them can be neither built, nor appended, nor folded.

Most checks are patterns, matched by pydantic-core (Rust's regex engine: `$` is the end of
the text, never "before a trailing newline" as in Python's `re`), so a replay of 100k events
pays little for them. What a pattern cannot say (a network's host bits, an overlap with a
reserved range, a port range's order) is a Python check, cached by value.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import CoreSchema, core_schema

from vpcq.events.text import escape, hidden

# ---- patterns, and what each stands for in an error message ---------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_QUAD = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_NAME = r"[a-z0-9][a-z0-9-]{0,31}"
_HEX6 = r"[0-9a-f]{6}"
_POOL = r"100\.(?:6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])"  # 100.64.0.0/10, vpcq's link-nets
# what no field shown to a user may hold: control and format characters (a newline, an
# escape sequence, a bidi override), line and paragraph separators
_SHOWN = r"[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"

NAME = rf"^{_NAME}$"
IFNAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"
KEY = rf"^{_HEX6}$"
ROUTER_NS = rf"^vpcq_{_NAME}$"
SUBNET_NS = rf"^{_NAME}-{_NAME}$"
BRIDGE = rf"^vb-{_HEX6}$"
VETH = rf"^vs-{_HEX6}$"
HOST_LINK = rf"^vq{_HEX6}u$"
PEER_LINK = rf"^vp-{_HEX6}$"
LINK_A = rf"^(?:vq{_HEX6}u|vp-{_HEX6})$"
LINK_B = rf"^(?:uplink|vp-{_HEX6})$"
ADDRESS = rf"^{_QUAD}$"
LINK_ADDRESS = rf"^{_POOL}\.{_OCTET}\.{_OCTET}$"
LINK_NET = rf"^{_POOL}\.{_OCTET}\.{_OCTET}/30$"
NETWORK = rf"^{_QUAD}/(?:3[0-2]|[12]?[0-9])$"
VPC_NETWORK = rf"^{_QUAD}/(?:[89]|1[0-9]|2[0-8])$"
SUBNET_NETWORK = rf"^{_QUAD}/(?:[89]|1[0-9]|2[0-9])$"
PORTS = r"^[1-9][0-9]{0,4}(?:-[1-9][0-9]{0,4})?$"
TOKEN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
TIME = r"^[0-9A-Za-z:.+-]{1,40}$"
ACTOR = r"^[^\p{C}\p{Z}]+$"
TEXT = rf"^{_SHOWN}*$"
ARG_KEY = r"^[a-z][a-z_]{0,31}$"
SUBNET_REF = r"^[a-z0-9][a-z0-9./_-]{0,71}$"

NAME_RULE = "1-32 characters of a-z, 0-9 and '-', starting with a letter or digit"
DESCRIPTIONS: dict[str, str] = {
    NAME: f"a valid name ({NAME_RULE})",
    IFNAME: "a valid interface name (1-15 characters of A-Z, a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit)",
    KEY: "a key of 6 hex digits",
    ROUTER_NS: "a router namespace name (vpcq_<vpc>)",
    SUBNET_NS: "a subnet namespace name (<vpc>-<subnet>)",
    BRIDGE: "a subnet bridge name (vb-<key>)",
    VETH: "a subnet veth name (vs-<key>)",
    HOST_LINK: "a host uplink name (vq<key>u)",
    PEER_LINK: "a peering link name (vp-<key>)",
    LINK_A: "a link-net end on the host or a peer (vq<key>u, vp-<key>)",
    LINK_B: "a link-net end in a router (uplink, vp-<key>)",
    ADDRESS: "an IPv4 address like 10.0.1.1",
    LINK_ADDRESS: "an address in vpcq's link-net pool 100.64.0.0/10",
    LINK_NET: "a /30 in vpcq's link-net pool 100.64.0.0/10",
    NETWORK: "an IPv4 network like 10.0.0.0/16",
    VPC_NETWORK: "an IPv4 network from /8 to /28, like 10.0.0.0/16",
    SUBNET_NETWORK: "an IPv4 network from /8 to /29, like 10.0.1.0/24",
    PORTS: "a port or a range like 8000-8010",
    TOKEN: "an id (1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-')",
    TIME: "a time like 2026-01-01T00:00:00.000+00:00",
    ACTOR: "an actor (user@host, no spaces or control characters)",
    TEXT: "one line of text (no control characters)",
    ARG_KEY: "an argument name",
    SUBNET_REF: "a subnet's name, CIDR or namespace",
}

# ---- checks a pattern cannot make -------------------------------------------------------------

# Ranges no VPC or subnet may use, and why (vpcq's own pool first: its uplinks take
# addresses there, so a subnet in it would take an uplink's address).
RESERVED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why) for net, why in (
        ("100.64.0.0/10", "vpcq's link-net pool (its uplinks and peerings take addresses there)"),
        ("0.0.0.0/8", "'this network', which no host may use"),
        ("127.0.0.0/8", "the loopback range"),
        ("169.254.0.0/16", "the link-local range (and its metadata services)"),
        ("224.0.0.0/4", "the multicast range"),
        ("240.0.0.0/4", "the reserved range (and the broadcast address)"),
    )
)


# the same ranges as (first, last) integers, for the check made on every network read
_RESERVED_SPANS: tuple[tuple[int, int, str], ...] = tuple(
    (int(net.network_address), int(net.broadcast_address), f"{net}, {why}") for net, why in RESERVED
)


def _span(value: str) -> tuple[int, int]:
    """The first and last address of a network its pattern has matched ("a.b.c.d/n"), as
    integers; ValueError if host bits are set. Integer arithmetic, not ipaddress: a replay
    from a cold cache checks every distinct network of the log once."""
    addr, _, length = value.partition("/")
    a, b, c, d = addr.split(".")
    first = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    host = (1 << (32 - int(length))) - 1
    if first & host:
        net = first & ~host
        raise ValueError(f"{value!r} has host bits set (the network is "
                         f"{net >> 24}.{net >> 16 & 255}.{net >> 8 & 255}.{net & 255}/{length})")
    return first, first | host


@functools.lru_cache(maxsize=65536)
def _network(value: str) -> str:
    """`value` if it is a network with no host bits set, else ValueError saying why."""
    _span(value)
    return value


@functools.lru_cache(maxsize=65536)
def _usable(value: str) -> str:
    """`value` if it is a network with no host bits set outside every reserved range."""
    first, last = _span(value)
    for lo, hi, why in _RESERVED_SPANS:
        if first <= hi and lo <= last:
            raise ValueError(f"{value} overlaps {why}")
    return value


@functools.lru_cache(maxsize=4096)
def _ports(value: str) -> str:
    lo, _, hi = value.partition("-")
    if int(lo) > 65535 or (hi and int(hi) > 65535):
        raise ValueError(f"port {value} is outside 1-65535")
    if hi and int(lo) >= int(hi):
        raise ValueError(f"port range {value} is " + ("reversed" if int(lo) > int(hi) else
                                                      f"one port: write {lo}"))
    return value


# ---- the types ----------------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(pattern=NAME)]  # a VPC, a subnet, a host
IfName = Annotated[str, StringConstraints(pattern=IFNAME)]  # an interface the user names
Key = Annotated[str, StringConstraints(pattern=KEY)]  # a VPC's or subnet's short stable key
RouterNs = Annotated[str, StringConstraints(pattern=ROUTER_NS)]
SubnetNs = Annotated[str, StringConstraints(pattern=SUBNET_NS)]
BridgeIf = Annotated[str, StringConstraints(pattern=BRIDGE)]
VethIf = Annotated[str, StringConstraints(pattern=VETH)]
LinkEndA = Annotated[str, StringConstraints(pattern=LINK_A)]  # on the host, or a peer's router
LinkEndB = Annotated[str, StringConstraints(pattern=LINK_B)]  # in a router
Address = Annotated[str, StringConstraints(pattern=ADDRESS)]
LinkAddress = Annotated[str, StringConstraints(pattern=LINK_ADDRESS)]
LinkNetwork = Annotated[str, StringConstraints(pattern=LINK_NET)]
# any network (a rule's source or destination: 0.0.0.0/0 is "anywhere")
Cidr = Annotated[str, StringConstraints(pattern=NETWORK), AfterValidator(_network)]
# a network a VPC or subnet may be asked for: no host bits, no reserved range
Network = Annotated[str, StringConstraints(pattern=NETWORK), AfterValidator(_usable)]
VpcNetwork = Annotated[str, StringConstraints(pattern=VPC_NETWORK), AfterValidator(_usable)]
SubnetNetwork = Annotated[str, StringConstraints(pattern=SUBNET_NETWORK), AfterValidator(_usable)]
SubnetPrefix = Annotated[int, Field(strict=True, ge=8, le=29)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Ports = Annotated[str, StringConstraints(pattern=PORTS), AfterValidator(_ports)]  # "80", "8000-8010"
Protocol = Literal["tcp", "udp", "icmp", "all"]
Action = Literal["allow", "deny"]
Count = Annotated[int, Field(strict=True, ge=0)]
Seq = Annotated[int, Field(strict=True, ge=0, le=2**53)]  # what Lua's numbers hold exactly
Version = Annotated[int, Field(strict=True, ge=0, le=1000)]  # an event's schema version
CommandId = Annotated[str, StringConstraints(pattern=TOKEN)]


class Shown:
    """A string that is only ever shown (who, when, why, a command's arguments as given),
    never copied into an event vpcq builds, nor put into a name, a rule or a path.

    Built in Python, it is checked by its pattern. Read from the log's JSON, only its length
    is, by pydantic: the store first checks the whole entry's bytes (see `plain_json`), and a
    JSON text that is ASCII and holds no backslash holds no control character in any string
    (JSON can only write one escaped). Half the patterns of a replay are these.
    """

    def __init__(self, pattern: str, max_length: int, min_length: int = 1) -> None:
        self.pattern = pattern
        self.max_length = max_length
        self.min_length = min_length  # what the pattern requires, so both ways agree

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.json_or_python_schema(
            json_schema=core_schema.str_schema(max_length=self.max_length,
                                               min_length=self.min_length),
            python_schema=core_schema.str_schema(pattern=self.pattern, max_length=self.max_length,
                                                 min_length=self.min_length),
        )


Time = Annotated[str, Shown(TIME, 40)]
Actor = Annotated[str, Shown(ACTOR, 320)]
Text = Annotated[str, Shown(TEXT, 2000, 0)]  # one line, shown as is
ArgKey = Annotated[str, Shown(ARG_KEY, 32)]
ArgText = Annotated[str, Shown(TEXT, 300, 0)]
SubnetRef = Annotated[str, StringConstraints(pattern=SUBNET_REF)]

# ---- helpers for the edges ----------------------------------------------------------------------

_ACTOR: TypeAdapter[str] = TypeAdapter(Actor)
_IFNAME = re.compile(IFNAME.removeprefix("^").removesuffix("$"))
_NAME_RE = re.compile(_NAME)


def is_ifname(value: str) -> bool:
    """Whether `value` is an interface name vpcq puts in a rule (from the environment or the
    kernel: $VPCQ_UPLINK, the default route's device)."""
    return _IFNAME.fullmatch(value) is not None


def is_name(value: str) -> bool:
    """Whether `value` is a valid VPC, subnet or host name."""
    return _NAME_RE.fullmatch(value) is not None


def is_actor(value: str) -> bool:
    """Whether `value` may stand in the log as who did something (user@host)."""
    try:
        _ACTOR.validate_python(value)
    except ValidationError:
        return False
    return True


def plain_json(data: bytes) -> bool:
    """Whether a JSON text is ASCII, holds no backslash and no DEL: then none of its strings
    holds a control or format character (JSON writes those below 0x20 escaped, and the parser
    refuses them raw; DEL, 0x7f, it lets through raw), and a `Shown` string read from it is
    safe to show. Cheap: three scans of the bytes in C."""
    return data.isascii() and b"\\" not in data and b"\x7f" not in data


def hidden_text(value: Any) -> str | None:
    """The first string in a parsed JSON value holding a control or format character, if any
    (for an entry that is not `plain_json`)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            if hidden(v):
                return v
        elif isinstance(v, dict):
            todo += v.keys()
            todo += v.values()
        elif isinstance(v, list):
            todo += v
    return None


def show(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: repr'd (quotes, escapes), and cut short."""
    text = escape(repr(value), 10_000)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def explain(err: Any) -> str:
    """One pydantic error (an item of ValidationError.errors()) as a short sentence."""
    kind, msg = err.get("type", ""), str(err.get("msg", ""))
    given = err.get("input")
    if kind == "string_pattern_mismatch":
        what = DESCRIPTIONS.get(str((err.get("ctx") or {}).get("pattern", "")), "valid here")
        return f"{show(given)} is not {what}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found"):
        return msg
    if kind == "string_too_long":
        return f"{show(given)} is too long ({msg.lower()})"
    if kind == "too_long":  # a list: its length says it, not its items
        return msg
    return f"{msg} (got {show(given)})"
