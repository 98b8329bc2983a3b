"""The constrained types commands and events share: what each refuses, and a property test
that whatever is accepted leads only to safe kernel names and rule lines."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from vpcq.errors import DomainError
from vpcq.events import types
from vpcq.events.commands import parse_command, parse_firewall
from vpcq.events.schema import (
    Commit,
    Envelope,
    Firewall,
    LoadBalancerCreated,
    PortExposed,
    Rule,
    SubnetAdded,
    VpcCreated,
)
from vpcq.events.store import BadEntry, decode, encode
from vpcq.orchestrator import rules
from vpcq.orchestrator.state import view_of
from vpcq.orchestrator.topology import plan
from vpcq.safepath import component, under

from .core import apply, cmd
from .core import given as given_state


def ok(t: Any, value: Any) -> bool:
    try:
        TypeAdapter(t).validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value", ["a\n", "\na", "a\r", "a\x00", "A", "a_b", "a/b", "..", "", " a",
                                   "-a", "a" * 33, "é", "a\u202e"])
def test_a_name_is_refused(value):
    assert not ok(types.Name, value)


@pytest.mark.parametrize("value", ["a", "my-vpc", "0", "a" * 32, "web-subnet-2"])
def test_a_name_is_accepted(value):
    assert ok(types.Name, value)


@pytest.mark.parametrize("value", ["eth0\n", "eth0 -j ACCEPT", ".", "..", "a/b", "a" * 16, "",
                                   "-eth0", "eth0\x00"])
def test_an_interface_name_is_refused(value):
    assert not ok(types.IfName, value)
    assert not types.is_ifname(value)


@pytest.mark.parametrize(("value", "why"), [
    ("100.64.0.0/16", "vpcq's link-net pool"), ("100.127.255.0/24", "link-net pool"),
    ("100.0.0.0/8", "link-net pool"), ("127.0.0.0/8", "loopback"), ("127.1.0.0/16", "loopback"),
    ("224.0.0.0/8", "multicast"), ("239.0.0.0/8", "multicast"), ("0.0.0.0/8", "'this network'"),
    ("169.254.0.0/16", "link-local"), ("240.0.0.0/8", "reserved"), ("255.255.255.0/24", "reserved"),
    ("10.0.0.1/16", "host bits"),
])  # fmt: skip
def test_a_network_a_vpc_may_not_have_is_refused_with_the_reason(value, why):
    with pytest.raises(ValidationError) as e:
        TypeAdapter(types.VpcNetwork).validate_python(value)
    assert why in types.explain(e.value.errors()[0])


@pytest.mark.parametrize("value", ["10.0.0.0/16\n", "10.0.0.0/16 ", "010.0.0.0/16", "10.0.0.0",
                                   "10.0.0.0/33", "256.0.0.0/8", "0.0.0.0/0 -j ACCEPT\nCOMMIT"])
def test_a_malformed_network_is_refused_even_as_a_rule_source(value):
    assert not ok(types.Cidr, value)


@settings(max_examples=3000, deadline=None)
@given(address=st.integers(0, 2**32 - 1), length=st.integers(0, 32))
def test_the_network_checks_agree_with_ipaddress(address, length):
    """The checks of networks read from the log are integer arithmetic, not ipaddress:
    they accept and refuse exactly what ipaddress says, for every address and length."""
    import ipaddress

    value = f"{ipaddress.IPv4Address(address)}/{length}"
    net = ipaddress.IPv4Network(value, strict=False)
    exact = str(net) == value
    assert ok(types.Cidr, value) is exact
    usable = exact and not any(net.overlaps(r) for r, _ in types.RESERVED)
    assert ok(types.Network, value) is usable


def test_a_rule_may_name_any_network_but_a_vpc_only_a_usable_one():
    assert ok(types.Cidr, "0.0.0.0/0") and ok(types.Cidr, "127.0.0.0/8")
    assert ok(types.VpcNetwork, "10.0.0.0/16") and ok(types.VpcNetwork, "100.128.0.0/16")
    assert not ok(types.VpcNetwork, "10.0.0.0/29")  # a VPC is /8 to /28


@pytest.mark.parametrize("value", [True, False, 0, 65536, -1, "80", 80.0])
def test_a_port_is_a_strict_int_in_range(value):
    assert not ok(types.Port, value)


@pytest.mark.parametrize("value", ["0", "65536", "99999", "90-80", "80-80", "80\n", "08", "1-2-3"])
def test_a_port_range_is_refused(value):
    assert not ok(types.Ports, value)


@pytest.mark.parametrize("value", ["root@host\n", "root host", "a\x1b[2Jb", "a\u2028b", ""])
def test_an_actor_is_one_word_of_printable_characters(value):
    assert not ok(types.Actor, value) and not types.is_actor(value)


def test_text_is_one_line():
    assert ok(types.Text, "no uplink: eth9 is down") and ok(types.Text, "")
    assert not ok(types.Text, "a\nb") and not ok(types.Text, "a\x1bb")


# ---- events: neither built nor read ------------------------------------------------------


def _state() -> Any:
    return given_state(cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
                       cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"))


def _subnet_event() -> SubnetAdded:
    ev = _state().vpcs["a"].subnets["web"]
    return SubnetAdded(vpc="a", name="web", cidr=ev.cidr, public=ev.public, key=ev.key,
                       netns=ev.netns, bridge=ev.bridge, veth=ev.veth, gateway=ev.gateway,
                       address=ev.address, prefixlen=ev.prefixlen)


@pytest.mark.parametrize(("field", "value"), [
    ("netns", "../../../root/.bashrc"), ("netns", "other-ns"), ("bridge", "vb-000000"),
    ("veth", "eth0"), ("prefixlen", 30), ("prefixlen", True), ("cidr", "100.64.0.0/24"),
])  # fmt: skip
def test_an_event_that_names_what_vpcq_would_not_cannot_be_built(field, value):
    good = _subnet_event().model_dump()
    with pytest.raises(ValidationError):
        SubnetAdded(**{**good, field: value})


GOOD_LB = dict(vpc="a", name="lb", key="0a1b2c", address="10.0.200.1", port=80,
               targets=[{"subnet": "web", "port": 8000}])
GOOD_PORT = dict(vpc="a", host_port=8080, protocol="tcp", target="web", balancer=False, port=80)


@pytest.mark.parametrize(("event", "good", "field", "value"), [
    (LoadBalancerCreated, GOOD_LB, "name", "../lb"), (LoadBalancerCreated, GOOD_LB, "key", "x;y"),
    (LoadBalancerCreated, GOOD_LB, "address", "10.0.200.1\n"),
    (LoadBalancerCreated, GOOD_LB, "port", True), (LoadBalancerCreated, GOOD_LB, "targets", []),
    (LoadBalancerCreated, GOOD_LB, "targets", [{"subnet": "web -j ACCEPT", "port": 8000}]),
    (PortExposed, GOOD_PORT, "host_port", 99999), (PortExposed, GOOD_PORT, "protocol", "icmp"),
    (PortExposed, GOOD_PORT, "target", "web\n"), (PortExposed, GOOD_PORT, "vpc", "A"),
])  # fmt: skip
def test_a_service_event_breaking_the_types_cannot_be_built(event, good, field, value):
    event(**good)  # the good one can
    with pytest.raises(ValidationError):
        event(**{**good, field: value})


def test_a_vpc_event_must_name_its_own_router_and_uplink():
    state = _state()
    v = state.vpcs["a"]
    good = dict(name="a", cidr=v.cidr, key=v.key, router_ns=v.router_ns, interface=None,
                uplink=v.uplink, host_route=True)
    VpcCreated(**good)
    for change in ({"router_ns": "vpcq_b"}, {"name": "b"}, {"interface": "eth0\n"},
                   {"uplink": {**v.uplink.model_dump(), "a_if": "eth0"}},
                   {"uplink": {**v.uplink.model_dump(), "a_addr": "10.0.0.1"}}):
        with pytest.raises(ValidationError):
            VpcCreated(**{**good, **change})


def test_an_event_built_without_validation_cannot_be_read_back():
    """model_construct skips every check: the store's reader still refuses it."""
    bad = SubnetAdded.model_construct(**{**_subnet_event().model_dump(), "netns": "../../x"})
    commit = Commit.model_construct(seq=3, command_id="c", correlation_id="c", actor="t@h",
                                    time="t", versions=(1,), events=(bad,))
    with pytest.raises(BadEntry, match="netns"):
        decode(b'{"s":3,' + encode(commit)[1:])


