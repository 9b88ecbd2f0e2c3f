"""Ranked tables as text (terminal table, CSV, Markdown, JSON) and their export to a folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterable

import pandas as pd

from cardbench._util import atomic_dir, atomic_write_text, staged_dir, terminal_safe
from cardbench.benchmark.leaderboard.folder import (
    BENCHMARK_FILE, CLINICAL_STATS, ENTRIES, LeaderboardError, NoValidEntryError,
)
from cardbench.benchmark.leaderboard.ranking import direction_text, parse_metric
from cardbench.benchmark.metric_registry import digits_of, unit_of
from cardbench.benchmark.results import to_json


def _fmt_num(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "-"
    return f"{x:.{digits}f}"


def display_table(ranked: pd.DataFrame, digits: int | None = None) -> pd.DataFrame:
    """Readable strings: ``mean [ci_low, ci_high]`` per metric and class (CI only where present).

    The submitters' text (entry name, label) goes through
    :func:`cardbench._util.terminal_safe`: no control character reaches a terminal or a Markdown file."""
    a = ranked.attrs
    out = pd.DataFrame({"rank": ranked["rank"].map(lambda r: "-" if pd.isna(r) else str(int(r))),
                        "entry": ranked["entry"].map(terminal_safe)})
    if "label" in ranked:
        out["label"] = ranked["label"].fillna("").map(terminal_safe)
    for mm in a.get("shown_metrics", []):
        d = digits if digits is not None else digits_of(mm, 3 if mm == "pearson_r" else 2)
        for c in a.get("classes", []):
            key = f"{mm}_{c}"
            if key not in ranked:
                continue
            cells = []
            for v, lo, hi in zip(ranked[key], ranked[key + "_ci_low"], ranked[key + "_ci_high"]):
                s = _fmt_num(v, d)
                if not (pd.isna(lo) or pd.isna(hi)):
                    s += f" [{lo:.{d}f}, {hi:.{d}f}]"
                cells.append(s)
            unit = (a.get("units") or {}).get(c, "") if mm == a.get("metric") else unit_of(mm)
            out[f"{mm} {c}" + (f" ({unit})" if unit else "")] = cells
    if "paper_" + str(a.get("rank_column")) in ranked:
        d = digits_of(str(a.get("metric")))
        out[f"published {a.get('metric')} {a.get('class')}"] = ranked["paper_" + a["rank_column"]].map(
            lambda v: _fmt_num(v, d))
    if "n_subjects" in ranked:
        out["subjects"] = ranked["n_subjects"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
        out["values"] = ranked["n_values"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
    return out


def terminal_safe_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells (the submitters' entry name, label, team, method, url...) went
    through :func:`cardbench._util.terminal_safe`: a CSV printed to a terminal carries no control
    character. Numbers and missing values are kept as they are."""
    safe = df.copy()
    for c in safe.columns:
        if pd.api.types.is_object_dtype(safe[c]) or pd.api.types.is_string_dtype(safe[c]):
            safe[c] = safe[c].map(lambda v: terminal_safe(v) if isinstance(v, str) else v)
    return safe


def render(ranked: pd.DataFrame, fmt: str = "csv", title: str = "") -> str:
    """Render a ranked table as ``csv`` (numbers), ``json`` (records + attrs) or ``markdown``.

    Raises:
        LeaderboardError: unknown format.
    """
    if fmt == "csv":
        return terminal_safe_columns(ranked).to_csv(index=False, float_format="%.10g")
    if fmt == "json":
        recs = json.loads(ranked.to_json(orient="records"))
        return to_json({"benchmark": ranked.attrs.get("benchmark"), "title": title,
                        "ranked_by": ranked.attrs.get("rank_column"), "group": ranked.attrs.get("group"),
                        "direction": direction_text(ranked.attrs.get("direction", 1)), "entries": recs}) + "\n"
    if fmt == "markdown":
        disp = display_table(ranked)
        lines = []
        if title:
            lines += [f"### {title}", ""]
        a = ranked.attrs
        lines += [f"Ranked by {a.get('rank_column')} ({a.get('group')}), {direction_text(a.get('direction', 1))}"
                  + ("; 95 % CI in brackets" if a.get("has_ci") else "") + ".", ""]
        cols = list(disp.columns)
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---:" if c not in ("entry", "label") else "---" for c in cols) + "|")
        for _, r in disp.iterrows():
            lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
        return "\n".join(lines) + "\n"
    raise LeaderboardError(f"unknown format {fmt!r}; use table, csv, markdown or json")



