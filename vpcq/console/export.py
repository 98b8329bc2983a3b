"""One drawing, four forms: cytoscape.js elements for the browser, SVG, DOT and Mermaid. Pure.

Every text here comes from the log, which anyone who can write to Redis can write to: each
form escapes it for its own syntax (XML, DOT strings, Mermaid entity codes), and the browser
draws it on a canvas or sets it as text, never as markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from vpcq.console.layout import (
    BACKGROUND,
    FONTS,
    LINE,
    TEXT_LOOKS,
    Drawing,
    DrawnEdge,
    DrawnNode,
    Text,
)
from vpcq.console.model import Edge, Node

FORMATS = ("dot", "mermaid", "svg")


def render(fmt: str, d: Drawing) -> str:
    """The drawing in one of FORMATS."""
    return {"dot": dot, "mermaid": mermaid, "svg": svg}[fmt](d)


# ---- the browser ------------------------------------------------------------------------------


def elements(d: Drawing) -> list[dict[str, Any]]:
    """cytoscape.js elements: nodes at their boxes, a text node per text block, edges bent
    through the drawing's points; what the details panel shows goes in `data` too."""
    out: list[dict[str, Any]] = []
    boxes = {n.node.id: n.box for n in d.nodes}
    for dn in d.nodes:
        n, b, lk = dn.node, dn.box, dn.look
        out.append({"group": "nodes", "data": {
            "id": n.id, "kind": n.kind, "variant": n.variant, "vpc": n.vpc, "status": n.status,
            "title": n.title, "lines": list(n.lines), "facts": [list(f) for f in n.facts],
            "notes": [_note_json(x) for x in n.notes],
            "w": b.w, "h": b.h, "shape": lk.shape, "fill": lk.fill, "stroke": lk.stroke,
            "bw": lk.width, "dash": "dashed" if lk.dash else "solid", "opacity": lk.opacity,
            "z": lk.z,
        }, "position": {"x": b.x, "y": b.y}})  # fmt: skip
        out += _texts(n.id, dn.texts)
    for de in d.edges:
        e, lk = de.edge, de.look
        s, t = boxes[e.source], boxes[e.target]
        data: dict[str, Any] = {
            "id": e.id, "source": e.source, "target": e.target, "kind": e.kind, "status": e.status,
            "title": e.label or e.kind, "facts": [list(f) for f in e.facts],
            "notes": [_note_json(x) for x in e.notes], "vpcs": list(e.vpcs),
            "color": lk.stroke, "bw": lk.width, "dash": "dashed" if lk.dash else "solid",
            "opacity": lk.opacity, "z": lk.z,
            "sep": _offset(de.points[0], (s.x, s.y)), "tep": _offset(de.points[-1], (t.x, t.y)),
        }  # fmt: skip
        inner = de.points[1:-1]
        if not inner:
            data["curve"] = "straight"
        else:
            ws, ds = zip(*(_relative(p, (s.x, s.y), (t.x, t.y)) for p in inner), strict=True)
            data["curve"] = "segments"
            data["pw"] = " ".join(f"{w:.4f}" for w in ws)
            data["pd"] = " ".join(f"{x:.2f}" for x in ds)
        out.append({"group": "edges", "data": data})
        out += _texts(e.id, de.texts)
    return out


def _note_json(n: Any) -> dict[str, Any]:
    return {"kind": n.kind, "text": n.text, "lines": list(n.lines)}


def _texts(owner: str, texts: tuple[Text, ...]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(texts):
        tl = TEXT_LOOKS[t.role]
        out.append({"group": "nodes", "data": {
            "id": f"{owner}#{i}", "owner": owner, "kind": "text", "text": "\n".join(t.lines),
            "tooltip": "\n".join(t.tooltip), "color": tl.color, "size": tl.size,
            "weight": tl.weight, "family": FONTS[tl.family], "align": t.align,
            "lh": LINE / tl.size,
        }, "position": {"x": t.x, "y": t.y + (len(t.lines) - 1) * LINE / 2}})  # fmt: skip
    return out


def _offset(p: tuple[float, float], c: tuple[float, float]) -> str:
    return f"{p[0] - c[0]:.2f}px {p[1] - c[1]:.2f}px"


def _relative(p: tuple[float, float], s: tuple[float, float], t: tuple[float, float]) -> tuple[float, float]:
    """A point as cytoscape's segment or control point weight and distance: along the line
    from the source's centre to the target's (0 to 1), and off it (along its normal,
    (-dy, dx) / length), with `edge-distances: node-position`."""
    dx, dy = t[0] - s[0], t[1] - s[1]
    length2 = dx * dx + dy * dy
    px, py = p[0] - s[0], p[1] - s[1]
    w = (px * dx + py * dy) / length2
    dist = (px * -dy + py * dx) / length2**0.5
    return w, dist


# ---- SVG ---------------------------------------------------------------------------------------


def svg(d: Drawing, title: str = "") -> str:
    """The drawing as one standalone SVG document (no script, no external reference)."""
    x0, y0, x1, y1 = d.bounds
    pad = 24
    x0, y0, w, h = x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0:.0f} {y0:.0f} {w:.0f} {h:.0f}" '
        f'width="{w:.0f}" height="{h:.0f}" font-family={quoteattr(FONTS["sans"])}>',
        f"<title>{escape(title or f'vpcq at seq {d.graph.seq}')}</title>",
        f'<rect x="{x0:.0f}" y="{y0:.0f}" width="{w:.0f}" height="{h:.0f}" fill="{BACKGROUND}"/>',
    ]
    layers: list[tuple[int, int, str]] = []
    for i, dn in enumerate(d.nodes):
        layers.append((dn.look.z, i, _svg_node(dn)))
    for i, de in enumerate(d.edges):
        layers.append((de.look.z, len(d.nodes) + i, _svg_edge(de)))
    out += [s for _z, _i, s in sorted(layers)]
    texts = [t for dn in d.nodes for t in dn.texts] + [t for de in d.edges for t in de.texts]
    out += [_svg_text(t) for t in texts]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _stroke(look: Any) -> str:
    dash = ' stroke-dasharray="6 4"' if look.dash else ""
    op = f' opacity="{look.opacity}"' if look.opacity != 1 else ""
    return f'stroke="{look.stroke}" stroke-width="{look.width}"{dash}{op}'


