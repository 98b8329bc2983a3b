"""The console's pure parts: the scene fold, the topology, the layout, the exports, the
timeline. No Redis, no browser (those are tests/integration/test_console_api.py and
tests/kernel/test_console_browser.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given as hgiven
from hypothesis import settings
from hypothesis import strategies as st

from vpcq.console import export
from vpcq.console.layout import COL, draw
from vpcq.console.model import Facts, changes, topology
from vpcq.console.scene import SceneFolder, scene_of
from vpcq.console.timeline import Timeline, command_line
from vpcq.errors import DomainError
from vpcq.events.observed import Deleting, Health
from vpcq.events.schema import ChangeApplied, DriftRepaired, Envelope
from vpcq.orchestrator.decide import decide
from vpcq.orchestrator.evolve import fold
from vpcq.orchestrator.failure import fail
from vpcq.orchestrator.state import INITIAL, State, view_of

from .core import cmd, envelopes


class Log:
    """A log made as the orchestrator and the workers make it: decide, append, outcome."""

    def __init__(self) -> None:
        self.envs: list[Envelope] = []
        self.state: State = INITIAL
        self.states: list[State] = [INITIAL]  # the state after each event
        self.n = 0

    def _add(self, envs: list[Envelope]) -> None:
        for e in envs:
            self.state = fold(self.state, [e])
            self.states.append(self.state)
            self.envs.append(e)

    def command(self, kind: str, outcome: str = "applied", **args: Any) -> str:
        """Decide and append a command; then its outcome: applied, failed or pending."""
        cid = f"c{self.n}"
        self.n += 1
        self._add(envelopes(self.state, decide(cmd(kind, **args), self.state), cid))
        if outcome == "applied":
            self.applied(cid)
        elif outcome == "failed":
            self.failed(cid)
        return cid

    def applied(self, cid: str) -> None:
        vpcs = self.state.commands[cid].vpcs
        self._add(envelopes(self.state, [ChangeApplied(command_id=cid, vpcs=vpcs)], cid))

    def failed(self, cid: str, reason: str = "boom") -> None:
        def view_at(vpc: str, seq: int):  # type: ignore[no-untyped-def]
            return view_of(self.states[seq], vpc)

        pairs = fail(self.state, view_at, self.state.commands[cid], reason)
        self._add([Envelope(seq=self.state.seq + 1 + i, command_id=c, correlation_id="c", actor="w@h",
                            time="2026-01-01T00:00:01Z", event=ev) for i, (c, ev) in enumerate(pairs)])

    def event(self, ev: Any, cid: str = "repair") -> None:
        self._add(envelopes(self.state, [ev], cid))


NAMES, SUBS = ["a", "b", "c"], ["web", "db"]
# Every log starts with two VPCs with a subnet each: drawn at random, a create-vpc and an
# add-subnet of the same names rarely come in order, and nothing inside a VPC (an app, a
# balancer, a public port) is then reached. The fold from the empty log is still checked:
# the seed's own events come first.
SEED = [(0, 0, 0, 0, "applied"), (1, 0, 0, 0, "applied"), (0, 1, 0, 0, "applied"), (1, 1, 0, 1, "applied")]
steps = st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2), st.integers(0, 2), st.integers(0, 1),
                           st.sampled_from(["applied", "applied", "failed", "pending"])),
                 max_size=30).map(lambda s: SEED + s)


def random_log(spec: list[tuple[int, int, int, int, str]]) -> Log:
    log = Log()
    for kind, i, j, k, outcome in spec:
        vpc, other, sub = NAMES[i], NAMES[j], SUBS[k]
        kind_args = [
            ("create-vpc", {"name": vpc, "cidr": f"10.{i}.0.0/16"}),
            ("add-subnet", {"vpc": vpc, "name": sub, "cidr": f"10.{i}.{k + 1}.0/24", "type": "public"}),
            ("deploy-app", {"vpc": vpc, "subnet": sub, "port": 8000 + k}),
            ("stop-app", {"vpc": vpc, "subnet": sub}),
            ("peer-vpcs", {"a": vpc, "b": other}),
            ("unpeer-vpcs", {"a": vpc, "b": other}),
            ("delete-subnet", {"vpc": vpc, "name": sub}),
            ("delete-vpc", {"name": vpc}),
            ("create-lb", {"vpc": vpc, "name": "lb", "port": 80, "targets": [f"{sub}:9000"]}),
            ("delete-lb", {"vpc": vpc, "name": "lb"}),
            ("expose", {"vpc": vpc, "target": sub, "port": 8000, "host_port": 8000 + 10 * i + k}),
            ("unexpose", {"vpc": vpc, "host_port": 8000 + 10 * i + k}),
        ][kind]
        try:
            cid = log.command(kind_args[0], "pending", **kind_args[1])
        except DomainError:
            continue
        if outcome == "applied":
            log.applied(cid)
        elif outcome == "failed" and kind_args[0] not in ("stop-app", "unpeer-vpcs", "delete-subnet",
                                                          "delete-vpc", "delete-lb", "unexpose"):
            log.failed(cid)  # a deletion never fails: it is retried until done
    return log


# ---- the scene ----------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@hgiven(steps)
def test_the_scene_holds_the_state_the_orchestrator_folds(spec):
    log = random_log(spec)
    assert scene_of(log.envs).state == fold(INITIAL, log.envs)


@settings(max_examples=120, deadline=None)
@hgiven(steps)
def test_nothing_that_exists_moves_when_the_log_grows(spec):
    """Whatever happens next (a creation, a failure's restore, a deletion and its end), every
    object drawn before and after it is drawn at the same place."""
    log = random_log(spec)
    f = SceneFolder()
    before: dict[str, tuple[float, float]] = {}
    for env in log.envs:
        f.envelope(env)
        drawing = draw(topology(f.build()))
        now = {n.node.id: (n.box.left, n.box.top) for n in drawing.nodes}
        for oid in before.keys() & now.keys():
            assert before[oid] == now[oid], (oid, env.event)
        before = now


@settings(max_examples=60, deadline=None)
@hgiven(steps, st.integers(0, 200))
def test_a_scene_folded_from_a_checkpoint_is_the_scene_of_the_whole_fold(spec, cut):
    log = random_log(spec)
    cut = min(cut, len(log.envs))
    f = SceneFolder(scene_of(log.envs[:cut]))
    for env in log.envs[cut:]:
        f.envelope(env)
    assert f.build() == scene_of(log.envs)


def test_a_vpc_takes_the_lowest_free_column_and_a_subnet_the_lowest_free_cell():
    log = Log()
    for n, name in enumerate(["a", "b", "c"]):
        log.command("create-vpc", name=name, cidr=f"10.{n}.0.0/16")
    log.command("add-subnet", vpc="a", name="x", cidr="10.0.1.0/24")
    log.command("add-subnet", vpc="a", name="y", cidr="10.0.2.0/24")
    log.command("delete-vpc", name="b")
    log.command("delete-subnet", vpc="a", name="x")
    places = scene_of(log.envs).places
    assert dict(places.columns) == {"a": 0, "c": 2}
    log.command("create-vpc", name="d", cidr="10.3.0.0/16")
    log.command("add-subnet", vpc="a", name="z", cidr="10.0.3.0/24")
    places = scene_of(log.envs).places
    assert dict(places.columns) == {"a": 0, "c": 2, "d": 1}
    assert dict(places.cells["a"]) == {"subnet:a/y": 1, "subnet:a/z": 0}
    assert dict(places.hosts) == {"default": 0}


def test_a_deletion_is_drawn_as_deleting_until_its_outcome_with_its_progress():
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    log.command("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24", type="public")
    log.command("create-vpc", name="b", cidr="10.1.0.0/16")
    log.command("peer-vpcs", a="a", b="b")
    cid = log.command("delete-vpc", "pending", name="a")
    scene = scene_of(log.envs)
    assert "a" not in scene.state.vpcs  # the state forgets it at once; the picture does not
    g = {n.id: n for n in topology(scene).nodes}
    assert g["vpc:a"].status == g["subnet:a/web"].status == g["router:a"].status == "deleting"
    assert g["vpc:a"].notes[0].text == "deleting: delete-vpc"
    edges = {e.id: e for e in topology(scene).edges}
    assert edges["peering:a|b"].status == "deleting"
    progress = Deleting(2, ("netns a-web", "netns vpcq_a"), "EBUSY", 3, "t")
    g = {n.id: n for n in topology(scene, Facts({"default": 1}, {cid: progress})).nodes}
    assert g["vpc:a"].notes[0].text == "deleting: 2 left (netns a-web, netns vpcq_a); last error: EBUSY"
    log.applied(cid)
    g = {n.id: n for n in topology(scene_of(log.envs)).nodes}
    assert "vpc:a" not in g and "subnet:a/web" not in g and g["vpc:b"].status == "ok"


def test_a_pending_command_marks_what_it_changes_until_its_outcome():
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    cid = log.command("add-subnet", "pending", vpc="a", name="web", cidr="10.0.1.0/24")
    g = {n.id: n for n in topology(scene_of(log.envs)).nodes}
    assert g["subnet:a/web"].status == "pending" and g["vpc:a"].status == "ok"
    assert g["subnet:a/web"].notes[0].text == "pending: add-subnet"
    log.applied(cid)
    g = {n.id: n for n in topology(scene_of(log.envs)).nodes}
    assert g["subnet:a/web"].status == "ok" and g["subnet:a/web"].notes == ()


def test_a_failure_and_a_drift_repair_are_shown_on_what_they_concern_until_a_change_applies():
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    log.command("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24")
    log.command("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24")
    log.command("deploy-app", "failed", vpc="a", subnet="web", port=8000)
    log.event(DriftRepaired(vpcs=("a",), steps=("create app 8000 in a-db", "create veth vs-1 in vpcq_a")))
    g = {n.id: n for n in topology(scene_of(log.envs)).nodes}
    assert g["subnet:a/web"].lines[2].startswith("no app")  # the failed change was restored away
    vpc_notes = [(x.kind, x.text) for x in g["vpc:a"].notes]
    assert ("failed", "last change failed: boom") in vpc_notes
    assert ("drift", "drift repaired at 00:00:00: 1 step") in vpc_notes  # the router's step
    assert [x.lines for x in g["subnet:a/db"].notes] == [("create app 8000 in a-db",)]
    assert g["subnet:a/web"].notes == ()
    log.command("deploy-app", vpc="a", subnet="db", port=9000)
    g = {n.id: n for n in topology(scene_of(log.envs)).nodes}
    assert g["vpc:a"].notes == () and g["subnet:a/db"].notes == ()


def test_what_changed_between_two_pictures():
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    log.command("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24")
    log.command("create-vpc", name="gone", cidr="10.9.0.0/16")
    then = topology(scene_of(log.envs))
    log.command("deploy-app", vpc="a", subnet="web", port=8000)
    log.command("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24")
    log.command("delete-vpc", name="gone")
    now = topology(scene_of(log.envs))
    got = {(c.op, c.id): c.details for c in changes(then, now)}
    assert got == {
        ("changed", "subnet:a/web"): ("app: none → :8000",),
        ("added", "subnet:a/db"): (),
        ("removed", "vpc:gone"): (),
    }
    assert changes(now, now) == []


def _services() -> Log:
    """A VPC with two subnets, a balancer over both and a public port to it and to one."""
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    log.command("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24", type="public")
    log.command("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24")
    log.command("create-lb", vpc="a", name="front", port=80, targets=["web:9000", "db:9001"], public=8088)
    log.command("expose", vpc="a", target="web", port=8000, host_port=8080, protocol="udp")
    return log


UP = Health(True, "2026-01-01T00:00:05Z", "2026-01-01T00:00:09Z")
DOWN = Health(False, "2026-01-01T00:00:07Z", "2026-01-01T00:00:09Z", "connection refused")


def test_a_balancer_is_drawn_in_its_vpc_with_an_edge_to_each_target_coloured_by_its_health():
    scene = scene_of(_services().envs)
    lb = {n.id: n for n in topology(scene).nodes}["balancer:a/front"]
    address = scene.state.vpcs["a"].balancers["front"].address
    assert lb.kind == "balancer" and lb.title == "balancer front" and lb.vpc == "a"
    assert lb.lines[:2] == ("front.a.internal", f"{address}:80") and lb.status == "ok"
    # time travel: no health was observed in the past, so none is drawn
    past = {e.id: e for e in topology(scene).edges if e.kind == "target"}
    assert {(e.target, e.label, e.variant) for e in past.values()} == {
        ("subnet:a/web", ":9000", ""), ("subnet:a/db", ":9001", "")}
    # live: one up, one down with why; and one never checked in another picture
    facts = Facts({"default": 1}, health={"a": {"front": {"web:9000": UP, "db:9001": DOWN}}})
    g = topology(scene, facts)
    edges = {e.id: e for e in g.edges}
    assert (edges["target:a/front/web:9000"].label, edges["target:a/front/web:9000"].variant) == (":9000 up", "up")
    down = edges["target:a/front/db:9001"]
    assert (down.label, down.variant) == (":9001 down: connection refused", "down")
    assert ("health", "down since 2026-01-01T00:00:07Z: connection refused") in down.facts
    assert next(n for n in g.nodes if n.id == "balancer:a/front").lines[2] == "2 targets · 1 up · 1 down"
    unknown = topology(scene, Facts({"default": 1}, health={}))
    assert {e.label for e in unknown.edges if e.kind == "target"} == {":9000 unknown", ":9001 unknown"}
    looks = {de.edge.id: de.look.stroke for de in draw(g).edges}
    assert looks["target:a/front/web:9000"] != looks["target:a/front/db:9001"]  # green, red


def test_a_public_port_is_an_edge_from_the_host_to_what_it_reaches_until_it_is_removed():
    log = _services()
    edges = {e.id: e for e in topology(scene_of(log.envs)).edges if e.kind == "port"}
    assert {(e.source, e.target, e.label) for e in edges.values()} == {
        ("host:default", "balancer:a/front", "8088/tcp → front:80"),
        ("host:default", "subnet:a/web", "8080/udp → web:8000"),
    }
    cid = log.command("unexpose", "pending", vpc="a", host_port=8080, protocol="udp")
    edges = {e.id: e for e in topology(scene_of(log.envs)).edges if e.kind == "port"}
    assert edges["port:a/8080/udp"].status == "deleting"  # until the kernel lets it go
    log.applied(cid)
    cid = log.command("delete-lb", "pending", vpc="a", name="front")
    g = topology(scene_of(log.envs))
    assert {n.id: n.status for n in g.nodes}["balancer:a/front"] == "deleting"
    log.applied(cid)
    g = topology(scene_of(log.envs))
    assert not any(n.kind == "balancer" for n in g.nodes)
    assert not any(e.kind in ("port", "target") for e in g.edges)
    assert not any(oid.startswith(("balancer:", "port:", "target:")) for oid in scene_of(log.envs).places.cells["a"])


def test_a_balancer_takes_the_next_free_cell_and_nothing_drawn_moves():
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    log.command("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24", type="public")
    before = {n.node.id: n.box for n in draw(topology(scene_of(log.envs))).nodes}
    log.command("create-lb", vpc="a", name="front", port=80, targets=["web:9000"], public=8088)
    log.command("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24")
    scene = scene_of(log.envs)
    assert dict(scene.places.cells["a"]) == {"subnet:a/web": 0, "balancer:a/front": 1, "subnet:a/db": 2}
    after = {n.node.id: n.box for n in draw(topology(scene)).nodes}
    for oid, box in before.items():
        assert (after[oid].left, after[oid].top) == (box.left, box.top), oid


def test_the_exports_show_balancers_their_targets_health_and_public_ports():
    scene = scene_of(_services().envs)
    facts = Facts({"default": 1}, health={"a": {"front": {"web:9000": UP, "db:9001": DOWN}}})
    d = draw(topology(scene, facts))
    dot, mermaid = export.dot(d), export.mermaid(d)
    for text in (dot, mermaid):
        assert "front.a.internal" in text
        assert text.count("8088/tcp → front:80") == 1 and "8080/udp → web:8000" in text
    assert '"balancer:a/front" -- "subnet:a/db" [color="#f85149"' in dot
    assert 'label=":9001 down: connection refused"' in dot
    assert 'balancer_a_front ---|":9000 up"| subnet_a_web' in mermaid
    shown = " ".join(ET.fromstring(export.svg(d)).itertext())
    for text in ("balancer front", "front.a.internal", ":9000 up", "8088/tcp → front", "8080/udp → web"):
        assert text in shown, text
    assert "connection refused" in shown  # the full label, in its tooltip


# ---- layout and exports --------------------------------------------------------------------------


def _scenario() -> Log:
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    log.command("add-subnet", vpc="a", name="web", cidr="10.0.1.0/24", type="public")
    log.command("add-subnet", vpc="a", name="db", cidr="10.0.2.0/24")
    log.command("create-vpc", name="b", cidr="10.1.0.0/16")
    log.command("add-subnet", vpc="b", name="app", cidr="10.1.1.0/24", type="public")
    log.command("peer-vpcs", a="a", b="b")
    log.command("deploy-app", "failed", vpc="b", subnet="app", port=8000)
    return log


def _reason(log: Log, text: str) -> None:
    """A failure whose reason holds markup and quotes (the log is not trusted)."""
    cid = log.command("deploy-app", "pending", vpc="a", subnet="web", port=9000)
    log.failed(cid, text)


HOSTILE = '<script>alert("x")</script> & "quotes" \\N #35; |pipe| `tick` ]]> {x}'


def test_the_browser_gets_every_bend_of_every_edge_back_from_cytoscapes_terms():
    """cytoscape places a segment point at S + w (T - S) + d n, n the unit normal (-dy, dx)
    of the line between the two nodes' centres (edge-distances: node-position), and starts
    and ends the edge at the given endpoints: each edge's points come back exactly."""
    d = draw(topology(scene_of(_scenario().envs)))
    els = {e["data"]["id"]: e for e in export.elements(d)}
    boxes = {n.node.id: n.box for n in d.nodes}
    assert {e.edge.kind for e in d.edges} == {"egress", "uplink", "attach", "peering"}
    for de in d.edges:
        data = els[de.edge.id]["data"]
        s, t = boxes[de.edge.source], boxes[de.edge.target]
        sx, sy = (float(v.removesuffix("px")) for v in data["sep"].split())
        tx, ty = (float(v.removesuffix("px")) for v in data["tep"].split())
        pts = [(s.x + sx, s.y + sy)]
        if data["curve"] == "segments":
            dx, dy = t.x - s.x, t.y - s.y
            length = (dx * dx + dy * dy) ** 0.5
            for w, dist in zip(map(float, data["pw"].split()), map(float, data["pd"].split()), strict=True):
                pts.append((s.x + w * dx - dy / length * dist, s.y + w * dy + dx / length * dist))
        pts.append((t.x + tx, t.y + ty))
        assert len(pts) == len(de.points)
        for got, want in zip(pts, de.points, strict=True):
            assert abs(got[0] - want[0]) < 0.05 and abs(got[1] - want[1]) < 0.05, (de.edge.id, got, want)


def test_the_svg_is_one_well_formed_document_naming_everything_with_the_log_text_escaped():
    log = _scenario()
    _reason(log, HOSTILE)
    d = draw(topology(scene_of(log.envs)))
    text = export.svg(d)
    root = ET.fromstring(text)  # well-formed, whatever the log said
    shown = " ".join(t for t in root.itertext())
    for title in ("VPC a · 10.0.0.0/16", "VPC b · 10.1.0.0/16", "web", "db", "app", "internet",
                  "host default", "peered · "):
        assert title in shown, title
    assert HOSTILE in shown  # as text: the failure's reason, in the VPC's tooltip
    assert "<script" not in text and not root.findall(".//{http://www.w3.org/2000/svg}script")
    # every node is drawn where the layout put it
    rects = {(r.get("x"), r.get("y")) for r in root.iter("{http://www.w3.org/2000/svg}rect")}
    for n in d.nodes:
        if n.look.shape == "round-rectangle":
            assert (f"{n.box.left:.1f}", f"{n.box.top:.1f}") in rects, n.node.id


def test_graphviz_reads_the_dot_text_with_the_log_text_escaped():
    log = _scenario()
    _reason(log, HOSTILE)
    text = export.dot(draw(topology(scene_of(log.envs))))
    dot = shutil.which("dot")
    assert dot, "graphviz is installed by ./dev"
    for engine in (["dot"], ["neato", "-n2"]):  # graphviz's layout, and vpcq's positions
        p = subprocess.run([shutil.which(engine[0]) or engine[0], *engine[1:], "-Tsvg"], input=text,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        svg = ET.fromstring(p.stdout)
        shown = " ".join(svg.itertext())
        assert "router vpcq_a" in shown and "public · 10.0.1.0/24" in shown
        if engine == ["dot"]:  # it draws the clusters, and their labels: the VPC's failure
            assert HOSTILE in shown  # exactly what was escaped, back
    assert 'subgraph "cluster_vpc:a"' in text and 'subgraph "cluster_vpc:b"' in text


def test_the_mermaid_text_has_a_subgraph_per_vpc_and_no_raw_specials_in_labels():
    log = _scenario()
    _reason(log, HOSTILE)
    text = export.mermaid(draw(topology(scene_of(log.envs))))
    lines = text.splitlines()
    assert lines[0] == "flowchart TB"
    assert sum(line.strip().startswith("subgraph ") for line in lines) == 2
    assert sum(line.strip() == "end" for line in lines) == 2
    for label in re.findall(r'"([^"]*)"', text):  # every label is one quoted run: no raw quote
        plain = label.replace("<br/>", "")
        assert not set(plain) & set('<>|`[]{}()'), label
        assert "#" not in re.sub(r"#\d+;", "", plain), label
    assert "router_a --- host_default" in text and "router_a ===|" in text
    assert "#60;script#62;" in text  # the hostile reason, as entity codes


def test_a_host_without_a_worker_says_so_and_a_known_count_is_shown():
    scene = scene_of(_scenario().envs)
    host = next(n for n in topology(scene, Facts({"default": 0})).nodes if n.kind == "host")
    assert host.notes[0].text.startswith("no worker is up")
    host = next(n for n in topology(scene, Facts({"default": 2})).nodes if n.kind == "host")
    assert host.lines == ("2 workers up",) and host.notes == ()
    assert next(n for n in topology(scene).nodes if n.kind == "host").lines == ()  # not known


def test_columns_are_a_fixed_pitch_apart():
    d = draw(topology(scene_of(_scenario().envs)))
    boxes = {n.node.id: n.box for n in d.nodes}
    assert boxes["vpc:b"].left - boxes["vpc:a"].left == COL


# ---- the timeline ------------------------------------------------------------------------------------


def test_the_timeline_has_a_command_a_line_with_its_outcome_and_where_its_events_are():
    log = _scenario()
    tl = Timeline()
    for env in log.envs:
        tl.envelope(env)
    log.event(DriftRepaired(vpcs=("a",), steps=("x",)))
    tl.envelope(log.envs[-1])
    kinds = [(e.kind, e.outcome) for e in tl.entries]
    assert kinds == [("create-vpc", "applied"), ("add-subnet", "applied"), ("add-subnet", "applied"),
                     ("create-vpc", "applied"), ("add-subnet", "applied"), ("peer-vpcs", "applied"),
                     ("deploy-app", "failed"), ("drift-repair", "applied")]
    failed = tl.entries[6]
    assert failed.reason == "boom" and failed.what() == "deploy-app b app --port 8000"
    for e in tl.entries[:-1]:  # its runs are exactly where its events are
        mine = [env.seq for env in log.envs if env.command_id == e.command_id]
        assert [s for lo, hi in e.runs for s in range(lo, hi + 1)] == mine
    assert [e.kind for e in tl.page(vpc="b", limit=3)] == ["deploy-app", "peer-vpcs", "add-subnet"]
    assert [e.seq for e in tl.page(before=tl.entries[2].seq)] == [tl.entries[1].seq, tl.entries[0].seq]
    assert tl.vpcs() == ["a", "b"]
    assert [e.host for e in tl.entries] == ["default"] * 7 + [None]  # CommandAccepted.host


def test_a_cancelled_command_names_the_failure_it_depended_on():
    log = Log()
    log.command("create-vpc", name="a", cidr="10.0.0.0/16")
    first = log.command("add-subnet", "pending", vpc="a", name="web", cidr="10.0.1.0/24")
    log.command("deploy-app", "pending", vpc="a", subnet="web")
    log.failed(first)
    tl = Timeline()
    for env in log.envs:
        tl.envelope(env)
    assert (tl.entries[2].outcome, tl.entries[2].caused_by) == ("failed", first)


def test_a_command_reads_as_it_is_typed():
    assert command_line("add-subnet", {"vpc": "a", "name": "web", "cidr": "10.0.1.0/24", "type": "public"}) \
        == "add-subnet a web 10.0.1.0/24 --type public"
    assert command_line("create-vpc", {"name": "a", "cidr": "10.0.0.0/16", "interface": None,
                                       "host": "default"}) == "create-vpc a 10.0.0.0/16"
    assert command_line("apply-firewall", {"vpc": "a", "subnet": "web", "firewall": "<file>",
                                           "file_subnet": None}) == "apply-firewall a web RULES"
    assert command_line("rollback", {"vpc": "a", "to_seq": 4}) == "rollback a --to 4"


def test_every_file_the_page_loads_is_package_data_so_an_installed_vpcq_serves_it():
    import tomllib
    from pathlib import Path

    from vpcq.console import web

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = web.STATIC.parent
    packaged = {p for g in globs["vpcq.console"] for p in package.glob(g) if p.is_file()}
    assert {p for p in web.STATIC.rglob("*") if p.is_file()} == packaged  # setuptools' globs
    page = (web.STATIC / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="/static/([^"]+)"', page)
    assert set(loaded) == {"favicon.svg", "console.css", "cytoscape.min.js", "console.js"}
    assert all((web.STATIC / f).is_file() for f in loaded)
    assert (web.STATIC / "cytoscape.LICENSE").read_text().startswith("Copyright (c) 2016-2026, The Cytoscape")
