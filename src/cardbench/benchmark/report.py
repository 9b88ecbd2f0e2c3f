"""Readable tables of results (rich), for the terminal."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table

from cardbench.benchmark.metric_registry import digits_of
from cardbench.benchmark.results import ScoreResult


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _ci(lo, hi, digits: int = 3) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return ""
    return f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary_table(result: ScoreResult,
                  groupings: tuple[str, ...] = ("all", "split", "phase", "position")) -> Table:
    """A rich table: one row per group and class, one column per metric (mean [95 % CI])."""
    s = result.summary
    proto = s["protocol"]
    title = (f"{s.get('submission', {}).get('name', '')} vs {s.get('dataset', {}).get('name', '')}"
             f"  |  protocol {proto['name']} v{proto['version']}")
    agg = result.aggregates
    reported = list(proto["metrics"]) + list(proto.get("added_metrics") or [])
    metrics = [m for m in reported if m in set(agg["metric"])]
    t = Table(title=title, title_justify="left")
    t.add_column("group")
    t.add_column("class")
    tol = proto.get("nsd_tolerance_mm")
    for m in metrics:
        head = m
        if m == "nsd" and tol is not None:
            head += f"@{tol:g}mm" if isinstance(tol, (int, float)) else "@per-class"
        t.add_column(head + (" [95% CI]" if proto.get("bootstrap") else ""), justify="right")
    t.add_column("subjects", justify="right")
    t.add_column("values", justify="right")
    t.add_column("excluded", justify="right")
    for g in groupings:
        sub = agg[agg["grouping"] == g]
        for (group, cls), rows in sub.groupby(["group", "class"], sort=False):
            cells = []
            first = rows.iloc[0]
            for m in metrics:
                r = rows[rows["metric"] == m]
                if r.empty:
                    cells.append("")
                    continue
                r = r.iloc[0]
                digits = digits_of(m)
                cells.append(_fmt(r["mean"], digits) + _ci(r["ci_low"], r["ci_high"], digits))
            label = group if g == "all" else f"{g}={group}"
            t.add_row(label, cls, *cells, str(first["n_subjects"]), str(first["n_values"]), str(first["n_excluded"]))
    return t


def print_summary(result: ScoreResult, console: Console | None = None) -> None:
    """Print the summary table, status counts and notes."""
    console = console or Console()
    console.print(summary_table(result))
    from cardbench.benchmark.report_clinical import clinical_rich_table  # EDV, ESV, EF, LV mass agreement

    if (ct := clinical_rich_table(result.summary)) is not None:
        console.print(ct)
    elif (cb := result.summary.get("clinical")) and cb.get("reason"):
        console.print(f"clinical indices (EDV, ESV, EF, LV mass): not available: {cb['reason']}", highlight=False)
    st = result.summary["counts"]["status"].get(result.summary["protocol"]["level"], {})
    if st:
        parts = [f"{cls}: " + ", ".join(f"{k} {v}" for k, v in d.items()) for cls, d in st.items()]
        console.print("status counts (" + result.summary["protocol"]["level"] + " level): " + "; ".join(parts))
    for w in result.summary.get("warnings", []):
        console.print(f"[bold yellow]warning:[/bold yellow] {w}", highlight=False)
    for n in result.summary.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {n}")


def reproduction_table(table: pd.DataFrame) -> Table:
    """Rich table of :func:`cardbench.benchmark.reproduce.reproduce_ankenbrand2021`'s output."""
    t = Table(title="Ankenbrand et al. 2021, 7T test set (volunteers 26, 27, 28): Dice LV / MY",
              title_justify="left")
    t.add_column("model")
    t.add_column("published", justify="right")
    t.add_column("ankenbrand2021\n(per image)", justify="right")
    t.add_column("match", justify="center")
    t.add_column("cardbench-v1 (per volume, per volunteer)\nLV [95% CI] / MY [95% CI]", justify="right")
    for _, r in table.iterrows():
        v1 = ""
        if "cardbench-v1_LV" in r:
            v1 = (_fmt(r["cardbench-v1_LV"]) + _ci(r.get("cardbench-v1_LV_ci_low"), r.get("cardbench-v1_LV_ci_high"))
                  + " / " + _fmt(r["cardbench-v1_MY"])
                  + _ci(r.get("cardbench-v1_MY_ci_low"), r.get("cardbench-v1_MY_ci_high")))
        match = r.get("match")
        t.add_row(r["label"], f"{r['published_LV']:.3f} / {r['published_MY']:.3f}",
                  f"{_fmt(r.get('ankenbrand2021_LV'))} / {_fmt(r.get('ankenbrand2021_MY'))}",
                  "" if match is None else ("[green]yes[/green]" if match else "[red]NO[/red]"), v1)
    return t
