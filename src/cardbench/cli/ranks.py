"""``cardbench leaderboard show --ranks``: rank intervals, Kendall's tau and pairwise tests
(a thin layer over :mod:`cardbench.benchmark.ranking`)."""

from __future__ import annotations

import json
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def show_ranks(lb, benches: list[str], metric: str, method: str, resamples: int | None, fmt: str,
               explicit: bool, fail: Callable, warn: Callable | None = None) -> None:
    """Print the rank uncertainty of each benchmark (``fmt``: table, csv, markdown or json).

    ``warn``: called before a benchmark's skipped line, to print the warnings it refers to first."""
    from cardbench.benchmark.leaderboard import LeaderboardError
    from cardbench.benchmark.ranking import METHODS, RankingError, display_ranks, rank_uncertainty

    if method not in METHODS:
        fail(f"unknown ranking method {method!r}; use --ranking {' or --ranking '.join(METHODS)}")
    out = []
    shown = 0
    for b in benches:
        try:
            ru = rank_uncertainty(lb, b, metric, method=method, n_boot=resamples)
        except (RankingError, LeaderboardError) as e:
            if explicit:
                fail(str(e))
            if warn is not None:
                warn()
            err.print(f"[yellow]skipped[/yellow] {escape(b)}: {escape(str(e))}", highlight=False, soft_wrap=True)
            continue
        note = (f"{ru.method}; {len(ru.subjects)} subjects"
                + (f" ({ru.n_dropped_subjects} without a value for every entry left out)" if ru.n_dropped_subjects
                   else "")
                + f"; {ru.n_boot} subject bootstrap resamples (seed {ru.seed}), the same for every entry; "
                f"median Kendall's tau to the full-data ranking {ru.kendall_tau_median:.3f}; "
                f"'sig. better than': entries it beats in a one-sided Wilcoxon signed-rank test, "
                f"Holm-corrected over {len(ru.summary) * (len(ru.summary) - 1)} ordered pairs, alpha {ru.alpha}")
        shown += 1
        disp = display_ranks(ru)
        if fmt == "table":
            from rich.table import Table

            t = Table(title=f"{lb.benchmark(b).title}  |  rank uncertainty of {ru.metric} ({ru.group})",
                      title_justify="left")
            for c in disp.columns:
                t.add_column(c, justify="left" if c == "entry" else "right")
            for _, r in disp.iterrows():
                t.add_row(*[str(v) for v in r])
            con = Console()
            con.print(t)
            con.print(f"[dim]{note}.[/dim]", highlight=False)
        elif fmt == "csv":
            df = ru.summary.copy()
            df.insert(0, "benchmark", b)
            out.append(df.to_csv(index=False, float_format="%.6g"))
        elif fmt == "json":
            out.append(json.dumps(ru.to_dict(), indent=1, default=float))
        else:
            lines = [f"### {lb.benchmark(b).title}: rank uncertainty of {ru.metric} ({ru.group})", "",
                     "| " + " | ".join(disp.columns) + " |", "|" + "|".join("---" for _ in disp.columns) + "|"]
            lines += ["| " + " | ".join(str(v) for v in r) + " |" for _, r in disp.iterrows()]
            out.append("\n".join(lines) + f"\n\n{note}.\n")
    if not shown:
        fail(f"no benchmark in {lb.root} has per-subject values of '{metric}'; see the skipped lines above")
    if fmt != "table":
        typer.echo(("[\n" + ",\n".join(out) + "\n]") if fmt == "json" and len(out) > 1 else "\n".join(out),
                   nl=False)
