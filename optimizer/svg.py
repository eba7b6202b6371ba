"""An SVG picture of estimated utility against N: one panel per tier, the top prompts
as lines, the chosen arm marked. Hand-written SVG, no plotting dependency.

The "deceiving prompt" shows as a line that starts highest at N=1 and ends below
another as N grows.
"""

from __future__ import annotations

import math
from html import escape

from optimizer.result import Estimates

__all__ = ["render_report"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
PANEL_W, PANEL_H, MARGIN = 460, 300, 56


def _top_prompts(curves: dict[str, list[float | None]], chosen: str, top: int) -> list[str]:
    def best(values: list[float | None]) -> float:
        finite = [v for v in values if v is not None]
        return max(finite) if finite else -math.inf

    ranked = sorted(curves, key=lambda pid: -best(curves[pid]))
    at_one = sorted(
        (pid for pid in curves if curves[pid] and curves[pid][0] is not None),
        key=lambda pid: -(curves[pid][0] or 0.0),
    )
    picks = [chosen, *ranked[:top], *at_one[:1]]  # the N=1 winner: the would-be deceiver
    return list(dict.fromkeys(p for p in picks if p in curves))[: top + 1]


def _panel(
    x0: float, tier: str, curves: dict[str, list[float | None]], chosen: tuple[str, int], top: int
) -> list[str]:
    prompts = _top_prompts(curves, chosen[0], top)
    values = [v for pid in prompts for v in curves[pid] if v is not None]
    if not values:
        return [f'<text x="{x0 + 20}" y="40">{escape(tier)}: no estimates</text>']
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.01
    lo, hi = lo - pad, hi + pad
    n_max = max(len(curves[pid]) for pid in prompts)
    w, h = PANEL_W - 2 * MARGIN, PANEL_H - 2 * MARGIN

    def sx(n: int) -> float:
        return x0 + MARGIN + (n - 1) / max(n_max - 1, 1) * w

    def sy(v: float) -> float:
        return MARGIN + (hi - v) / (hi - lo) * h

    out = [
        f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN - 24}" text-anchor="middle" '
        f'font-weight="bold">tier {escape(tier)}</text>',
        f'<rect x="{x0 + MARGIN}" y="{MARGIN}" width="{w}" height="{h}" '
        'fill="none" stroke="#888"/>',
        f'<text x="{x0 + PANEL_W / 2}" y="{PANEL_H - 14}" text-anchor="middle">N (samples)</text>',
        f'<text transform="translate({x0 + 14},{PANEL_H / 2}) rotate(-90)" '
        f'text-anchor="middle">estimated utility</text>',
    ]
    for n in sorted({1, *range(4, n_max + 1, 4), n_max}):
        out.append(
            f'<line x1="{sx(n):.1f}" y1="{MARGIN + h}" x2="{sx(n):.1f}" '
            f'y2="{MARGIN + h + 4}" stroke="#888"/>'
        )
        out.append(
            f'<text x="{sx(n):.1f}" y="{MARGIN + h + 16}" text-anchor="middle" '
            f'font-size="10">{n}</text>'
        )
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(
            f'<text x="{x0 + MARGIN - 4}" y="{sy(v) + 3:.1f}" text-anchor="end" '
            f'font-size="10">{v:.3f}</text>'
        )
    for i, pid in enumerate(prompts):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(
            f"{sx(n):.1f},{sy(v):.1f}" for n, v in enumerate(curves[pid], start=1) if v is not None
        )
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        ly = MARGIN + 12 + 14 * i
        out.append(
            f'<line x1="{x0 + MARGIN + w - 110}" y1="{ly - 4}" x2="{x0 + MARGIN + w - 92}" '
            f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
        )
        out.append(
            f'<text x="{x0 + MARGIN + w - 88}" y="{ly}" font-size="11">prompt {escape(pid)}</text>'
        )
    pid, n = chosen
    value = curves.get(pid, [])[n - 1] if n - 1 < len(curves.get(pid, [])) else None
    if value is not None:
        out.append(
            f'<circle cx="{sx(n):.1f}" cy="{sy(value):.1f}" r="5" fill="none" '
            f'stroke="black" stroke-width="2"><title>chosen: prompt {escape(pid)}, '
            f"N={n}</title></circle>"
        )
        out.append(
            f'<text x="{sx(n):.1f}" y="{sy(value) - 9:.1f}" text-anchor="middle" '
            f'font-size="11">chosen N={n}</text>'
        )
    return out


def render_report(estimates: Estimates, *, top: int = 4) -> str:
    """The SVG document: one panel per tier with the ``top`` prompts (plus the chosen one
    and the N=1 winner)."""
    tiers = list(estimates.utility)
    width = PANEL_W * max(len(tiers), 1)
    body: list[str] = []
    for i, tier in enumerate(tiers):
        body.extend(_panel(i * PANEL_W, tier, estimates.utility[tier], estimates.chosen[tier], top))
    title = escape(f"task {estimates.task}: estimated utility vs N ({estimates.method})")
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H + 20}" '
            f'viewBox="0 0 {width} {PANEL_H + 20}" font-family="sans-serif" font-size="12">',
            f"<title>{title}</title>",
            f'<rect width="{width}" height="{PANEL_H + 20}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )
