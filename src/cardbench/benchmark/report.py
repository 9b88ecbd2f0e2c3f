"""Readable tables of results (rich), for the terminal."""

from __future__ import annotations

import math

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from cardbench._util import terminal_safe
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
    title = escape(terminal_safe(f"{s.get('submission', {}).get('name', '')} vs {s.get('dataset', {}).get('name', '')}"
                                 f"  |  protocol {proto['name']} v{proto['version']}"))  # user text: no markup
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


def fits(console: Console, table: Table) -> bool:
    """True when ``table`` can be drawn at ``console``'s width without wrapping or cutting a cell."""
    wide = console.options.update(width=10_000, max_width=10_000)  # measure unclamped by the console width
    return Measurement.get(console, wide, table).maximum <= console.width


def summary_tables_narrow(result: ScoreResult,
                          groupings: tuple[str, ...] = ("all", "split", "phase", "position")) -> list[Table]:
    """The summary for a narrow terminal (80 columns): one table per metric, one row per group and
    class, with the mean and its 95 % CI in columns of their own (nothing is cut). The groupings are
    those of :func:`summary_table`, so no row shown in a wide terminal is dropped in a narrow one."""
    s = result.summary
    proto = s["protocol"]
    agg = result.aggregates
    metrics = [m for m in proto["metrics"] if m in set(agg["metric"])]
    tables = []
    for m in metrics:
        digits = 3 if m in ("dice", "iou") else 2
        t = Table(title=f"{m}" + (" (mm)" if m in ("hd95", "assd", "hd", "masd") else ""), title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        t.add_column("group", no_wrap=True)
        t.add_column("class", no_wrap=True)
        t.add_column("mean", justify="right", no_wrap=True)
        if proto.get("bootstrap"):
            t.add_column("95% CI", justify="right", no_wrap=True)
        for c in ("subjects", "values", "excluded"):
            t.add_column(c, justify="right", no_wrap=True)
        for g in groupings:
            sub = agg[(agg["grouping"] == g) & (agg["metric"] == m)]
            for _, r in sub.iterrows():
                label = r["group"] if g == "all" else f"{g}={r['group']}"
                ci = [_ci(r["ci_low"], r["ci_high"], digits).strip() or "-"] if proto.get("bootstrap") else []
                t.add_row(escape(str(label)), escape(str(r["class"])), _fmt(r["mean"], digits), *ci, str(r["n_subjects"]),
                          str(r["n_values"]), str(r["n_excluded"]))
        tables.append(t)
    return tables


def print_summary(result: ScoreResult, console: Console | None = None) -> None:
    """Print the summary table, status counts and notes.

    The table has one column per metric where the terminal is wide enough for it, else (e.g. at 80
    columns) one table per metric (:func:`summary_tables_narrow`); the clinical table likewise."""
    console = console or Console()
    wide = summary_table(result)
    if fits(console, wide):
        console.print(wide)
    else:
        s = result.summary
        console.print(escape(terminal_safe(f"{s.get('submission', {}).get('name', '')} vs "
                                           f"{s.get('dataset', {}).get('name', '')}  |  "
                                           f"protocol {s['protocol']['name']} v{s['protocol']['version']}")),
                      highlight=False)
        for t in summary_tables_narrow(result):
            console.print(t)
    from cardbench.benchmark.report_clinical import clinical_rich_table, clinical_rich_tables_narrow

    if (ct := clinical_rich_table(result.summary)) is not None:
        if fits(console, ct):
            console.print(ct)
        else:
            for t in clinical_rich_tables_narrow(result.summary):
                console.print(t)
    elif (cb := result.summary.get("clinical")) and cb.get("reason"):
        console.print(f"clinical indices (EDV, ESV, EF, LV mass): not available: {escape(terminal_safe(cb['reason']))}",
                      highlight=False)
    st = result.summary["counts"]["status"].get(result.summary["protocol"]["level"], {})
    if st:
        parts = [f"{cls}: " + ", ".join(f"{k} {v}" for k, v in d.items()) for cls, d in st.items()]
        console.print("status counts (" + result.summary["protocol"]["level"] + " level): " + "; ".join(parts))
    agg = result.aggregates
    if result.summary["protocol"]["level"] != "image" and len(agg) and (agg["grouping"] == "position").any():
        console.print("values: volumes (subject, frame), except in the position rows (base / mid / apex), "
                      "which count 2D images (docs/protocols.md)", highlight=False)
    for w in result.summary.get("warnings", []):
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(terminal_safe(w))}", highlight=False)
    for n in result.summary.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {escape(terminal_safe(n))}")


_REPRO_TITLE = "Ankenbrand et al. 2021, 7T test set (volunteers 26, 27, 28): Dice LV / MY"


