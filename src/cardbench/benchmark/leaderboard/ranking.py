"""Order and rank of the entries of one benchmark by one aggregated figure (pure functions on the
index tables); the rank uncertainty (bootstrap of ranks) is :mod:`cardbench.benchmark.ranking`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from cardbench.benchmark.leaderboard.folder import (
    CLINICAL_INDICES, CLINICAL_STATS, PHASES, LeaderboardError, NoValidEntryError,
)
from cardbench.benchmark.metric_registry import direction_of, unit_of
from cardbench.labelmaps import CLASSES


def parse_metric(spec: str) -> tuple[str, str | None, str]:
    """Parse a metric spec ``<metric>_<class>[_<phase>]`` into (metric, class, group).

    Examples: ``dice_lv`` -> (``dice``, ``LV``, ``all``); ``hd95_my_es`` -> (``hd95``, ``MY``,
    ``ES``); ``dice_lv_apex`` -> (``dice``, ``LV``, ``apex``) (slice position); ``dice`` -> (``dice``, None, ``all``) (class chosen by the caller); ``mae_lvef`` ->
    (``mae``, ``LVEF``, ``all``): a clinical index (:data:`CLINICAL_INDICES`) takes the place of the
    class, with an agreement statistic (:data:`CLINICAL_STATS`) as the metric. Case-insensitive for
    class and phase.
    """
    parts = spec.strip().split("_")
    group = "all"
    cls = None
    if len(parts) > 1 and parts[-1].upper() in PHASES:
        group = parts.pop().upper()
    elif len(parts) > 2 and parts[-1].lower() in ("base", "mid", "apex"):  # slice position of the LV
        group = parts.pop().lower()
    if len(parts) > 1 and (parts[-1].upper() in CLASSES or parts[-1].upper() in CLINICAL_INDICES):
        cls = parts.pop().upper()
    metric = "_".join(parts).lower()
    if not metric:
        raise LeaderboardError(f"invalid metric {spec!r}: expected <metric>_<class>[_<phase>], e.g. dice_lv")
    return metric, cls, group


def rank_table(aggregates: pd.DataFrame, entries: pd.DataFrame, metric: str = "dice_lv", *,
               metrics: Iterable[str] | None = None, group: str | None = None, protocol: dict | None = None,
               bench: str = "") -> pd.DataFrame:
    """Rank entries from the long aggregates table; see :meth:`Leaderboard.ranked` for the columns.

    Raises:
        NoValidEntryError: ``entries`` is empty (no entry yet, or every entry skipped as corrupt).
        LeaderboardError: the metric, class or group is not in the table (lists the valid ones).
    """
    if not len(entries):
        raise NoValidEntryError(f"benchmark '{bench}': no valid entry to rank (none yet, or every entry was "
                                "skipped as corrupt: see the warnings)")
    m, cls, grp = parse_metric(metric)
    group = group or grp
    agg = aggregates
    if group == "all":
        sel = agg[(agg["grouping"] == "all")]
    else:
        sel = agg[(agg["group"] == group) & (agg["grouping"].isin(["phase", "split", "position"]))]
    if sel.empty:
        groups = sorted(set(agg.loc[agg["grouping"].isin(["phase", "split", "position"]), "group"]) - {"-"})
        raise LeaderboardError(f"benchmark '{bench}': no aggregate for group '{group}' "
                               f"(groups: all{', ' if groups else ''}{', '.join(groups)})")
    present_metrics = list(dict.fromkeys(sel["metric"]))
    if m not in present_metrics and "_" in m and m.rsplit("_", 1)[0] in present_metrics:
        fam, bad = m.rsplit("_", 1)
        known = [c for c in dict.fromkeys(sel.loc[sel["metric"] == fam, "class"])]
        raise LeaderboardError(f"benchmark '{bench}': no class '{bad.upper()}' for metric '{fam}' "
                               f"(classes: {', '.join(known)}); give --metric as <metric>_<class>, e.g. {fam}_lv")
    if m not in present_metrics:
        raise LeaderboardError(f"benchmark '{bench}': no metric '{m}' (metrics: {', '.join(present_metrics)}); "
                               "give --metric as <metric>_<class>[_<phase>], e.g. dice_lv")
    msel = sel[sel["metric"] == m]
    classes = [c for c in (*CLASSES, *CLINICAL_INDICES) if c in set(msel["class"])] + \
        [c for c in dict.fromkeys(msel["class"]) if c not in CLASSES and c not in CLINICAL_INDICES]
    if cls is None:
        cls = classes[0]
    if cls not in classes:
        raise LeaderboardError(f"benchmark '{bench}': no class '{cls}' (classes: {', '.join(classes)})")
    shown = list(dict.fromkeys([m, *(metrics or [])]))
    wide = pd.DataFrame({"entry": entries["entry"]}) if len(entries) else pd.DataFrame({"entry": []})
    wide = wide.merge(entries, on="entry", how="left")
    for mm in shown:
        for c in classes:
            s = sel[(sel["metric"] == mm) & (sel["class"] == c)].drop_duplicates("entry").set_index("entry")
            key = f"{mm}_{c}"
            wide[key] = wide["entry"].map(s["mean"]).astype(float)
            wide[key + "_ci_low"] = wide["entry"].map(s["ci_low"]).astype(float)
            wide[key + "_ci_high"] = wide["entry"].map(s["ci_high"]).astype(float)
            if mm == m and c == cls:
                wide["n_subjects"] = wide["entry"].map(s["n_subjects"])
                wide["n_values"] = wide["entry"].map(s["n_values"])
                wide["n_excluded"] = wide["entry"].map(s["n_excluded"])
    rank_col = f"{m}_{cls}"
    if "published_values" in wide:
        # the value a paper published for this entry (submission.yaml ``published_values``), shown
        # next to the recomputed one when it is for the same metric, class and protocol
        pname = (protocol or {}).get("name")

        def _paper(pv):
            if not isinstance(pv, dict) or group != "all" or pv.get("protocol") != pname:
                return np.nan
            v = pv.get(rank_col)
            return float(v) if isinstance(v, (int, float)) else np.nan
        paper = wide["published_values"].map(_paper).astype(float)
        wide = wide.drop(columns="published_values")
        if paper.notna().any():
            wide["paper_" + rank_col] = paper
    direction = metric_direction(m)
    vals = wide[rank_col]
    key = vals.abs() if direction == 0 else vals * -direction
    rank = key.rank(method="min", na_option="keep")
    wide.insert(0, "rank", rank.astype("Int64"))
    wide = wide.assign(_k=key.fillna(np.inf)).sort_values(["_k", "entry"], kind="stable")
    wide = wide.drop(columns="_k").reset_index(drop=True)
    has_ci = bool(wide[[c for c in wide.columns if c.endswith("_ci_low")]].notna().any().any())
    # units per class: the metric's (mm for distances), or each clinical index's own (mL, %, g)
    units = {c: unit_of(m) for c in classes}
    if "unit" in msel.columns and m != "pearson_r":
        for c, u in msel.dropna(subset=["unit"]).drop_duplicates("class").set_index("class")["unit"].items():
            if c in CLINICAL_INDICES:
                units[c] = str(u)
    wide.attrs.update({"metric": m, "class": cls, "group": group, "direction": direction,
                       "rank_column": rank_col, "has_ci": has_ci, "shown_metrics": shown, "classes": classes,
                       "unit": units.get(cls, ""), "units": units, "protocol": (protocol or {}).get("name"),
                       "benchmark": bench})
    return wide


def metric_direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 closer to zero is better (a bias)."""
    if metric in CLINICAL_STATS:
        return CLINICAL_STATS[metric]
    return direction_of(metric, 1)