def check_export_target(root: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``out`` as a folder an export may write into: never the leaderboard folder ``root``, a folder
    inside it, or a folder that holds it (an export there would replace or mix with the entries).

    Raises:
        LeaderboardError: ``out`` overlaps the leaderboard (the message names the fix).
    """
    out = Path(out)
    r, o = Path(root).resolve(), out.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise LeaderboardError(f"{out}: is, is inside or holds the leaderboard folder {root}; export to a "
                               "folder outside it (nothing was written)")
    return out


class RenderingMixin:
    """:class:`~cardbench.benchmark.leaderboard.Leaderboard` methods that export ranked tables."""

    def check_metric(self, metric: str, benches: Iterable[str]) -> None:
        """Refuse ``metric`` when none of ``benches`` has it (a clinical agreement statistic passes).

        Raises:
            LeaderboardError: one line naming the metric and the metrics there are.
        """
        benches = list(benches)
        wanted = parse_metric(metric)[0]
        known = sorted({m for b in benches for m in self.metrics(b)})
        if known and wanted not in known and wanted not in CLINICAL_STATS:
            where = f"benchmark {benches[0]}" if len(benches) == 1 else "any benchmark"
            raise LeaderboardError(f"no metric '{metric}' in {where}; use one of {known} (with a class, e.g. "
                                   f"{known[0]}_lv)")

    def export(self, out: str | os.PathLike, bench: str | None = None, metric: str = "dice_lv",
               formats: Iterable[str] = ("csv", "markdown", "json"), with_entries: bool = False, *,
               strict: bool | None = None) -> list[Path]:
        """Export ranked tables (and optionally full entries) to a folder.

        Writes ``<out>/<benchmark>.csv`` / ``.md`` / ``.json`` for each benchmark (or only
        ``bench``), ranked by ``metric`` (benchmarks without that metric are ranked by their first
        metric and class), plus, with ``with_entries``, a copy of each benchmark folder under
        ``<out>/leaderboard/`` (a leaderboard another user can open). A corrupt entry is left out
        (named by :meth:`problems`); without ``bench``, a benchmark with no valid entry is left out
        too. Everything is written into a temporary folder next to ``out`` and moved into ``out``
        at the end (:func:`cardbench._util.staged_dir`): a failed export changes nothing in ``out``.
        Returns the written paths.

        ``strict`` (default: True when ``bench`` is given) refuses a benchmark without ``metric``
        instead of ranking it by its first metric; a ``metric`` that no benchmark has is always refused.

        Raises:
            LeaderboardError: ``out`` is, is inside or holds the leaderboard folder; the metric is
                missing (see ``strict``).
            NoValidEntryError: ``bench`` has no valid entry.
            FileExistsError: ``<out>/leaderboard/<benchmark>`` exists and cardbench did not write it.
        """
        out = check_export_target(self.root, out)
        written = []
        benches = [bench] if bench else self.benchmark_ids()
        strict = bench is not None if strict is None else strict
        self.check_metric(metric, benches if strict else self.benchmark_ids())
        with staged_dir(out) as stage:
            for b in benches:
                try:
                    df = self.ranked(b, metric)
                except NoValidEntryError:
                    if bench:  # the caller names that benchmark's skip (the CLI prints it)
                        raise
                    continue
                except LeaderboardError:
                    if strict:  # the one benchmark asked for: its own error (no such class or group)
                        raise
                    ms = self.metrics(b)  # another benchmark without that metric: its first one
                    df = self.ranked(b, ms[0] if ms else "dice")
                for fmt in formats:
                    ext = {"csv": "csv", "markdown": "md", "json": "json"}[fmt]
                    atomic_write_text(stage / f"{b}.{ext}", render(df, fmt, title=self.benchmark(b).title))
                    written.append(out / f"{b}.{ext}")
                if with_entries:  # a user's folder of that name in OUT is never replaced (staged_dir)
                    with atomic_dir(stage / "leaderboard" / b, overwrite=True) as tmp:
                        shutil.copy2(self.root / b / BENCHMARK_FILE, tmp / BENCHMARK_FILE)
                        for n in df["entry"]:  # exactly the checked entries of the ranked table
                            if str(self.root / b / ENTRIES / n) in self.skipped:
                                continue  # corrupt: named by problems(), never copied
                            shutil.copytree(self.root / b / ENTRIES / n, tmp / ENTRIES / n)
                    written.append(out / "leaderboard" / b)
        return written
