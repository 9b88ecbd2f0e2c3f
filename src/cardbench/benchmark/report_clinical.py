"""Readable tables (rich) of clinical indices, agreement statistics, paired comparisons and the volume track."""

from __future__ import annotations

import math

import pandas as pd
from rich import box
from rich.table import Table

from cardbench.benchmark.metric_registry import digits_of


def _f(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _ci(lo, hi, digits: int = 2) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and (math.isnan(lo) or math.isnan(hi))):
        return ""
    return f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def agreement_rich_table(records: list[dict] | pd.DataFrame, title: str, groupings: tuple[str, ...] = ("all",)) -> Table:
    """One row per (group, index): subjects, reference and prediction means, bias, LoA, MAE, r with 95 % CIs."""
    df = pd.DataFrame(records)
    t = Table(title=title, title_justify="left")
    for c, j in (("group", "left"), ("index", "left"), ("n", "right"), ("reference", "right"),
                 ("prediction", "right"), ("bias [95% CI]", "right"), ("95% limits of agreement", "right"),
                 ("MAE [95% CI]", "right"), ("Pearson r [95% CI]", "right")):
        t.add_column(c, justify=j)
    if df.empty:
        return t
    for _, r in df[df["grouping"].isin(groupings)].iterrows():
        unit = f" {r['unit']}" if r["unit"] else ""
        n = f"{int(r['n_subjects'])}" + (f" (+{int(r['n_excluded'])} excl.)" if r["n_excluded"] else "")
        t.add_row(r["group"], f"{r['index']}{unit}", n, _f(r["ref_mean"]), _f(r["pred_mean"]),
                  _f(r["bias"]) + _ci(r["bias_ci_low"], r["bias_ci_high"]),
                  f"{_f(r['loa_low'])} to {_f(r['loa_high'])}",
                  _f(r["mae"]) + _ci(r["mae_ci_low"], r["mae_ci_high"]),
                  _f(r["pearson_r"], 3) + _ci(r["pearson_r_ci_low"], r["pearson_r_ci_high"], 3))
    return t


