"""The fold: snapshots, determinism, outcomes, failure and rollback bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given as hgiven
from hypothesis import settings
from hypothesis import strategies as st

from vpcq.errors import DomainError
from vpcq.events.schema import COMMIT, ChangeFailed, Envelope, VpcRestored, commits_of
from vpcq.events.store import decode, decode_entry, stored
from vpcq.events.upcast import UPCASTERS
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import fold, fold_commits
from vpcq.orchestrator.failure import fail
from vpcq.orchestrator.snapshot import dump_state, load_state
from vpcq.orchestrator.state import INITIAL, State, view_of

from .core import apply, cmd, envelopes, given, pairs_envelopes

FIXTURES = Path(__file__).parent / "fixtures"

NAMES = ["a", "b", "c"]
SUBS = ["web", "db"]


def _command(draw_kind: int, i: int, j: int, k: int):
    vpc, other, sub = NAMES[i], NAMES[j], SUBS[k]
    return [
        cmd("create-vpc", name=vpc, cidr=f"10.{i}.0.0/16"),
        cmd("add-subnet", vpc=vpc, name=sub, cidr=f"10.{i}.{k + 1}.0/24", type="public"),
        cmd("deploy-app", vpc=vpc, subnet=sub, port=8000 + k),
        cmd("stop-app", vpc=vpc, subnet=sub),
        cmd("peer-vpcs", a=vpc, b=other),
        cmd("unpeer-vpcs", a=vpc, b=other),
        cmd("delete-subnet", vpc=vpc, name=sub),
        cmd("delete-vpc", name=vpc),
        cmd("create-vpc", name=vpc, cidr="10.0.0.0/16"),  # may overlap
    ][draw_kind]


commands = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 2), st.integers(0, 2), st.integers(0, 1),
              st.booleans()),
    max_size=40,
)


def _log(spec) -> list[Envelope]:
    """A log built by deciding random commands (rejected ones are skipped, as submit does)."""
    state, log = INITIAL, []
    for n, (kind, i, j, k, applied) in enumerate(spec):
        try:
            events = decide(_command(kind, i, j, k), state)
        except DomainError:
            continue
        envs = envelopes(state, events, f"c{n}")
        state = fold(state, envs)
        log += envs
        if applied:
            from vpcq.events.schema import ChangeApplied

            done = envelopes(state, [ChangeApplied(command_id=f"c{n}", vpcs=events[0].vpcs)], f"c{n}")
            state = fold(state, done)
            log += done
    return log


@settings(max_examples=150, deadline=None)
@hgiven(commands, st.integers(0, 200))
def test_snapshot_plus_tail_equals_full_replay(spec, cut):
    log = _log(spec)
    cut = min(cut, len(log))
    full = fold(INITIAL, log)
    snap = load_state(dump_state(fold(INITIAL, log[:cut])))
    assert fold(snap, log[cut:]) == full


@settings(max_examples=100, deadline=None)
@hgiven(commands)
def test_replay_is_deterministic_and_survives_the_store_encoding(spec):
    log = _log(spec)
    for c in commits_of(log):  # what vpcq writes takes decode's strict fast path
        assert COMMIT.validate_json(stored(c), strict=True).events == c.events
    commits = [decode(stored(c)) for c in commits_of(log)]
    again = [env for c in commits for env in c.envelopes()]
    assert again == log
    assert fold(INITIAL, again) == fold(INITIAL, log)
    assert fold_commits(INITIAL, commits) == fold(INITIAL, log)
    assert fold(INITIAL, log) == fold(INITIAL, log)


@settings(max_examples=50, deadline=None)
@hgiven(commands, st.integers(0, 40), st.integers(0, 40))
def test_a_commit_clipped_to_a_range_holds_exactly_the_events_in_it(spec, after, upto):
    log = _log(spec)
    clipped = [c.clip(after, upto) for c in commits_of(log)]
    got = [env for c in clipped if c is not None for env in c.envelopes()]
    assert got == [e for e in log if after < e.seq <= upto]


def test_commits_group_a_command_and_keep_outcomes_alone():
    state = INITIAL
    events = decide(cmd("create-vpc", name="a", cidr="10.0.0.0/16"), state)
    log = envelopes(state, events, "x")
    log += envelopes(fold(state, log), [ChangeFailed(command_id="x", vpcs=("a",), reason="r")], "x")
    assert [[e.type for e in c.events] for c in commits_of(log)] == [
        ["CommandAccepted", "VpcCreated"], ["ChangeFailed"]]
    assert [c.seq for c in commits_of(log)] == [1, 3]


@settings(max_examples=100, deadline=None)
@hgiven(commands)
def test_one_at_a_time_equals_batch_fold(spec):
    log = _log(spec)
    state = INITIAL
    for env in log:
        state = fold(state, [env])
    assert state == fold(INITIAL, log)


def test_evolve_never_mutates_its_input():
    state = given(cmd("create-vpc", name="a", cidr="10.0.0.0/16"))
    before = dump_state(state)
    apply(state, cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"))
    assert dump_state(state) == before


def test_a_command_is_pending_until_a_worker_reports():
    state = apply(INITIAL, cmd("create-vpc", name="a", cidr="10.0.0.0/16"), "x", applied=False)
    assert state.pending == ("x",) and state.commands["x"].status == "pending"
    assert state.commands["x"].last_seq == 2
    done = apply(INITIAL, cmd("create-vpc", name="a", cidr="10.0.0.0/16"), "x")
    assert done.pending == () and done.commands == {}  # finished: it is in the log, not here


def _pending(*commands) -> tuple[State, dict[str, list]]:
    state = INITIAL
    history: dict[str, list] = {}
    for n, c in enumerate(commands):
        state = apply(state, c, f"c{n}", applied=n == 0)
        for v in state.vpcs:
            history.setdefault(v, []).append((state.seq, view_of(state, v)))
    return state, history


def _view_at(history):
    from vpcq.orchestrator.state import VpcView

    def view_at(vpc, seq):
        best = VpcView(None)
        for s, v in history.get(vpc, []):
            if s <= seq:
                best = v
        return best

    return view_at


def test_a_failure_cancels_later_commands_on_the_same_vpc_and_restores_it():
    state, history = _pending(
        cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
        cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"),
        cmd("deploy-app", vpc="a", subnet="web"),
        cmd("create-vpc", name="b", cidr="10.1.0.0/16"),
    )
    failed = state.commands["c1"]
    pairs = fail(state, _view_at(history), failed, "boom")
    events = [e for _cid, e in pairs]
    fails = [e for e in events if isinstance(e, ChangeFailed)]
    assert [(e.command_id, e.caused_by) for e in fails] == [("c1", None), ("c2", "c1")]
    (restored,) = [e for e in events if isinstance(e, VpcRestored)]
    assert restored.vpc == "a" and restored.to_seq == failed.seq - 1
    after = fold(state, pairs_envelopes(state, pairs))
    assert after.vpcs["a"].subnets == {}
    assert "b" in after.vpcs and after.pending == ("c3",) and list(after.commands) == ["c3"]
    assert fails[0].reason == "boom"


def test_a_failed_peering_restores_both_sides():
    state, history = _pending(
        cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
        cmd("create-vpc", name="b", cidr="10.1.0.0/16"),
        cmd("peer-vpcs", a="a", b="b"),
    )
    pairs = fail(state, _view_at(history), state.commands["c2"], "no")
    assert {e.vpc for _cid, e in pairs if isinstance(e, VpcRestored)} == {"a", "b"}
    after = fold(state, pairs_envelopes(state, pairs))
    assert not after.peerings and set(after.vpcs) == {"a", "b"}


def test_a_later_deletion_is_not_cancelled_by_a_failure_but_decided_again():
    state, history = _pending(
        cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
        cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"),
        cmd("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24"),
        cmd("delete-vpc", name="a"),
    )
    pairs = fail(state, _view_at(history), state.commands["c1"], "boom")
    fails = [(e.command_id, e.caused_by) for _cid, e in pairs if isinstance(e, ChangeFailed)]
    assert fails == [("c1", None), ("c2", "c1")]  # the change after it is cancelled; not c3
    redecided = [(cid, type(e).__name__) for cid, e in pairs if cid == "c3"]
    assert redecided == [("c3", "CommandRedecided"), ("c3", "VpcDeleted")]
    after = fold(state, pairs_envelopes(state, pairs))
    assert "a" not in after.vpcs  # the user's deletion stands: the VPC is not brought back
    assert after.pending == ("c3",)
    assert after.commands["c3"].last_seq == after.seq  # its target is the decision made again


def test_a_deletion_of_what_only_a_cancelled_change_made_is_decided_to_nothing():
    state, history = _pending(
        cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
        cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"),
        cmd("delete-subnet", vpc="a", name="web"),
    )
    pairs = fail(state, _view_at(history), state.commands["c1"], "boom")
    assert [(cid, type(e).__name__) for cid, e in pairs if cid == "c2"] == [("c2", "CommandRedecided")]
    after = fold(state, pairs_envelopes(state, pairs))
    assert after.vpcs["a"].subnets == {} and after.pending == ("c2",)  # its job records it


def test_a_cleanup_decided_again_deletes_what_it_deleted_then_and_nothing_made_after():
    state, history = _pending(
        cmd("create-vpc", name="a", cidr="10.0.0.0/16"),
        cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"),
        cmd("cleanup"),
        cmd("create-vpc", name="c", cidr="10.2.0.0/16"),
    )
    pairs = fail(state, _view_at(history), state.commands["c1"], "boom")
    assert not [cid for cid, e in pairs if isinstance(e, ChangeFailed) and cid in ("c2", "c3")]
    after = fold(state, pairs_envelopes(state, pairs))
    assert set(after.vpcs) == {"c"} and after.pending == ("c2", "c3")


def test_rollback_appends_a_restore_of_the_past_state():
    state = given(cmd("create-vpc", name="a", cidr="10.0.0.0/16"))
    past = state
    state = apply(state, cmd("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24"))
    state = apply(state, cmd("deploy-app", vpc="a", subnet="web"))
    _, restored = decide(cmd("rollback", vpc="a", to_seq=past.seq), state, past)
    assert isinstance(restored, VpcRestored)
    events = decide(cmd("rollback", vpc="a", to_seq=past.seq), state, past)
    after = fold(state, envelopes(state, events, "rb"))
    assert after.vpcs["a"] == past.vpcs["a"]


def test_upcasters_lift_a_stored_v1_event_on_read(monkeypatch):
    from vpcq.events import schema

    raw = json.loads((FIXTURES / "subnet_added_v0.json").read_text())
    monkeypatch.setitem(schema.SCHEMA_VERSIONS, "SubnetAdded", 1)

    def v0_to_v1(event):
        event = dict(event)
        event["public"] = event.pop("subnet_type") == "public"
        return event

    monkeypatch.setitem(UPCASTERS, ("SubnetAdded", 0), v0_to_v1)
    (env,) = decode_entry(b"7-0", {b"e": json.dumps(raw).encode()}).envelopes()
    assert env.seq == 7 and env.event.public is True and env.schema_version == 1


def test_upcasters_lift_an_old_event_inside_a_commit(monkeypatch):
    from vpcq.events import schema

    raw = (FIXTURES / "commit_subnet_added_v0.json").read_bytes()
    monkeypatch.setitem(schema.SCHEMA_VERSIONS, "SubnetAdded", 1)
    monkeypatch.setitem(UPCASTERS, ("SubnetAdded", 0), _v0_to_v1)
    c = decode_entry(b"7-0", {b"c": raw})
    assert c.seq == 7 and c.versions == (1, 1) and c.events[1].public is True
    after = fold_commits(given(cmd("create-vpc", name="a", cidr="10.0.0.0/16")), [c])
    assert after.commands["c1"].last_seq == 8 and after.vpcs["a"].subnets["web"].public


def _v0_to_v1(event):
    event = dict(event)
    event["public"] = event.pop("subnet_type") == "public"
    return event


def test_a_log_written_before_commands_named_their_host_folds_to_the_hosts_decide_chooses():
    """tests/unit/fixtures/log_before_hosts.jsonl was written by vpcq at 6401e14: b made on
    edge-1 and deleted; a made on edge-1, then (pending) deleted there, made again on the
    default host and given a subnet; b rolled back to when it was on edge-1."""
    lines = (FIXTURES / "log_before_hosts.jsonl").read_bytes().splitlines()
    commits = [decode(line) for line in lines]
    assert all(c.events[0].host is None for c in commits if c.events[0].type == "CommandAccepted")
    state = fold_commits(INITIAL, commits)
    hosts = {cid: (r.kind, r.host) for cid, r in state.commands.items()}
    assert hosts == {"c5": ("delete-vpc", "edge-1"), "c6": ("create-vpc", "default"),
                     "c7": ("add-subnet", "default"), "c8": ("rollback", "edge-1")}
    # the same, folded one event at a time as a worker's cache does
    envs = [env for c in commits for env in c.envelopes()]
    assert fold(INITIAL, envs).commands == state.commands
    assert load_state(dump_state(state)) == state