def test_an_event_built_without_validation_cannot_be_appended():
    from vpcq.events.store import checked

    bad = SubnetAdded.model_construct(**{**_subnet_event().model_dump(), "netns": "../../x"})
    env = Envelope.model_construct(seq=0, schema_version=1, command_id="c", correlation_id="c",
                                   actor="t@h", time="t", event=bad)
    with pytest.raises(BadEntry, match="netns"):
        checked([env])


@pytest.mark.parametrize("text", ["a\x7fb", "a\u202eb", "a\u2028b", "a\x1b[31mb"])
def test_a_shown_string_with_a_hidden_character_is_refused_when_read(text):
    c = Commit(seq=1, command_id="c", correlation_id="c", actor="t@h", time="t", versions=(1,),
               events=(_subnet_event(),))
    data = json.loads(encode(c))
    data["s"], data["a"] = 1, "t@h" + text
    with pytest.raises(BadEntry, match="control or format character"):
        decode(json.dumps(data).encode())
    data["a"] = "t@h"  # the same entry, clean, reads back
    assert decode(json.dumps(data).encode()).actor == "t@h"


def test_duplicate_rules_are_refused_with_the_rule_they_repeat():
    with pytest.raises(DomainError, match="ingress rule 2 matches what rule 1 matches"):
        parse_firewall({"ingress": [{"port": 80, "action": "allow"},
                                    {"port": "80", "action": "deny", "cidr": "0.0.0.0/0"}]})
    with pytest.raises(ValidationError):
        Firewall(ingress=(Rule(protocol="tcp", action="allow"),) * 2)
    # the same rule in both directions is two rules
    parse_firewall({"ingress": [{"action": "allow"}], "egress": [{"action": "allow"}]})