def agreement_rich_tables_narrow(records: list[dict] | pd.DataFrame, title: str,
                                 groupings: tuple[str, ...] = ("all",)) -> list[Table]:
    """:func:`agreement_rich_table` for a narrow terminal (80 columns): two tables per group, (index,
    n, reference, prediction, bias [95% CI]) and (index, limits of agreement, MAE, Pearson r), nothing cut."""
    df = pd.DataFrame(records)
    if df.empty:
        return [agreement_rich_table(df, title, groupings)]
    out = []
    for g, rows in df[df["grouping"].isin(groupings)].groupby("group", sort=False):
        kw = dict(title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        a = Table(title=f"{title}; group {g}", **kw)
        b = Table(**kw)
        for c in ("index", "n", "reference", "prediction", "bias [95% CI]"):
            a.add_column(c, justify="left" if c == "index" else "right", no_wrap=True)
        for c in ("index", "95% limits of agreement", "MAE [95% CI]", "Pearson r [95% CI]"):
            b.add_column(c, justify="left" if c == "index" else "right", no_wrap=True)
        for _, r in rows.iterrows():
            unit = f" {r['unit']}" if r["unit"] else ""
            n = f"{int(r['n_subjects'])}" + (f" (+{int(r['n_excluded'])} excl.)" if r["n_excluded"] else "")
            a.add_row(f"{r['index']}{unit}", n, _f(r["ref_mean"]), _f(r["pred_mean"]),
                      _f(r["bias"]) + _ci(r["bias_ci_low"], r["bias_ci_high"]))
            b.add_row(f"{r['index']}{unit}", f"{_f(r['loa_low'])} to {_f(r['loa_high'])}",
                      _f(r["mae"]) + _ci(r["mae_ci_low"], r["mae_ci_high"]),
                      _f(r["pearson_r"], 3) + _ci(r["pearson_r_ci_low"], r["pearson_r_ci_high"], 3))
        out += [a, b]
    return out


def _clinical_title(block: dict) -> str:
    src = ", ".join(f"{k} {v}" for k, v in block.get("phase_source", {}).items())
    b = block.get("bootstrap", {})
    return (f"Clinical indices vs reference (prediction - reference; ED/ES from: {src}; "
            f"subject bootstrap {b.get('resamples')} resamples, seed {b.get('seed')})")


def clinical_rich_tables_narrow(summary: dict) -> list[Table]:
    """The ``clinical`` block as tables for a narrow terminal (empty when not available)."""
    block = summary.get("clinical") or {}
    if not block.get("available"):
        return []
    return agreement_rich_tables_narrow(block.get("agreement", []), _clinical_title(block))


def clinical_rich_table(summary: dict) -> Table | None:
    """The ``clinical`` block of a score summary as a table (None when not available)."""
    block = summary.get("clinical") or {}
    if not block.get("available"):
        return None
    return agreement_rich_table(block.get("agreement", []), _clinical_title(block))


def comparison_rich_table(comp, info: dict, max_rows: int = 40) -> Table:
    """Per-subject values of two submissions and who wins (from :func:`cardbench.benchmark.stats.compare_results`)."""
    better = "higher" if comp.higher_is_better else "lower"
    t = Table(title=f"{info['values']}: A = {info['a']}, B = {info['b']} ({better} is better)", title_justify="left")
    for c, j in (("subject", "left"), ("A", "right"), ("B", "right"), ("A - B", "right"), ("better", "center")):
        t.add_column(c, justify=j)
    ps = comp.per_subject
    digits = digits_of(str(info.get("metric")))
    for _, r in ps.head(max_rows).iterrows():
        t.add_row(str(r["subject"]), _f(r["a"], digits), _f(r["b"], digits), _f(r["diff"], digits),
                  {"A": "[green]A[/green]", "B": "[red]B[/red]"}.get(r["winner"], "tie"))
    if len(ps) > max_rows:
        t.add_row(f"... {len(ps) - max_rows} more", "", "", "", "")
    return t


def volume_track_rich_table(table: pd.DataFrame) -> Table:
    """The Kaggle volume-track reproduction table (from ``reproduce_kaggle_volumes``)."""
    t = Table(title="Kaggle volume track: |EF prediction - released EF| in percentage points, "
                    "mean / SD / median / IQR", title_justify="left")
    for c, j in (("model", "left"), ("published (seed README)", "right"), ("rule seed\n(1149 rows)", "right"),
                 ("match", "center"), ("rule cardbench (1140 patients)\nmean [95% CI] / SD / median / IQR", "right"),
                 ("EF bias\n(95% limits of agreement)", "right"), ("not in training\nn: mean", "right")):
        t.add_column(c, justify=j)
    for _, r in table.iterrows():
        pub = ("-" if pd.isna(r["published_mean"]) else
               " / ".join(_f(r[f"published_{k}"]) for k in ("mean", "sd", "median", "iqr")))
        seed = " / ".join(_f(r[f"seed_{k}"]) for k in ("mean", "sd", "median", "iqr"))
        cb = (_f(r["cardbench_mean"]) + _ci(r["cardbench_mean_ci_low"], r["cardbench_mean_ci_high"]) + " / "
              + " / ".join(_f(r[f"cardbench_{k}"]) for k in ("sd", "median", "iqr")))
        m = r.get("match")
        match = "" if m is None or (isinstance(m, float) and math.isnan(m)) else ("[green]yes[/green]" if m else "[red]NO[/red]")
        t.add_row(r["label"], pub, seed, match, cb, f"{_f(r['ef_bias'])} ({_f(r['ef_loa_low'])} to {_f(r['ef_loa_high'])})",
                  f"{int(r['heldout_n'])}: {_f(r['heldout_mean'])}")
    return t


def volume_result_rich_table(summary: dict) -> Table:
    """EF absolute-difference summary per group of one volume-track result."""
    t = Table(title=f"{summary['submission']['name']}: |EF prediction - released EF| (percentage points), "
                    f"rule {summary['rule']['name']}", title_justify="left")
    for c in ("group", "n", "mean [95% CI]", "SD", "median [95% CI]", "IQR", "worst case (100)"):
        t.add_column(c, justify="left" if c == "group" else "right")
    for g, e in summary["ef_abs_diff"].items():
        t.add_row(g, str(e["n"]), _f(e["mean"]) + _ci(e.get("mean_ci_low"), e.get("mean_ci_high")), _f(e["sd"]),
                  _f(e["median"]) + _ci(e.get("median_ci_low"), e.get("median_ci_high")), _f(e["iqr"]),
                  str(e["n_worst_case"]))
    return t


def volume_result_rich_tables_narrow(summary: dict) -> list[Table]:
    """:func:`volume_result_rich_table` for a narrow terminal (80 columns): two tables, (group, n, mean,
    its 95 % CI, SD, worst case) and (group, median, its 95 % CI, IQR), each value in a column of its
    own, so that no number is cut or wrapped. |EF prediction - released EF| in percentage points."""
    kw = dict(title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    a = Table(title=f"{summary['submission']['name']}: |EF prediction - released EF| (percentage points), "
                    f"rule {summary['rule']['name']}", **kw)
    b = Table(**kw)
    for c in ("group", "n", "mean", "95% CI", "SD", "worst case (100)"):
        a.add_column(c, justify="left" if c == "group" else "right", no_wrap=True)
    for c in ("group", "median", "95% CI", "IQR"):
        b.add_column(c, justify="left" if c == "group" else "right", no_wrap=True)
    for g, e in summary["ef_abs_diff"].items():
        a.add_row(g, str(e["n"]), _f(e["mean"]), _ci(e.get("mean_ci_low"), e.get("mean_ci_high")).strip() or "-",
                  _f(e["sd"]), str(e["n_worst_case"]))
        b.add_row(g, _f(e["median"]), _ci(e.get("median_ci_low"), e.get("median_ci_high")).strip() or "-",
                  _f(e["iqr"]))
    return [a, b]


def print_volume_result(summary: dict, console=None, groupings: tuple[str, ...] = ("all", "split")) -> None:
    """Print a volume-track result (``cardbench volumes score``): the |EF difference| table and the
    agreement with the released volumes, each as one table where it fits ``console``'s width, else
    (e.g. at 80 columns) as the narrow tables (:func:`volume_result_rich_tables_narrow`,
    :func:`agreement_rich_tables_narrow`), in which no number is cut."""
    from rich.console import Console

    from cardbench.benchmark.report import fits

    console = console or Console()
    wide = volume_result_rich_table(summary)
    for t in [wide] if fits(console, wide) else volume_result_rich_tables_narrow(summary):
        console.print(t)
    title = "Agreement with the released volumes (prediction - released)"
    wide = agreement_rich_table(summary["agreement"], title, groupings=groupings)
    for t in [wide] if fits(console, wide) else agreement_rich_tables_narrow(summary["agreement"], title, groupings):
        console.print(t)


def volume_track_rich_tables_narrow(table: pd.DataFrame) -> list[Table]:
    """:func:`volume_track_rich_table` for a narrow terminal (80 columns), each number in a column of its
    own, never cut: (1) the seed README's published row and rule seed's, one row each per model, with
    mean, SD, median, IQR and whether they match; (2) rule cardbench: mean, its 95 % CI, SD, median,
    IQR; (3) the EF bias with its 95 % limits of agreement and the patients not in the model's training
    set (n, mean). |EF prediction - released EF| and the bias in percentage points."""
    kw = dict(title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    stats = ("mean", "sd", "median", "iqr")
    a = Table(title="published (seed README) and rule seed (1149 rows)", **kw)
    for c in ("model", "source", "mean", "SD", "median", "IQR", "match"):
        a.add_column(c, justify="left" if c in ("model", "source") else "right", no_wrap=True)
    b = Table(title="rule cardbench (1140 patients)", **kw)
    for c in ("model", "mean", "95% CI", "SD", "median", "IQR"):
        b.add_column(c, justify="left" if c == "model" else "right", no_wrap=True)
    c3 = Table(title="EF bias (prediction - released) and patients not in training", **kw)
    for c in ("model", "EF bias", "95% limits of agreement", "not in\ntraining n", "mean"):
        c3.add_column(c, justify="left" if c == "model" else "right", no_wrap=True)
    for _, r in table.iterrows():
        m = r.get("match")
        match = "" if m is None or (isinstance(m, float) and math.isnan(m)) else ("[green]yes[/green]" if m else
                                                                               "[red]NO[/red]")
        if pd.isna(r["published_mean"]):
            a.add_row(r["label"], "published", "-", "-", "-", "-", "")
        else:
            a.add_row(r["label"], "published", *(_f(r[f"published_{k}"]) for k in stats), "")
        a.add_row("", "rule seed", *(_f(r[f"seed_{k}"]) for k in stats), match)
        b.add_row(r["label"], _f(r["cardbench_mean"]),
                  _ci(r["cardbench_mean_ci_low"], r["cardbench_mean_ci_high"]).strip() or "-",
                  *(_f(r[f"cardbench_{k}"]) for k in stats[1:]))
        c3.add_row(r["label"], _f(r["ef_bias"]), f"{_f(r['ef_loa_low'])} to {_f(r['ef_loa_high'])}",
                   str(int(r["heldout_n"])), _f(r["heldout_mean"]))
    return [a, b, c3]


def print_volume_track(table: pd.DataFrame, console=None) -> None:
    """Print the volume-track reproduction table (``cardbench volumes reproduce``): one table where it
    fits ``console``'s width, else (e.g. at 80 columns) its title as text and
    :func:`volume_track_rich_tables_narrow`, in which no number is cut."""
    from rich.console import Console

    from cardbench.benchmark.report import fits

    console = console or Console()
    wide = volume_track_rich_table(table)
    if fits(console, wide):
        console.print(wide)
        return
    console.print("Kaggle volume track: |EF prediction - released EF| in percentage points", highlight=False)
    for t in volume_track_rich_tables_narrow(table):
        console.print(t)