def _svg_node(dn: DrawnNode) -> str:
    b, lk, n = dn.box, dn.look, dn.node
    tip = f"<title>{escape(_tooltip(n))}</title>"
    if lk.shape == "ellipse":
        shape = (f'<ellipse cx="{b.x:.1f}" cy="{b.y:.1f}" rx="{b.w / 2:.1f}" ry="{b.h / 2:.1f}" '
                 f'fill="{lk.fill}" {_stroke(lk)}>{tip}</ellipse>')
    else:
        shape = (f'<rect x="{b.left:.1f}" y="{b.top:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="8" '
                 f'fill="{lk.fill}" {_stroke(lk)}>{tip}</rect>')
    if n.kind == "router":  # the router's glyph
        shape += (f'<text x="{b.x:.1f}" y="{b.y:.1f}" text-anchor="middle" dominant-baseline="central" '
                  f'font-size="15" fill="#f0c45a">⇄</text>')
    return shape


def _svg_edge(de: DrawnEdge) -> str:
    path = "M " + " L ".join(f"{x:.1f} {y:.1f}" for x, y in de.points)
    tip = escape(_edge_tooltip(de.edge))
    return f'<path d="{path}" fill="none" {_stroke(de.look)}><title>{tip}</title></path>'


def _svg_text(t: Text) -> str:
    tl = TEXT_LOOKS[t.role]
    anchor = "middle" if t.align == "center" else "start"
    spans = "".join(f'<tspan x="{t.x:.1f}" y="{t.y + i * LINE:.1f}">{escape(line)}</tspan>'
                    for i, line in enumerate(t.lines))
    tip = f"<title>{escape(chr(10).join(t.tooltip))}</title>" if t.tooltip else ""
    weight = ' font-weight="bold"' if tl.weight == "bold" else ""
    return (f'<text font-size="{tl.size}" fill="{tl.color}" font-family={quoteattr(FONTS[tl.family])}'
            f'{weight} text-anchor="{anchor}" dominant-baseline="central">{tip}{spans}</text>')


def _tooltip(n: Node) -> str:
    return "\n".join([n.title, *n.lines, *(f"{k}: {v}" for k, v in n.facts), *(x.text for x in n.notes)])


def _edge_tooltip(e: Edge) -> str:
    return "\n".join([e.label or e.kind, *(f"{k}: {v}" for k, v in e.facts), *(x.text for x in e.notes)])


# ---- DOT ---------------------------------------------------------------------------------------