def direction_text(direction: int) -> str:
    """'higher is better', 'lower is better' or 'closer to 0 is better'."""
    return {1: "higher is better", -1: "lower is better"}.get(direction, "closer to 0 is better")


class RankingMixin:
    """:class:`~cardbench.benchmark.leaderboard.Leaderboard` methods that rank entries."""

    def _no_valid_entry(self, bench: str) -> NoValidEntryError:
        """The error for a benchmark without a valid entry: how many were skipped as corrupt, or how to
        add one."""
        n_bad = len(self.problems(bench))
        return NoValidEntryError(
            f"benchmark '{bench}': no valid entry to rank; " + (
                f"its {n_bad} corrupt entr{'y was' if n_bad == 1 else 'ies were'} skipped (see the warning "
                f"line{'' if n_bad == 1 else 's'})" if n_bad else
                f"add one with: cardbench score ... --leaderboard {self.root} --name NAME"))

    def metrics(self, bench: str) -> list[str]:
        """Metric names present in the benchmark's aggregates, in protocol order then the rest."""
        agg = self.aggregates_table(bench)
        present = list(dict.fromkeys(agg["metric"].dropna().tolist())) if len(agg) else []
        proto = self.benchmark(bench).protocol.get("metrics", [])
        return [m for m in proto if m in present] + [m for m in present if m not in proto]

    def ranked(self, bench: str, metric: str = "dice_lv", *, metrics: Iterable[str] | None = None,
               group: str | None = None, aggregates: pd.DataFrame | None = None,
               entries: pd.DataFrame | None = None) -> pd.DataFrame:
        """The ranked leaderboard of one benchmark (wide form, best first).

        Args:
            bench: benchmark id.
            metric: ranking metric ``<metric>_<class>[_<phase>]`` (see :func:`parse_metric`); when
                the class is omitted the first class of the benchmark is used.
            metrics: metric families to show as columns (default: the ranking metric's family).
            group: aggregate group (``all``, ``ED``, ``ES``, a split name); overrides the phase in
                ``metric``.
            aggregates, entries: precomputed :meth:`aggregates_table` / :meth:`entries_table`
                (the dashboard passes its cached copies).

        Returns:
            DataFrame with ``rank`` (Int64; NA for entries without the metric), ``entry``,
            ``label``, ``team``, then per shown metric and class ``<metric>_<class>``,
            ``<metric>_<class>_ci_low``, ``<metric>_<class>_ci_high``, then ``n_subjects`` and
            ``n_values`` of the ranking metric, ``published``, ``added``. ``df.attrs`` holds
            ``metric``, ``class``, ``group``, ``direction`` (+1 higher is better, -1 lower),
            ``rank_column`` and ``has_ci``.

        Raises:
            NoValidEntryError: the benchmark has no entry, or every entry was skipped as corrupt
                (each named by :meth:`problems`).
            LeaderboardError: unknown benchmark, metric, class or group (lists the valid ones).
        """
        info = self.benchmark(bench)
        if aggregates is None or entries is None:
            entries, aggregates = self.tables(bench)
        agg, ent = aggregates, entries
        if not len(ent):
            raise self._no_valid_entry(bench)
        return rank_table(agg, ent, metric, metrics=metrics, group=group, protocol=info.protocol,
                          bench=bench)