def test_paths_from_names_stay_in_their_directory():
    assert under("/run/netns", "a-b") == "/run/netns/a-b"
    for bad in ("..", ".", "", "a/b", "../x", "a\n", "a\x00b"):
        with pytest.raises(ValueError):
            component(bad)
        with pytest.raises(ValueError):
            under("/run/netns", bad)


# ---- the property: refused, or safe all the way down --------------------------------------

_any = st.text(st.characters(codec="utf-8"), max_size=24)
_bad = st.sampled_from(["x\n", "a b", "../x", "100.64.0.0/24", "eth0 -j ACCEPT", "a\x1b[2J", "",
                        "10.0.0.0/16\nCOMMIT", "-1", "99999", True, 0, -1, 70000, "a" * 40])


def _field(*good: object) -> st.SearchStrategy[Any]:
    """Good values half of the time (so that commands get through and their names and rules
    are checked), near misses and arbitrary text or numbers the other half."""
    ok = st.sampled_from(good)
    return st.one_of(ok, ok, _bad, st.one_of(_any, st.integers(-2, 70000), st.booleans()))


def _safe_name(name: str, link: bool) -> None:
    assert name.isprintable() and name.isascii() and "/" not in name and name not in (".", ".."), name
    assert not link or len(name) <= 15, name


def _check_topology(state: Any) -> None:
    for vpc in state.vpcs:
        top = plan({vpc: view_of(state, vpc)}, "eth0")
        for r in top.values() if isinstance(top, dict) else top:
            fields = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
            for k, v in fields.items():
                if not isinstance(v, str):
                    continue
                if k == "text":  # a rules document: printable lines, tables only as vpcq writes
                    lines = v.splitlines()
                    assert all(ln.isprintable() and ln.isascii() for ln in lines), v
                    assert sum(ln.startswith("*") for ln in lines) == sum(ln == "COMMIT" for ln in lines)
                elif k == "name" and type(r).__name__ == "Sysctl":
                    for part in v.split("/"):
                        _safe_name(part, False)
                elif k in ("name", "peer_name", "dev", "ns", "peer_ns", "master", "chain"):
                    _safe_name(v, k != "ns" and k != "peer_ns" and type(r).__name__ != "Netns")
                else:
                    assert v.isprintable(), (k, v)
        view = view_of(state, vpc)
        for s in state.vpcs[vpc].subnets.values():
            text = rules.subnet_rules(s)
            assert all(ln.isprintable() for ln in text.splitlines())
        filt, nat = rules.host_rules(view, "eth0")
        assert all(ln.isprintable() for ln in (*filt, *nat))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=_field("a", "my-vpc"), cidr=_field("10.0.0.0/16"), interface=_field(None, "eth0"),
       sname=_field("web", "db-1"), scidr=_field("10.0.1.0/24"), proto=_field("tcp", "udp"),
       port=_field(None, 80, "8000-8010"), rcidr=_field(None, "0.0.0.0/0", "10.1.2.3"),
       action=_field("allow", "deny"), app_port=_field(None, 8000))
def test_arbitrary_fields_are_refused_or_lead_to_safe_names_and_rules(
        name, cidr, interface, sname, scidr, proto, port, rcidr, action, app_port):
    state = given_state()
    rule = {"protocol": proto, "action": action, "port": port, "cidr": rcidr}
    steps: list[dict[str, Any]] = [
        {"kind": "create-vpc", "name": name, "cidr": cidr, "interface": interface},
        {"kind": "add-subnet", "vpc": name, "name": sname, "cidr": scidr},
        {"kind": "deploy-app", "vpc": name, "subnet": sname, "port": app_port},
    ]
    try:
        steps.append({"kind": "apply-firewall", "vpc": name, "subnet": sname,
                      "firewall": parse_firewall({"ingress": [{k: v for k, v in rule.items()
                                                               if v is not None}]})[0]})
    except DomainError:
        pass
    for d in steps:
        try:
            command = parse_command({k: v for k, v in d.items() if v is not None})
            state = apply(state, command)
        except DomainError:
            break  # refused, with a reason: nothing of it is in the state
    ACCEPTED.add(f"{len(state.vpcs)} vpc, {sum(len(v.subnets) for v in state.vpcs.values())} subnet")
    _check_topology(state)


ACCEPTED: set[str] = set()


def test_the_property_test_got_past_the_checks_too():
    """Arbitrary fields are mostly refused: some must pass, or the property says nothing."""
    test_arbitrary_fields_are_refused_or_lead_to_safe_names_and_rules()
    assert "0 vpc, 0 subnet" in ACCEPTED and "1 vpc, 1 subnet" in ACCEPTED, ACCEPTED


def test_a_commit_with_a_version_missing_for_an_event_is_refused():
    c = Commit(seq=1, command_id="c", correlation_id="c", actor="t@h", time="t", versions=(1,),
               events=(_subnet_event(),))
    data = json.loads(b'{"s":1,' + encode(c)[1:])
    data["v"] = [1, 1]
    with pytest.raises(BadEntry, match="1 events but 2 schema versions"):
        decode(json.dumps(data).encode())


def test_a_repair_record_without_a_correlation_id_reads_back():
    """Workers have always written their DriftRepaired with correlation "": old logs hold it."""
    from vpcq.events.schema import DriftRepaired

    c = Commit(seq=1, command_id="repair", correlation_id="", actor="w@h", time="t",
               versions=(1,), events=(DriftRepaired(vpcs=("a",), steps=("create netns a-web",)),))
    assert decode(b'{"s":1,' + encode(c)[1:]).correlation_id == ""


def _entry(seq: int, body: bytes | None = None, entry_id: bytes | None = None, n: int = 1):
    c = Commit(seq=seq, command_id=f"c{seq}", correlation_id="r", actor="t@h", time="t",
               versions=(1,) * n, events=(_subnet_event(),) * n)
    data = b'{"s":%d,' % seq + encode(c)[1:] if body is None else body
    return (b"%d-0" % seq if entry_id is None else entry_id), {b"c": data}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["good", "pair", "not-json", "id-zero-padded", "id-mismatch",
                                 "inside", "version-extra", "control", "old-layout"]),
                min_size=1, max_size=8))
def test_a_page_is_checked_as_entry_by_entry(kinds):
    """Reader.check_page's inline path gives what check() gives for each entry, in order,
    whatever mix of good and poisoned entries a page holds."""
    from vpcq.events.store import Reader

    page, seq = [], 1
    for kind in kinds:
        if kind == "good":
            page.append(_entry(seq))
        elif kind == "pair":
            page.append(_entry(seq, n=2))
            seq += 1
        elif kind == "not-json":
            page.append(_entry(seq, body=b"{not json"))
        elif kind == "id-zero-padded":
            page.append(_entry(seq, entry_id=b"0%d-0" % seq))
        elif kind == "id-mismatch":
            page.append(_entry(seq, entry_id=b"%d-0" % (seq + 7)))
        elif kind == "inside":
            page.append(_entry(max(seq - 1, 1)))  # starts inside the one before
        elif kind == "version-extra":
            entry_id, fields = _entry(seq)
            fields[b"c"] = fields[b"c"].replace(b'"v":[1]', b'"v":[1,1]')
            page.append((entry_id, fields))
        elif kind == "control":
            entry_id, fields = _entry(seq)
            fields[b"c"] = fields[b"c"].replace(b'"a":"t@h"', b'"a":"t@h\\u001b[2J"')
            page.append((entry_id, fields))
        else:
            page.append((b"%d-0" % seq, {b"e": b'{"type":"nothing"}'}))
        seq += 1
    one_by_one = Reader()
    expected = [one_by_one.check(entry_id, fields) for entry_id, fields in page]
    paged = Reader()  # the page as Redis sends it (EventStore._range)
    assert paged.check_page([(i, [x for kv in f.items() for x in kv]) for i, f in page]) == expected
    assert paged.last == one_by_one.last