def dot(d: Drawing) -> str:
    """Graphviz text: a cluster per VPC, and each node's `pos` from the drawing, so
    `dot -Tsvg` lays it out graphviz's way and `neato -n2 -Tsvg` keeps vpcq's."""
    g = d.graph
    out = [
        "graph vpcq {",
        f'  graph [label={_dq(f"vpcq at seq {g.seq}")}, labelloc=t, bgcolor="{BACKGROUND}", '
        f'fontcolor="#e6edf3", fontname="DejaVu Sans", rankdir=TB, newrank=true];',
        '  node [shape=box, style="rounded,filled", fontname="DejaVu Sans", fontsize=10, '
        'fontcolor="#e6edf3"];',
        '  edge [fontname="DejaVu Sans", fontsize=9, fontcolor="#c9a7ff"];',
    ]
    by_vpc: dict[str, list[DrawnNode]] = {}
    loose: list[DrawnNode] = []
    for dn in d.nodes:
        if dn.node.kind == "vpc":
            continue
        if dn.node.vpc is not None:
            by_vpc.setdefault(dn.node.vpc, []).append(dn)
        else:
            loose.append(dn)
    out += [f"  {_dot_node(dn)}" for dn in loose]
    for dn in d.nodes:
        n, vpc = dn.node, dn.node.vpc
        if n.kind != "vpc" or vpc is None:
            continue
        out.append(f"  subgraph {_dq('cluster_' + n.id)} {{")
        out.append(f'    graph [label={_dot_label(n)}, color="{dn.look.stroke}", '
                   f'style="rounded{",dashed" if dn.look.dash else ""}", labeljust=l];')
        out += [f"    {_dot_node(m)}" for m in by_vpc.get(vpc, [])]
        out.append("  }")
    for de in d.edges:
        e, lk = de.edge, de.look
        attrs = [f'color="{lk.stroke}"', f"penwidth={lk.width}"]
        if lk.dash:
            attrs.append("style=dashed")
        if e.label:
            attrs.append(f"label={_dq(e.label)}")
        if e.kind == "peering":
            attrs.append("constraint=false")
        out.append(f"  {_dq(e.source)} -- {_dq(e.target)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_node(dn: DrawnNode) -> str:
    n, lk, b = dn.node, dn.look, dn.box
    shape = "ellipse" if lk.shape == "ellipse" else "box"
    style = "filled" if shape == "ellipse" else "rounded,filled"
    if lk.dash:
        style += ",dashed"
    return (f'{_dq(n.id)} [label={_dot_label(n)}, shape={shape}, style="{style}", '
            f'fillcolor="{lk.fill}", color="{lk.stroke}", pos="{b.x:.0f},{-b.y:.0f}!"];')


def _dot_label(n: Node) -> str:
    """A quoted label of left-justified lines (graphviz's \\l), each escaped."""
    lines = [n.title, *n.lines, *(x.text for x in n.notes)]
    return '"' + "".join(_dot_escape(line) + "\\l" for line in lines) + '"'


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _dq(text: str) -> str:
    """A DOT double-quoted string."""
    return f'"{_dot_escape(text)}"'


# ---- Mermaid -------------------------------------------------------------------------------------


def mermaid(d: Drawing) -> str:
    """A Mermaid flowchart (GitHub and most doc tools render it): a subgraph per VPC."""
    ids = dict(_mermaid_ids(d))
    out = ["flowchart TB"]
    by_vpc: dict[str, list[DrawnNode]] = {}
    for dn in d.nodes:
        n = dn.node
        if n.kind == "vpc":
            continue
        if n.vpc is None:
            out.append(f"  {_mermaid_node(ids[n.id], dn)}")
        else:
            by_vpc.setdefault(n.vpc, []).append(dn)
    for dn in d.nodes:
        n = dn.node
        if n.kind != "vpc" or n.vpc is None:
            continue
        out.append(f'  subgraph {ids[n.id]}["{_mermaid_text(_lines(n))}"]')
        out += [f"    {_mermaid_node(ids[m.node.id], m)}" for m in by_vpc.get(n.vpc, [])]
        out.append("  end")
    styles: dict[str, str] = {}
    for de in d.edges:
        e = de.edge
        link = "-.-" if de.look.dash else ("===" if e.kind == "peering" else "---")
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        out.append(f"  {ids[e.source]} {link}{label} {ids[e.target]}")
    for dn in d.nodes:
        lk = dn.look
        cls = f"{dn.node.kind}_{dn.node.variant or 'x'}_{'dash' if lk.dash else 'solid'}"
        styles.setdefault(cls, f"fill:{lk.fill},stroke:{lk.stroke},color:#e6edf3"
                               + (",stroke-dasharray:6 4" if lk.dash else ""))
        out.append(f"  class {ids[dn.node.id]} {cls}")
    out += [f"  classDef {cls} {style}" for cls, style in styles.items()]
    return "\n".join(out) + "\n"


def _mermaid_ids(d: Drawing) -> Iterator[tuple[str, str]]:
    """Mermaid ids are letters, digits and '_': made from the node ids, numbered on a clash."""
    seen: set[str] = set()
    for dn in d.nodes:
        base = re.sub(r"[^A-Za-z0-9]", "_", dn.node.id)
        mid, n = base, 1
        while mid in seen:
            n += 1
            mid = f"{base}_{n}"
        seen.add(mid)
        yield dn.node.id, mid


def _mermaid_node(mid: str, dn: DrawnNode) -> str:
    text = _mermaid_text(_lines(dn.node))
    if dn.node.kind == "internet":
        return f'{mid}(("{text}"))'
    if dn.node.kind == "router":
        return f'{mid}{{{{"{text}"}}}}'
    return f'{mid}["{text}"]'


def _lines(n: Node) -> str:
    return "\n".join([n.title, *n.lines, *(x.text for x in n.notes)])


_MERMAID_CODES = {c: f"#{ord(c)};" for c in '"#<>&|`[]{}()'}


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: specials as entity codes, lines as <br/>."""
    return "<br/>".join("".join(_MERMAID_CODES.get(c, c) for c in line) for line in text.split("\n"))
