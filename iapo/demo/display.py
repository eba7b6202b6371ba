"""The demo on a terminal: a progress display while it runs, a table per task at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from iapo.demo.pipeline import DemoReport, TierRow

__all__ = ["RichReporter", "print_report"]


class RichReporter:
    """A :class:`~iapo.demo.pipeline.Reporter` drawing rich progress bars."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def stage(self, text: str) -> None:
        self.progress.console.print(f"[bold cyan]•[/] {text}")

    def bar(self, description: str, total: int) -> Callable[[int], None]:
        task = self.progress.add_task(description, total=total)

        def advance(n: int) -> None:
            self.progress.update(task, advance=n)

        return advance


def _num(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _gain(row: TierRow) -> tuple[str, str]:
    """IAPO utility minus prompt-only utility, and two standard errors of that difference."""
    delta = row.iapo.utility - row.baseline.utility
    spread = 2 * math.hypot(row.iapo.utility_stderr, row.baseline.utility_stderr)
    if not math.isfinite(delta):
        return "–", ""
    colour = "green" if delta > 0 else "red"
    return f"[{colour}]{delta:+.3f}[/]", f"±{spread:.3f}" if math.isfinite(spread) else ""


def _table(task: str, strategy: str, rows: list[TierRow]) -> Table:
    quality = "acc" if strategy == "majority" else "reward"
    requests = rows[0].iapo.requests if rows else 0
    kind = "majority vote" if strategy == "majority" else "Best-of-N"
    table = Table(
        title=f"[bold]{task}[/] ({kind}), {requests} requests per row",
        caption=f"both policies of a tier answer the same questions; utility = {quality} − "
        "λ·cost per request; gain = IAPO − prompt-only utility, ±2 standard errors",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),  # one space between columns: the table fits 80 columns
        pad_edge=False,
    )
    table.add_column("tier", no_wrap=True)
    table.add_column("policy", no_wrap=True)
    for header in ("prompt\n×N", quality, "samples\n/req", "cost\n/req", "p50\nms", "utility"):
        table.add_column(header, justify="right")
    table.add_column("gain\n±2se", justify="right")
    for row in rows:
        gain, spread = _gain(row)
        table.add_row(
            row.tier,
            "IAPO",
            f"{row.prompt}×{row.n}",
            _num(row.iapo.quality),
            _num(row.iapo.samples, 1),
            _num(row.iapo.cost),
            _num(row.iapo.latency_p50_s * 1000, 0),
            _num(row.iapo.utility),
            gain,
        )
        table.add_row(
            f"[dim]λ={row.cost_weight:g}[/]",
            "prompt-only",
            f"{row.baseline_prompt}×1",
            _num(row.baseline.quality),
            _num(row.baseline.samples, 1),
            _num(row.baseline.cost),
            _num(row.baseline.latency_p50_s * 1000, 0),
            _num(row.baseline.utility),
            f"[dim]{spread}[/]",
            end_section=True,
        )
    return table


def print_report(console: Console, report: DemoReport) -> None:
    """One table per task, the exact check under it, and where the files went."""
    for summary in report.tasks:
        rows = [r for r in report.rows if r.task == summary.task]
        console.print()
        console.print(_table(summary.task, summary.strategy, rows))
        console.print("  exact expected utility on these questions (no sampling noise):")
        for r in rows:
            console.print(
                f"    {r.tier}: IAPO {r.exact.chosen:.3f}, prompt-only {r.exact.prompt_only:.3f}"
                f", best arm {r.exact.best_prompt}×{r.exact.best_n} {r.exact.best:.3f}"
            )
        console.print(
            f"  {summary.method} spent {summary.spent} of {summary.budget} samples; "
            f"policy {summary.policy_file}; picture {summary.report_file}"
        )
        shown = dict.fromkeys(p for r in rows for p in (r.prompt, r.baseline_prompt))
        for prompt in shown:
            console.print(f"  [dim]prompt {prompt}: {summary.prompts.get(prompt, '?')}[/]")
    failed = sum(r.iapo.failed + r.baseline.failed for r in report.rows)
    console.print()
    console.print(
        f"done in {report.elapsed_s:.0f} s: the simulator generated {report.simulator_samples} "
        f"samples; {failed} request(s) failed."
    )