def _v1_cells(r) -> list[str]:
    """cardbench-v1 cells of one reproduction row: LV mean, LV 95 % CI, MY mean, MY 95 % CI ("" if absent)."""
    if "cardbench-v1_LV" not in r:
        return ["", "", "", ""]
    cells = []
    for c in ("LV", "MY"):
        cells += [_fmt(r[f"cardbench-v1_{c}"]),
                  _ci(r.get(f"cardbench-v1_{c}_ci_low"), r.get(f"cardbench-v1_{c}_ci_high")).strip() or "-"]
    return cells


def _match_cell(r) -> str:
    match = r.get("match")
    return "" if match is None else ("[green]yes[/green]" if match else "[red]NO[/red]")


def reproduction_table(table: pd.DataFrame) -> Table:
    """Rich table of :func:`cardbench.reproductions.ankenbrand2021.seven_tesla.reproduce_ankenbrand2021`'s output.

    One row per model: published Dice LV / MY, the same under protocol ankenbrand2021 (per image), whether
    they match at 3 decimals, and cardbench-v1's LV and MY Dice (per volume, per volunteer) with their
    95 % intervals in columns of their own. No cell wraps: where it does not fit the terminal
    (:func:`fits`), print :func:`reproduction_tables_narrow` instead (:func:`print_reproduction` chooses)."""
    t = Table(title=_REPRO_TITLE, title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("model", no_wrap=True)
    t.add_column("published\nLV / MY", justify="right", no_wrap=True)
    t.add_column("ankenbrand2021\n(per image)", justify="right", no_wrap=True)
    t.add_column("match", justify="center", no_wrap=True)
    for c in ("LV", "MY"):
        t.add_column(f"cardbench-v1\n{c}", justify="right", no_wrap=True)
        t.add_column("\n95% CI", justify="right", no_wrap=True)
    for _, r in table.iterrows():
        t.add_row(escape(str(r["label"])), f"{r['published_LV']:.3f} / {r['published_MY']:.3f}",
                  f"{_fmt(r.get('ankenbrand2021_LV'))} / {_fmt(r.get('ankenbrand2021_MY'))}", _match_cell(r),
                  *_v1_cells(r))
    return t


def reproduction_tables_narrow(table: pd.DataFrame, split_classes: bool = False) -> list[Table]:
    """The reproduction table for a narrow terminal (80 or 120 columns): one table per protocol (and,
    with ``split_classes``, cardbench-v1's LV and MY in tables of their own), every row and number of
    :func:`reproduction_table`, each value and interval whole on one line."""
    def simple(title: str) -> Table:
        return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)

    a = simple("protocol ankenbrand2021 (per image): Dice LV / MY")
    a.add_column("model", no_wrap=True)
    a.add_column("published", justify="right", no_wrap=True)
    a.add_column("ankenbrand2021", justify="right", no_wrap=True)
    a.add_column("match", justify="center", no_wrap=True)
    title = "protocol cardbench-v1 (per volume, per volunteer): Dice"
    v1 = [simple(f"{title} {c}") for c in ("LV", "MY")] if split_classes else [simple(title)]
    for i, t in enumerate(v1):
        t.add_column("model", no_wrap=True)
        for c in ("LV", "MY") if not split_classes else (("LV", "MY")[i],):
            t.add_column(c if not split_classes else "Dice", justify="right", no_wrap=True)
            t.add_column("95% CI", justify="right", no_wrap=True)
    for _, r in table.iterrows():
        label = escape(str(r["label"]))
        a.add_row(label, f"{r['published_LV']:.3f} / {r['published_MY']:.3f}",
                  f"{_fmt(r.get('ankenbrand2021_LV'))} / {_fmt(r.get('ankenbrand2021_MY'))}", _match_cell(r))
        cells = _v1_cells(r)
        if split_classes:
            v1[0].add_row(label, *cells[:2])
            v1[1].add_row(label, *cells[2:])
        else:
            v1[0].add_row(label, *cells)
    return [a, *v1] if "cardbench-v1_LV" in table.columns else [a]


def print_reproduction(table: pd.DataFrame, console: Console | None = None) -> None:
    """Print :func:`reproduction_table` where it fits ``console``'s width, else (e.g. at 80 or 120
    columns) its title as text and :func:`reproduction_tables_narrow` (cardbench-v1's LV and MY in
    separate tables where even that does not fit)."""
    console = console or Console()
    wide = reproduction_table(table)
    if fits(console, wide):
        console.print(wide)
        return
    console.print(_REPRO_TITLE, highlight=False)
    tables = reproduction_tables_narrow(table)
    if not all(fits(console, t) for t in tables):
        tables = reproduction_tables_narrow(table, split_classes=True)
    for t in tables:
        console.print(t)


def print_section(console: Console, title: str) -> None:
    """A section heading: a rule with ``title`` (rich markup allowed) where the title fits on it, else a
    plain rule with the title printed below it, wrapped at words (never cut with an ellipsis)."""
    from rich.text import Text

    plain = Text.from_markup(title).plain
    if len(plain) + 4 <= console.width:
        console.rule(title)
    else:
        console.rule()
        console.print(title, highlight=False)
