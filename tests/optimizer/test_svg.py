"""``iapo report``'s picture, read back as SVG: curves with interval bands per prompt and
tier, the chosen arm marked where its curve is, legend and labels clear of the plot and
of each other, round tick values, and short prompt texts as labels."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET

import pytest

from optimizer.result import Estimates
from optimizer.svg import LABEL_CHARS, nice_ticks, render_report, render_xy, short_label

NS = {"svg": "http://www.w3.org/2000/svg"}
N_MAX = 16
LONG = "Think step by step, check every intermediate result twice & put <the answer> in a box."


def estimates(*, with_extras: bool = True) -> Estimates:
    """Prompt "a" wins at N=1, "b" at large N (the deceiving-prompt picture)."""
    curves = {
        "a": [0.6 + 0.005 * n for n in range(N_MAX)],
        "b": [0.5 + 0.03 * n - 0.001 * n * n for n in range(N_MAX)],
        "c": [0.3] * (N_MAX - 2) + [None, None],
    }
    widths = {pid: [0.05 if v is not None else None for v in c] for pid, c in curves.items()}
    return Estimates(
        task="math",
        method="sh-pooled",
        n_max=N_MAX,
        utility={"economy": curves, "premium": curves},
        chosen={"economy": ("a", 1), "premium": ("b", 12)},
        halfwidth={"economy": widths, "premium": widths} if with_extras else {},
        prompts={"a": LONG, "b": "Answer tersely.", "c": "Guess."} if with_extras else {},
    )


def points(element: ET.Element) -> list[tuple[float, float]]:
    pairs = element.attrib["points"].split()
    return [(float(x), float(y)) for x, y in (p.split(",") for p in pairs)]


def tier_group(root: ET.Element, tier: str) -> ET.Element:
    (group,) = root.findall(f".//svg:g[@data-tier='{tier}']", NS)
    return group


@pytest.fixture
def root() -> ET.Element:
    return ET.fromstring(render_report(estimates(), top=3))


@pytest.mark.parametrize("tier", ["economy", "premium"])
def test_each_tier_has_a_curve_and_a_band_per_prompt(root: ET.Element, tier: str) -> None:
    group = tier_group(root, tier)
    curves = group.findall("svg:polyline[@class='curve']", NS)
    bands = group.findall("svg:polygon[@class='band']", NS)
    assert [c.attrib["data-prompt"] for c in curves] == [b.attrib["data-prompt"] for b in bands]
    assert set(c.attrib["data-prompt"] for c in curves) == {"a", "b", "c"}
    for curve, band in zip(curves, bands, strict=True):
        line, outline = points(curve), points(band)
        assert len(outline) == 2 * len(line)  # upper edge, then lower edge back
        upper, lower = outline[: len(line)], outline[len(line) :][::-1]
        for (x, y), (ux, uy), (lx, ly) in zip(line, upper, lower, strict=True):
            assert x == ux == lx
            assert uy < y < ly  # SVG y grows downwards: the band encloses the curve
    c_curve = next(c for c in curves if c.attrib["data-prompt"] == "c")
    assert len(points(c_curve)) == N_MAX - 2  # no estimate, no point


@pytest.mark.parametrize(("tier", "prompt", "n"), [("economy", "a", 1), ("premium", "b", 12)])
def test_chosen_arm_is_marked_on_its_curve(
    root: ET.Element, tier: str, prompt: str, n: int
) -> None:
    group = tier_group(root, tier)
    (chosen,) = group.findall("svg:g[@class='chosen']", NS)
    assert (chosen.attrib["data-prompt"], chosen.attrib["data-n"]) == (prompt, str(n))
    circle = chosen.find("svg:circle", NS)
    assert circle is not None
    curve = group.find(f"svg:polyline[@data-prompt='{prompt}']", NS)
    assert curve is not None
    x, y = points(curve)[n - 1]
    assert (float(circle.attrib["cx"]), float(circle.attrib["cy"])) == (x, y)
    labels = [t.text or "" for t in group.iter(f"{{{NS['svg']}}}text")]
    assert sum(f"prompt {prompt} at N={n}," in text for text in labels) == 1


def test_legend_and_labels_stay_clear_of_the_plot_and_each_other(root: ET.Element) -> None:
    for group in root.findall(".//svg:g[@class='tier']", NS):
        plot = group.find("svg:rect[@class='plot']", NS)
        assert plot is not None
        bottom = float(plot.attrib["y"]) + float(plot.attrib["height"])
        left, right = float(plot.attrib["x"]), float(plot.attrib["x"]) + float(plot.attrib["width"])
        items = group.findall(".//svg:text[@class]", NS)
        legend = [t for t in items if "legend-item" in t.attrib["class"]]
        assert len(legend) == 4  # three prompts and the chosen arm
        ys = sorted(float(t.attrib["y"]) for t in legend)
        assert ys[0] - 11 > bottom + 20  # below the x tick labels, not on the plot
        assert all(later - earlier >= 14 for earlier, later in itertools.pairwise(ys))
        # everything drawn on the plot stays inside it
        for shape in group.findall("svg:polyline", NS) + group.findall("svg:polygon", NS):
            for x, _ in points(shape):
                assert left <= x <= right
        width = float(root.attrib["width"])
        for text in legend:
            assert float(text.attrib["x"]) + 6.5 * len(text.text or "") < width + 1


def test_ticks_are_round_values_covering_every_band(root: ET.Element) -> None:
    for group in root.findall(".//svg:g[@class='tier']", NS):
        (y_ticks,) = group.findall("svg:g[@class='y-ticks']", NS)
        values = [float(t.text or "") for t in y_ticks.findall("svg:text", NS)]
        steps = {round(b - a, 9) for a, b in itertools.pairwise(values)}
        assert len(steps) == 1
        (step,) = steps
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 6) in (1, 2, 2.5, 5)
        texts = [t.text or "" for t in y_ticks.findall("svg:text", NS)]
        assert all(re.fullmatch(r"-?\d+(\.\d{1,2})?", text) for text in texts)
        highest = max(
            v for c in estimates().utility["economy"].values() for v in c if v is not None
        )
        assert values[0] <= 0.3 - 0.05
        assert values[-1] >= highest + 0.05
        (x_ticks,) = group.findall("svg:g[@class='x-ticks']", NS)
        ns = [int(t.text or "") for t in x_ticks.findall("svg:text", NS)]
        assert ns[0] == 1
        assert ns[-1] == N_MAX
        assert len(ns) <= 9


def test_prompts_are_labelled_with_a_short_text(root: ET.Element) -> None:
    labels = {
        t.attrib["data-prompt"]: t.text or "" for t in root.findall(".//svg:text[@data-prompt]", NS)
    }
    assert labels["b"] == "b · Answer tersely."
    assert labels["a"].startswith("a · Think step by step")
    assert labels["a"].endswith("…")
    assert len(labels["a"]) <= len("a · ") + LABEL_CHARS
    assert short_label("x", None) == "prompt x"


def test_sidecars_without_intervals_or_texts_still_render() -> None:
    root = ET.fromstring(render_report(estimates(with_extras=False), top=3))
    assert root.findall(".//svg:polygon[@class='band']", NS) == []
    assert len(root.findall(".//svg:polyline[@class='curve']", NS)) == 6
    assert {t.text for t in root.findall(".//svg:text[@data-prompt]", NS)} == {
        "prompt a",
        "prompt b",
        "prompt c",
    }


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.83, 0.97, [0.8, 0.85, 0.9, 0.95, 1.0]),
        (-0.3, 0.1, [-0.3, -0.2, -0.1, 0.0, 0.1]),
        (5.0, 5.0, [5.0, 5.2, 5.4, 5.6, 5.8, 6.0]),
    ],
)
def test_nice_ticks(lo: float, hi: float, expected: list[float]) -> None:
    assert nice_ticks(lo, hi, count=6) == pytest.approx(expected)


def test_a_prompt_keeps_its_colour_in_every_tier(root: ET.Element) -> None:
    colours: dict[str, set[str]] = {}
    for curve in root.findall(".//svg:polyline[@class='curve']", NS):
        colours.setdefault(curve.attrib["data-prompt"], set()).add(curve.attrib["stroke"])
    assert all(len(c) == 1 for c in colours.values())
    assert len({c.pop() for c in colours.values()}) == len(colours)  # and prompts differ


def test_an_xy_chart_has_a_line_and_labelled_points_per_series() -> None:
    series = {
        "N=8": [(24.6, 78.0, "exact"), (33.9, 77.5, "δ=0.05")],
        "N=32": [(35.5, 89.0, "exact"), (70.2, 89.5, "δ=0.05"), (85.1, 87.5, "δ=0.3")],
    }
    root = ET.fromstring(render_xy("trade-off", series, x_label="saved", y_label="accuracy"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    groups = root.findall(".//s:g[@class='series']", ns)
    assert [g.get("data-series") for g in groups] == ["N=8", "N=32"]
    for group, points in zip(groups, series.values(), strict=True):
        assert len(group.findall("s:circle[@class='point']", ns)) == len(points)
        labels = [t.text for t in group.findall("s:text[@class='point-label']", ns)]
        assert labels == [label for _, _, label in points]
        line = group.find("s:polyline", ns)
        assert line is not None
        assert len(line.get("points", "").split()) == len(points)
    x_ticks = [float(t.text or "") for t in root.findall(".//s:g[@class='x-ticks']/s:text", ns)]
    y_ticks = [float(t.text or "") for t in root.findall(".//s:g[@class='y-ticks']/s:text", ns)]
    assert x_ticks[0] <= 24.6
    assert x_ticks[-1] >= 85.1
    assert y_ticks[0] <= 77.5
    assert y_ticks[-1] >= 89.5
