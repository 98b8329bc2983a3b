"""draw(graph) -> Drawing: where every node, text and edge goes, and how each looks. Pure.

One drawing feeds both renderers: the browser (cytoscape.js, `preset` positions and edges
bent through the points given here) and `vpcq graph --format svg`, so the two show the same
picture. Coordinates are pixels, y downwards, node boxes by their centre.

    internet                          (above the host rows)
    ═══ host default ══════════════   one bar per host, spanning every column
    ┌ VPC a ─────────┐ ┌ VPC b ────   one column per VPC, in its placement's order
    │ (R) router     │ │ (R) ...      the router, its uplink going up to its host's bar
    │  ├─[ subnet ]  │ │  ├─[ ... ]   a grid of cells below it, one object a cell, on the
    │  └─[ subnet ]  │ │               router's bus; a peering arcs above, router to router
    │  └─[ balancer ]┐│               a balancer is a cell too, its targets run beside the
                                      cells; a public port comes down from its host's bar
                                      in the gap right of its target's column

A column's place depends only on its index and a cell's only on its VPC's column and its
own index, so nothing moves when something is added: the layout has no global pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from vpcq.console.model import Edge, Graph, Node, Note

Point = tuple[float, float]

COL = 390  # a VPC column's pitch
BOX_W = 340  # a VPC box's width
HOST_Y0 = 40  # the centre of the first host's bar
HOST_H = 40
HOST_STEP = 52  # the next host's bar is this much higher
VPC_TOP = 150
ROUTER_X, ROUTER_Y, ROUTER_R = 32, 76, 17  # in a VPC box
CELL_LEFT, CELLS_TOP = 60, 124  # in a VPC box
CELL_W, CELL_H, CELL_STEP = 264, 86, 98
INTERNET_X, INTERNET_W, INTERNET_H = 90, 150, 44
LINE = 14  # line height of body text

# Characters that fit on one line (the body font is monospace, so this is a width).
FIT_CELL, FIT_WIDE = 36, 40
TEXT_X = 58  # where a VPC's and its router's texts start, right of the uplink
TARGET_X = 6  # a balancer's targets run this far right of the cells
LANE = 4  # and each next one (of up to three lanes) this much farther
PORT_X = 36  # a public port comes down this far right of the cells (in the gap between VPCs)
FIT_GAP = 8  # characters of an edge's label that fit right of the cells


class Box(NamedTuple):
    x: float  # centre
    y: float
    w: float
    h: float

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def top(self) -> float:
        return self.y - self.h / 2


Role = Literal["title", "body", "label", "failed", "drift", "deleting", "pending", "warning"]


class Text(NamedTuple):
    x: float  # the left end of each line (align left) or its centre (align center)
    y: float  # the centre of the first line
    lines: tuple[str, ...]
    role: Role
    align: Literal["left", "center"] = "left"
    tooltip: tuple[str, ...] = ()  # the full text of a note cut to fit


class Look(NamedTuple):
    shape: str  # round-rectangle, ellipse (cytoscape's names)
    fill: str
    stroke: str
    width: float
    dash: bool
    opacity: float
    z: int


class TextLook(NamedTuple):
    size: float
    weight: Literal["normal", "bold"]
    color: str
    family: Literal["sans", "mono"]


@dataclass(frozen=True, slots=True)
class DrawnNode:
    node: Node
    box: Box
    look: Look
    texts: tuple[Text, ...]


@dataclass(frozen=True, slots=True)
class DrawnEdge:
    edge: Edge
    points: tuple[Point, ...]  # a polyline
    look: Look
    texts: tuple[Text, ...]


@dataclass(frozen=True, slots=True)
class Drawing:
    graph: Graph
    nodes: tuple[DrawnNode, ...]
    edges: tuple[DrawnEdge, ...]
    bounds: tuple[float, float, float, float]  # x0, y0, x1, y1


# ---- looks ----------------------------------------------------------------------------------

BACKGROUND = "#0d1117"
LOOKS: dict[str, Look] = {  # by kind, or kind/variant
    "internet": Look("ellipse", "#0f2236", "#388bfd", 1.5, False, 1.0, 3),
    "host": Look("round-rectangle", "#161b22", "#3d4b5c", 1.5, False, 1.0, 1),
    "vpc": Look("round-rectangle", "#10151c", "#30363d", 1.5, False, 1.0, 1),
    "router": Look("ellipse", "#2b230b", "#d29922", 2.0, False, 1.0, 3),
    "subnet/public": Look("round-rectangle", "#0e2016", "#2ea043", 1.5, False, 1.0, 3),
    "subnet/private": Look("round-rectangle", "#0c1a2e", "#388bfd", 1.5, False, 1.0, 3),
    "egress": Look("", "", "#388bfd", 1.5, True, 0.8, 2),
    "uplink": Look("", "", "#8b949e", 1.5, False, 1.0, 2),
    "attach": Look("", "", "#6e7681", 1.5, False, 1.0, 2),
    "peering": Look("", "", "#a371f7", 2.5, False, 1.0, 2),
    "balancer": Look("round-rectangle", "#1f1630", "#a371f7", 1.5, False, 1.0, 3),
    "target": Look("", "", "#8b949e", 1.5, False, 1.0, 2),  # health not known (the past)
    "target/up": Look("", "", "#2ea043", 1.5, False, 1.0, 2),
    "target/down": Look("", "", "#f85149", 2.0, False, 1.0, 2),
    "target/unknown": Look("", "", "#8b949e", 1.5, True, 1.0, 2),
    "port": Look("", "", "#d2a8ff", 1.5, False, 1.0, 2),
}
STATUS_STROKE = {"pending": "#d29922", "deleting": "#f85149"}
NOTE_STROKE = {"failed": "#f85149", "drift": "#db6d28"}
TEXT_LOOKS: dict[str, TextLook] = {
    "title": TextLook(12, "bold", "#e6edf3", "sans"),
    "body": TextLook(11, "normal", "#9da7b3", "mono"),
    "label": TextLook(11, "normal", "#c9a7ff", "sans"),
    "failed": TextLook(11, "bold", "#ff7b72", "sans"),
    "deleting": TextLook(11, "bold", "#ff7b72", "sans"),
    "drift": TextLook(11, "bold", "#ffa657", "sans"),
    "pending": TextLook(11, "bold", "#e3b341", "sans"),
    "warning": TextLook(11, "bold", "#e3b341", "sans"),
}
FONTS = {"sans": "DejaVu Sans, Verdana, sans-serif", "mono": "DejaVu Sans Mono, Menlo, monospace"}


def look_of(kind: str, variant: str, status: str, notes: Iterable[Note]) -> Look:
    base = LOOKS.get(f"{kind}/{variant}") or LOOKS.get(kind) or LOOKS["vpc"]
    stroke, width, dash, opacity = base.stroke, base.width, base.dash, base.opacity
    for n in notes:
        if n.kind in NOTE_STROKE:
            stroke, width = NOTE_STROKE[n.kind], max(width, 2.0)
            break
    if status in STATUS_STROKE:
        stroke, dash = STATUS_STROKE[status], True
        opacity = 0.6 if status == "deleting" else opacity
    return base._replace(stroke=stroke, width=width, dash=dash, opacity=opacity)


# ---- geometry ---------------------------------------------------------------------------------


def draw(graph: Graph) -> Drawing:
    """Every node's box and texts, every edge's route, and the bounds of it all."""
    rows: dict[str, int] = {}  # VPC -> rows of its grid
    for n in graph.nodes:
        if n.spot.band == "cell" and n.vpc is not None:
            rows[n.vpc] = max(rows.get(n.vpc, 0), n.spot.cell + 1)
    width = max(graph.columns, 1) * COL - (COL - BOX_W)
    hosts = max(graph.hosts, 1)
    boxes: dict[str, Box] = {}
    nodes: list[DrawnNode] = []
    for n in graph.nodes:
        box, texts = _place(n, width, hosts, rows.get(n.vpc or "", 0))
        boxes[n.id] = box
        nodes.append(DrawnNode(n, box, look_of(n.kind, n.variant, n.status, n.notes), texts))
    lanes: dict[tuple[str, tuple[str, ...]], int] = {}  # a VPC's balancers' targets, its ports
    edges = []
    for e in graph.edges:
        if e.source in boxes and e.target in boxes:
            lane = lanes.get((e.kind, e.vpcs), 0)
            lanes[(e.kind, e.vpcs)] = lane + 1
            edges.append(_route(e, boxes, lane))
    return Drawing(graph, tuple(nodes), tuple(edges), _bounds(nodes, edges))


def _column_left(column: int) -> float:
    return column * COL


def _vpc_height(rows: int) -> float:
    return 112 if rows == 0 else CELLS_TOP + (rows - 1) * CELL_STEP + CELL_H + 14


def _place(n: Node, width: float, hosts: int, rows: int) -> tuple[Box, tuple[Text, ...]]:
    s = n.spot
    notes = _note_texts(n.notes)
    if s.band == "internet":
        y = HOST_Y0 - (hosts - 1) * HOST_STEP - HOST_H / 2 - 46
        title = Text(INTERNET_X, y, (n.title,), "title", "center")
        return Box(INTERNET_X, y, INTERNET_W, INTERNET_H), (title,)
    if s.band == "host":
        y = HOST_Y0 - s.column * HOST_STEP
        fit = int((width - 28) / 7)
        texts = [Text(14, y - 8, (_fit(n.title, fit),), "title")]
        if notes:
            lines, role, tip = notes[0]
            texts.append(Text(14, y + 9, (_fit(lines[0], fit),), role, "left", tip))
        elif n.lines:
            texts.append(Text(14, y + 9, (_fit(n.lines[0], fit),), "body"))
        return Box(width / 2, y, width, HOST_H), tuple(texts)
    left = _column_left(s.column)
    if s.band == "vpc":
        h = _vpc_height(rows)
        texts = [Text(left + TEXT_X, VPC_TOP + 17, (_fit(n.title, FIT_WIDE - 2),), "title")]
        extra: list[tuple[tuple[str, ...], Role, tuple[str, ...]]] = (
            [(n.lines, "body", ())] if n.lines else [])
        y = VPC_TOP + 35
        for lines, role, tip in [*extra, *notes][:2]:  # room for two lines under the title
            texts.append(Text(left + TEXT_X, y, tuple(_fit(x, FIT_WIDE) for x in lines), role, "left", tip))
            y += LINE + 2
        return Box(left + BOX_W / 2, VPC_TOP + h / 2, BOX_W, h), tuple(texts)
    if s.band == "router":
        x, y = left + ROUTER_X, VPC_TOP + ROUTER_Y
        tx = left + TEXT_X
        return Box(x, y, 2 * ROUTER_R, 2 * ROUTER_R), (
            Text(tx, y - 8, (_fit(n.title, FIT_WIDE - 6),), "title"),
            Text(tx, y + 8, tuple(_fit(x, FIT_WIDE - 4) for x in n.lines), "body"),
        )
    top = VPC_TOP + CELLS_TOP + s.cell * CELL_STEP
    cl = left + CELL_LEFT
    texts = [Text(cl + 12, top + 15, (_fit(n.title, FIT_CELL - 4),), "title"),
             Text(cl + 12, top + 33, tuple(_fit(x, FIT_CELL) for x in n.lines[:3]), "body")]
    for lines, role, tip in notes[:1]:
        more = f" (+{len(notes) - 1})" if len(notes) > 1 else ""
        texts.append(Text(cl + 12, top + 33 + 3 * LINE, (_fit(lines[0], FIT_CELL - len(more)) + more,),
                          role, "left", tip + tuple(t for _l, _r, ts in notes[1:] for t in ts)))
    return Box(cl + CELL_W / 2, top + CELL_H / 2, CELL_W, CELL_H), tuple(texts)


def _note_texts(notes: Iterable[Note]) -> list[tuple[tuple[str, ...], Role, tuple[str, ...]]]:
    return [((n.text,), n.kind, (n.text, *n.lines)) for n in notes]


def _fit(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _route(e: Edge, boxes: dict[str, Box], lane: int = 0) -> DrawnEdge:
    """An edge's route; `lane` is its index among its VPC's edges of its kind, so that a
    VPC's target and port edges run side by side, not on top of each other."""
    s, t = boxes[e.source], boxes[e.target]
    look = look_of(e.kind, e.variant, e.status, e.notes)
    texts: tuple[Text, ...] = ()
    if e.kind == "attach":  # down the router's bus, then into the cell's left side
        pts: tuple[Point, ...] = ((s.x, s.y + s.h / 2), (s.x, t.y), (t.left, t.y))
        return DrawnEdge(e, pts, look, texts)
    if e.kind in ("uplink", "egress"):  # straight up (or down) to the bar
        x = s.x if e.kind == "uplink" else INTERNET_X
        up = t.y < s.y
        start = (x, s.y - s.h / 2 if up else s.y + s.h / 2)
        end = (x, t.y + t.h / 2 if up else t.y - t.h / 2)
        return DrawnEdge(e, (start, end), look, texts)
    if e.kind == "peering":
        pts, apex = _peering_route(s, t)
        label = (Text(apex[0], apex[1] - 9, (e.label,), "label", "center"),) if e.label else ()
        return DrawnEdge(e, pts, look, label)
    if e.kind == "target":  # out of the balancer's right side, down (or up) its column, in
        x = s.left + s.w + TARGET_X + LANE * (lane % 3)
        pts = ((s.left + s.w, s.y), (x, s.y), (x, t.y), (t.left + t.w, t.y))
        tag = Text(x + 4, t.y - 8, (_fit(e.label, FIT_GAP),), "label", "left", (e.label,))
        return DrawnEdge(e, pts, look, (tag,) if e.label else ())
    if e.kind == "port":  # down from the host's bar in the gap right of the column, in
        x = t.left + t.w + PORT_X + LANE * (lane % 3)
        top = s.y + s.h / 2
        pts = ((x, top), (x, t.y + 8), (t.left + t.w, t.y + 8))
        y = top + 10 + LINE * (lane % 5)  # stacked under the host's bar, above the VPC boxes
        tag = Text(x + 4, y, (_fit(e.label, FIT_GAP + 6),), "label", "left", (e.label,))
        return DrawnEdge(e, pts, look, (tag,))
    return DrawnEdge(e, ((s.x, s.y), (t.x, t.y)), look, texts)


