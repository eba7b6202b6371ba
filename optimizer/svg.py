"""An SVG picture of estimated utility against N: one panel per tier, the top prompts as
curves with their 95% interval bands, the chosen arm marked. Hand-written SVG, no
plotting dependency. ``render_xy`` draws plain labelled points joined by lines, with the
same ticks and colours (the benchmarks' trade-off curves).

The "deceiving prompt" shows as a curve that starts highest at N=1 and ends below
another as N grows. Nothing is written over the plot area: the legend (a short text
of each prompt) and the chosen arm's label sit below it, so they never collide with the
curves or each other. Elements carry classes (``tier``, ``curve``, ``band``, ``chosen``,
``legend``, ``x-ticks``, ``y-ticks``) so tests and styles can find them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

from optimizer.result import Estimates

__all__ = ["nice_ticks", "render_report", "render_xy", "short_label"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
PANEL_W, PLOT_H = 520, 260
LEFT, RIGHT, TOP = 64, 20, 44
AXIS_H = 44  # x tick labels and the axis title, below the plot
LINE_H = 16  # one legend line
LABEL_CHARS = 60

Curve = list[float | None]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of 10."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi - step * 1e-9:
        ticks.append(round(value, 12))
    return ticks


def _y_ticks(
    left: float, width: float, ticks: Sequence[float], sy: Callable[[float], float]
) -> list[str]:
    """The y-axis ticks: a grid line across the plot and a label left of it, per tick."""
    out = ['<g class="y-ticks" font-size="11" text-anchor="end">']
    for tick in ticks:
        y = sy(tick)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}">{_tick_text(tick, ticks)}</text>')
    out.append("</g>")
    return out


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    """Fewest decimals that tell the ticks apart (``0.25``, not ``0.250``)."""
    decimals = 0
    while decimals < 6 and any(
        not math.isclose(round(t, decimals), t, abs_tol=1e-9) for t in ticks
    ):
        decimals += 1
    return f"{0.0 if abs(value) < 1e-12 else value:.{decimals}f}"


def _n_ticks(n_max: int) -> list[int]:
    step = next(s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256) if n_max / s <= 8)
    return sorted({1, *range(step, n_max + 1, step)})


def short_label(prompt_id: str, text: str | None, chars: int = LABEL_CHARS) -> str:
    """``id · first words of the prompt…``, at most ``chars`` characters of text."""
    if not text:
        return f"prompt {prompt_id}"
    flat = " ".join(text.split())
    if len(flat) > chars:
        flat = flat[: chars - 1].rsplit(" ", 1)[0] + "…"
    return f"{prompt_id} · {flat}"


def _top_prompts(curves: dict[str, Curve], chosen: str, top: int) -> list[str]:
    def best(values: Curve) -> float:
        finite = [v for v in values if v is not None]
        return max(finite) if finite else -math.inf

    ranked = sorted(curves, key=lambda pid: -best(curves[pid]))
    at_one = sorted(
        (pid for pid in curves if curves[pid] and curves[pid][0] is not None),
        key=lambda pid: -(curves[pid][0] or 0.0),
    )
    picks = [chosen, *ranked[:top], *at_one[:1]]  # the N=1 winner: the would-be deceiver
    return list(dict.fromkeys(p for p in picks if p in curves))[: top + 1]


def _bounds(prompts: list[str], curves: dict[str, Curve], bands: dict[str, Curve]) -> list[float]:
    values: list[float] = []
    for pid in prompts:
        widths = bands.get(pid, [])
        for i, v in enumerate(curves[pid]):
            if v is None:
                continue
            half = widths[i] if i < len(widths) and widths[i] is not None else 0.0
            values += [v - (half or 0.0), v + (half or 0.0)]
    return values


def _panel(
    x0: float,
    tier: str,
    estimates: Estimates,
    top: int,
    colors: dict[str, str],
) -> list[str]:
    curves = estimates.utility[tier]
    bands = estimates.halfwidth.get(tier, {})
    chosen_pid, chosen_n = estimates.chosen[tier]
    prompts = _top_prompts(curves, chosen_pid, top)
    out = [f'<g class="tier" data-tier="{escape(tier)}">']
    out.append(
        f'<text class="tier-title" x="{x0 + PANEL_W / 2}" y="{TOP - 20}" '
        f'text-anchor="middle" font-weight="bold">tier {escape(tier)}</text>'
    )
    values = _bounds(prompts, curves, bands)
    if not values:
        out.append(f'<text x="{x0 + LEFT}" y="{TOP + 20}">no estimates</text></g>')
        return out
    ticks = nice_ticks(min(values), max(values), count=6)
    lo, hi = ticks[0], ticks[-1]
    n_max = max(len(curves[pid]) for pid in prompts)
    w = PANEL_W - LEFT - RIGHT

    def sx(n: int) -> float:
        return x0 + LEFT + (n - 1) / max(n_max - 1, 1) * w

    def sy(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * PLOT_H

    bottom = TOP + PLOT_H
    out.append(
        f'<rect class="plot" x="{x0 + LEFT}" y="{TOP}" width="{w}" height="{PLOT_H}" '
        'fill="none" stroke="#888"/>'
    )
    out.extend(_y_ticks(x0 + LEFT, w, ticks, sy))
    out.append('<g class="x-ticks" font-size="11" text-anchor="middle">')
    for n in _n_ticks(n_max):
        out.append(
            f'<line x1="{sx(n):.1f}" y1="{bottom}" x2="{sx(n):.1f}" y2="{bottom + 4}" '
            'stroke="#888"/>'
        )
        out.append(f'<text x="{sx(n):.1f}" y="{bottom + 17}">{n}</text>')
    out.append("</g>")
    out.append(
        f'<text x="{x0 + LEFT + w / 2}" y="{bottom + 36}" text-anchor="middle">'
        "N (samples per request)</text>"
    )
    out.append(
        f'<text transform="translate({x0 + 16},{TOP + PLOT_H / 2}) rotate(-90)" '
        'text-anchor="middle">estimated utility</text>'
    )
    legend_y = bottom + AXIS_H + 4
    bands_svg: list[str] = []
    curves_svg: list[str] = []
    legend = ['<g class="legend" font-size="11">']
    for i, pid in enumerate(prompts):
        color = colors[pid]
        points = [(n, v) for n, v in enumerate(curves[pid], start=1) if v is not None]
        widths = bands.get(pid, [])
        upper, lower = [], []
        for n, v in points:
            half = widths[n - 1] if n - 1 < len(widths) else None
            if half is not None:
                upper.append(f"{sx(n):.1f},{sy(v + half):.1f}")
                lower.append(f"{sx(n):.1f},{sy(v - half):.1f}")
        if upper:
            bands_svg.append(
                f'<polygon class="band" data-prompt="{escape(pid)}" '
                f'points="{" ".join(upper + lower[::-1])}" fill="{color}" '
                'fill-opacity="0.12" stroke="none"/>'
            )
        line = " ".join(f"{sx(n):.1f},{sy(v):.1f}" for n, v in points)
        curves_svg.append(
            f'<polyline class="curve" data-prompt="{escape(pid)}" points="{line}" '
            f'fill="none" stroke="{color}" stroke-width="1.8"/>'
        )
        ly = legend_y + LINE_H * i
        label = short_label(pid, estimates.prompts.get(pid))
        legend.append(
            f'<line x1="{x0 + LEFT}" y1="{ly - 4}" x2="{x0 + LEFT + 18}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2.5"/>'
        )
        legend.append(
            f'<text class="legend-item" data-prompt="{escape(pid)}" x="{x0 + LEFT + 24}" '
            f'y="{ly}">{escape(label)}</text>'
        )
    out += bands_svg + curves_svg
    chosen_curve = curves.get(chosen_pid, [])
    value = chosen_curve[chosen_n - 1] if chosen_n - 1 < len(chosen_curve) else None
    if value is not None:
        cx, cy = sx(chosen_n), sy(value)
        out.append(
            f'<g class="chosen" data-prompt="{escape(chosen_pid)}" data-n="{chosen_n}">'
            f'<line x1="{cx:.1f}" y1="{TOP}" x2="{cx:.1f}" y2="{bottom}" stroke="#000" '
            'stroke-dasharray="3,3" stroke-opacity="0.5"/>'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="none" stroke="#000" '
            'stroke-width="2"/>'
            f"<title>chosen: prompt {escape(chosen_pid)} at N={chosen_n}, utility "
            f"{value:.4g}</title></g>"
        )
        ly = legend_y + LINE_H * len(prompts)
        legend.append(
            f'<circle cx="{x0 + LEFT + 9}" cy="{ly - 4}" r="5" fill="none" stroke="#000" '
            'stroke-width="2"/>'
        )
        legend.append(
            f'<text class="legend-item chosen-label" x="{x0 + LEFT + 24}" y="{ly}">chosen: '
            f"prompt {escape(chosen_pid)} at N={chosen_n}, utility {value:.4g}</text>"
        )
    out += [*legend, "</g>", "</g>"]
    return out


def render_report(estimates: Estimates, *, top: int = 4) -> str:
    """The SVG document: one panel per tier with the ``top`` prompts (plus the chosen one
    and the N=1 winner)."""
    tiers = list(estimates.utility)
    width = PANEL_W * max(len(tiers), 1)
    legend_lines = top + 2  # the shown prompts (at most top + 1) and the chosen arm
    height = TOP + PLOT_H + AXIS_H + LINE_H * legend_lines + 12
    # One colour per prompt across all panels, so a prompt is recognised from tier to tier.
    shown = [
        pid
        for tier in tiers
        for pid in _top_prompts(estimates.utility[tier], estimates.chosen[tier][0], top)
    ]
    colors = {pid: PALETTE[i % len(PALETTE)] for i, pid in enumerate(dict.fromkeys(shown))}
    body: list[str] = []
    for i, tier in enumerate(tiers):
        body.extend(_panel(i * PANEL_W, tier, estimates, top, colors))
    title = escape(f"task {estimates.task}: estimated utility vs N ({estimates.method})")
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
            f"<title>{title}</title>",
            f'<rect width="{width}" height="{height}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def render_xy(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float, str]]],
    *,
    x_label: str,
    y_label: str,
) -> str:
    """An SVG document with one line per series through its points ``(x, y, label)``,
    each point marked and labelled; the legend names the series below the plot."""
    xs = [x for points in series.values() for x, _, _ in points] or [0.0]
    ys = [y for points in series.values() for _, y, _ in points] or [0.0]
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs), count=6), nice_ticks(min(ys), max(ys), count=6)
    w = PANEL_W - LEFT - RIGHT
    bottom = TOP + PLOT_H
    height = bottom + AXIS_H + LINE_H * len(series) + 12

    def sx(x: float) -> float:
        return LEFT + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * w

    def sy(y: float) -> float:
        return TOP + (y_ticks[-1] - y) / (y_ticks[-1] - y_ticks[0]) * PLOT_H

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_W}" height="{height}" '
        f'viewBox="0 0 {PANEL_W} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{PANEL_W}" height="{height}" fill="white"/>',
        f'<text x="{PANEL_W / 2}" y="{TOP - 20}" text-anchor="middle" '
        f'font-weight="bold">{escape(title)}</text>',
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{w}" height="{PLOT_H}" '
        'fill="none" stroke="#888"/>',
    ]
    out.extend(_y_ticks(LEFT, w, y_ticks, sy))
    out.append('<g class="x-ticks" font-size="11" text-anchor="middle">')
    for tick in x_ticks:
        x = sx(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#888"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{bottom + 17}">{_tick_text(tick, x_ticks)}</text>')
    out.append("</g>")
    out.append(
        f'<text x="{LEFT + w / 2}" y="{bottom + 36}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text transform="translate(16,{TOP + PLOT_H / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    for i, (name, points) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points)
        out.append(f'<g class="series" data-series="{escape(name)}">')
        out.append(
            f'<polyline class="curve" points="{line}" fill="none" stroke="{color}" '
            'stroke-width="1.8"/>'
        )
        for x, y, label in points:
            out.append(
                f'<circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                f"<title>{escape(name)} {escape(label)}: ({x:.4g}, {y:.4g})</title></circle>"
            )
            out.append(
                f'<text class="point-label" x="{sx(x) + 5:.1f}" y="{sy(y) - 5:.1f}" '
                f'font-size="10" fill="{color}">{escape(label)}</text>'
            )
        ly = bottom + AXIS_H + 4 + LINE_H * i
        out.append(
            f'<line x1="{LEFT}" y1="{ly - 4}" x2="{LEFT + 18}" y2="{ly - 4}" stroke="{color}" '
            f'stroke-width="2.5"/><text class="legend-item" x="{LEFT + 24}" y="{ly}">'
            f"{escape(name)}</text></g>"
        )
    out += ["</svg>", ""]
    return "\n".join(out)
