"""A small line chart written as SVG text (no matplotlib): throughput by worker count.

    panel = Panel("TCP, Gbit/s", log=True)
    panel.series.append(Series("engine offload, 1 stream", [(1, 3.2), (2, 3.5), (4, 3.1)]))
    panel.refs.append(Ref("cmirror --vnet", 18.3))
    open("chart.svg", "w").write(render("title", [panel]))

Series are lines over the x values (worker counts); refs are horizontal dashed lines
(mirrors without workers: the naive baseline, comparators, the kernel ceiling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22")


@dataclass
class Series:
    label: str
    points: List[Tuple[float, float]]
    dashed: bool = False
    color: Optional[str] = None


@dataclass
class Ref:
    label: str
    value: float
    color: Optional[str] = None


@dataclass
class Panel:
    title: str
    log: bool = False
    series: List[Series] = field(default_factory=list)
    refs: List[Ref] = field(default_factory=list)
    xlabel: str = "workers"


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.3g}k"
    return f"{v:.3g}"


def _ticks(lo: float, hi: float, log: bool) -> List[float]:
    if log:
        out = []
        e = math.floor(math.log10(lo))
        while 10 ** e <= hi * 1.0001:
            for m in (1, 2, 5):
                v = m * 10 ** e
                if lo * 0.9999 <= v <= hi * 1.0001:
                    out.append(v)
            e += 1
        return out
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 5)) if span > 0 else 1
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    v = math.ceil(lo / step) * step
    out = []
    while v <= hi * 1.0001:
        out.append(round(v, 10))
        v += step
    return out


def _panel(p: Panel, x0: float, y0: float, w: float, h: float, color_of) -> List[str]:
    out = []
    legend_h = 14 * len(p.series)
    plot_l, plot_r, plot_t, plot_b = x0 + 55, x0 + w - 10, y0 + 28, y0 + h - 40 - legend_h
    vals = [y for s in p.series for _, y in s.points if y and y > 0]
    vals += [r.value for r in p.refs if r.value and r.value > 0]
    xs = sorted({x for s in p.series for x, _ in s.points}) or [1]
    out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + 16:.1f}" text-anchor="middle" '
               f'font-weight="bold">{escape(p.title)}</text>')
    if not vals:
        out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h / 2:.1f}" text-anchor="middle">'
                   f'no data</text>')
        return out
    if p.log:
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals) * 1.05))
        def fy(v):
            return plot_b - (math.log10(v) - math.log10(lo)) / (
                math.log10(hi) - math.log10(lo)) * (plot_b - plot_t)
    else:
        lo, hi = 0.0, max(vals) * 1.1
        def fy(v):
            return plot_b - (v - lo) / (hi - lo) * (plot_b - plot_t)
    # x: worker counts on a log2 axis, evenly spaced for 1, 2, 4
    lx = [math.log2(x) for x in xs]
    xmin, xmax = min(lx), max(lx)
    def fx(x):
        if xmax == xmin:
            return (plot_l + plot_r) / 2
        pad = 0.08 * (plot_r - plot_l)
        return plot_l + pad + (math.log2(x) - xmin) / (xmax - xmin) * (plot_r - plot_l - 2 * pad)
    out.append(f'<rect x="{plot_l}" y="{plot_t}" width="{plot_r - plot_l}" '
               f'height="{plot_b - plot_t}" fill="none" stroke="#444"/>')
    for t in _ticks(lo if p.log else 0.0, hi, p.log):
        if t <= 0 and p.log:
            continue
        y = fy(t)
        out.append(f'<line x1="{plot_l}" x2="{plot_r}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{plot_l - 4}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="10">{_fmt(t)}</text>')
    for x in xs:
        out.append(f'<text x="{fx(x):.1f}" y="{plot_b + 14:.1f}" text-anchor="middle" '
                   f'font-size="10">{x:g}</text>')
    out.append(f'<text x="{(plot_l + plot_r) / 2:.1f}" y="{plot_b + 28:.1f}" '
               f'text-anchor="middle" font-size="11">{escape(p.xlabel)}</text>')
    for r in p.refs:
        if not r.value or r.value <= 0:
            continue
        c = r.color or color_of(r.label)
        y = fy(r.value)
        out.append(f'<line x1="{plot_l}" x2="{plot_r}" y1="{y:.1f}" y2="{y:.1f}" stroke="{c}" '
                   f'stroke-dasharray="6,4"/>')
        out.append(f'<text x="{plot_r - 3}" y="{y - 3:.1f}" text-anchor="end" font-size="10" '
                   f'fill="{c}">{escape(r.label)} {_fmt(r.value)}</text>')
    for s in p.series:
        pts = [(x, y) for x, y in sorted(s.points) if y is not None and y > 0]
        if not pts:
            continue
        c = s.color or color_of(s.label)
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="3,3"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{c}">'
                       f'<title>{escape(s.label)}: {_fmt(y)}</title></circle>')
    # legend below the axis (series only; refs are labelled in place)
    ly = plot_b + 32
    for s in p.series:
        c = s.color or color_of(s.label)
        dash = ' stroke-dasharray="3,3"' if s.dashed else ""
        out.append(f'<line x1="{plot_l + 8}" x2="{plot_l + 28}" y1="{ly + 6}" y2="{ly + 6}" '
                   f'stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{plot_l + 32}" y="{ly + 10}" font-size="10">'
                   f'{escape(s.label)}</text>')
        ly += 14
    return out


def render(title: str, panels: Sequence[Panel], width: int = 460, height: int = 360,
           note: str = "") -> str:
    palette = {}

    def color_of(label: str) -> str:
        if label not in palette:
            palette[label] = COLORS[len(palette) % len(COLORS)]
        return palette[label]

    total_w = width * max(1, len(panels))
    total_h = height + 40 + (16 if note else 0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
           f'viewBox="0 0 {total_w} {total_h}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{total_w / 2:.1f}" y="22" text-anchor="middle" font-size="15" '
           f'font-weight="bold">{escape(title)}</text>']
    for i, p in enumerate(panels):
        out += _panel(p, i * width, 34, width, height, color_of)
    if note:
        out.append(f'<text x="8" y="{total_h - 6}" font-size="10" fill="#555">'
                   f'{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