ARC_STEPS = 16  # an arc is drawn as this many straight pieces (both renderers draw polylines)


def _peering_route(s: Box, t: Box) -> tuple[tuple[Point, ...], Point]:
    """Up out of the source router's box beside its uplink, an arc above the VPC boxes
    (higher the farther apart the two are, up to 5 columns), down into the target's;
    and the arc's apex (for the label)."""
    k = 9.0  # right of the uplink, left of the texts
    dy = (ROUTER_R**2 - k**2) ** 0.5
    x0, x1 = s.x + k, t.x + k
    d = min(max(round(abs(x1 - x0) / COL), 1), 5)
    apex_y = VPC_TOP - 22 - 12 * (d - 1)
    ctrl_y = 2 * apex_y - VPC_TOP  # a quadratic through the apex at its middle
    arc = [((1 - u) ** 2 * x0 + 2 * (1 - u) * u * (x0 + x1) / 2 + u * u * x1,
            (1 - u) ** 2 * VPC_TOP + 2 * (1 - u) * u * ctrl_y + u * u * VPC_TOP)
           for u in (i / ARC_STEPS for i in range(ARC_STEPS + 1))]
    pts = ((x0, s.y - dy), *arc, (x1, t.y - dy))
    return pts, ((x0 + x1) / 2, apex_y)


def _bounds(nodes: list[DrawnNode], edges: list[DrawnEdge]) -> tuple[float, float, float, float]:
    xs: list[float] = []
    ys: list[float] = []
    for n in nodes:
        xs += [n.box.left, n.box.left + n.box.w]
        ys += [n.box.top, n.box.top + n.box.h]
    for e in edges:
        xs += [p[0] for p in e.points]
        ys += [p[1] for p in e.points]
        ys += [t.y - 8 for t in e.texts]
    if not xs:
        return (0.0, 0.0, 0.0, 0.0)
    return (min(xs), min(ys), max(xs), max(ys))
