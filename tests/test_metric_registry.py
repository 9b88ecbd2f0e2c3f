"""The metric registry: one MetricSpec per metric is the single source of every table and page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark import metric_registry as reg
from cardbench.benchmark.metric_registry import METRICS, MetricSpec, UnknownMetricError, get_metric


def test_every_metric_has_one_complete_spec():
    assert list(METRICS) == ["dice", "iou", "hd", "hd95", "assd", "masd", "nsd"]
    for name, s in METRICS.items():
        assert s.name == name and s.label and s.family in reg.FAMILIES and s.reference
        assert set(s.edge_cases) == {"ok", "both_empty", "ref_empty", "pred_empty", "not_annotated", "missing",
                                     "failed"}
    # the values the earlier constants held, written out by hand
    assert {n: s.direction for n, s in METRICS.items()} == {
        "dice": 1, "iou": 1, "hd": -1, "hd95": -1, "assd": -1, "masd": -1, "nsd": 1}
    assert {n: s.digits for n, s in METRICS.items()} == {
        "dice": 3, "iou": 3, "hd": 2, "hd95": 2, "assd": 2, "masd": 2, "nsd": 3}
    assert {n: s.unit for n, s in METRICS.items()} == {
        "dice": "", "iou": "", "hd": "mm", "hd95": "mm", "assd": "mm", "masd": "mm", "nsd": ""}
    assert get_metric("nsd").worst == 0.0 and get_metric("hd95").worst is None
    assert get_metric("nsd").parameters["tolerance_mm"] == 2.0


def test_the_old_constants_are_views_of_the_registry():
    from cardbench.benchmark.protocols import METRIC_DIRECTION, METRIC_UNITS, METRIC_WORST

    assert METRIC_DIRECTION["nsd"] == 1 and METRIC_UNITS["hd95"] == "mm" and METRIC_WORST == {
        "dice": 0.0, "iou": 0.0, "nsd": 0.0}
    with pytest.raises(TypeError):
        METRIC_DIRECTION["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        METRICS["x"] = METRICS["dice"]  # type: ignore[index]


def test_specs_are_checked_and_names_are_unique():
    with pytest.raises(ValueError, match="family"):
        MetricSpec("x", "X", "", 1, 3, "shape", from_counts=lambda *a: 0)
    with pytest.raises(ValueError, match="direction"):
        MetricSpec("x", "X", "", 0, 3, "overlap", from_counts=lambda *a: 0)
    with pytest.raises(ValueError, match="reducer"):
        MetricSpec("x", "X", "mm", -1, 2, "distance")
    with pytest.raises(ValueError, match="wrost"):
        MetricSpec("x", "X", "", 1, 3, "overlap", from_counts=lambda *a: 0, edge_cases={"missing": "wrost"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register_metric(METRICS["dice"])
    with pytest.raises(UnknownMetricError, match="known metrics: dice, iou"):
        get_metric("hd96")


def test_a_metric_without_a_spec_cannot_reach_a_table():
    from cardbench.benchmark.casetable import per_case_table
    from cardbench.benchmark.protocols import CARDBENCH_V1

    counts = pd.DataFrame([{"subject": "s1", "frame": 1, "slice": 0, "missing": False,
                            **{f"c{r}{p}": (5 if r == p else 0) for r in range(4) for p in range(4)}}])
    extra = pd.DataFrame([{"level": "image", "subject": "s1", "frame": 1, "slice": 0, "class": "LV",
                           "hd96": 1.0}])
    with pytest.raises(UnknownMetricError, match="'hd96' is no registered metric"):
        per_case_table(counts, ["LV"], CARDBENCH_V1, lambda s: "", lambda s, f: "", extra=extra)
    ok = per_case_table(counts, ["LV"], CARDBENCH_V1, lambda s: "", lambda s, f: "")
    assert ok["dice"].tolist() == [1.0, 1.0]  # image and volume: 2 TP / (2 TP) = 1


def test_reports_take_digits_from_the_spec():
    from rich.console import Console

    from cardbench.benchmark.report import summary_table
    from cardbench.benchmark.results import ScoreResult

    agg = pd.DataFrame([{"grouping": "all", "group": "all", "class": "LV", "metric": m, "mean": v,
                         "ci_low": np.nan, "ci_high": np.nan, "std": np.nan, "median": v, "n_subjects": 1,
                         "n_values": 1, "n_excluded": 0} for m, v in (("dice", 0.912345), ("hd95", 3.14159),
                                                                       ("nsd", 0.876543))])
    summary = {"protocol": {"name": "p", "version": "1.1", "metrics": ["dice", "hd95"], "added_metrics": ["nsd"],
                            "bootstrap": None, "nsd_tolerance_mm": 2.0}, "submission": {"name": "s"},
               "dataset": {"name": "d"}}
    res = ScoreResult(summary=summary, per_case=pd.DataFrame(), per_subject=pd.DataFrame(), aggregates=agg)
    con = Console(width=200, record=True)
    con.print(summary_table(res, groupings=("all",)))
    text = con.export_text()
    assert "0.912" in text and "0.9123" not in text and "3.14" in text and "3.142" not in text
    assert "nsd@2mm" in text and "0.877" in text


def test_dashboard_metric_selectors_come_from_the_registry():
    pytest.importorskip("plotly")
    from cardbench.dashboard.analysis import metric_columns
    from cardbench.dashboard.charts import _axis_title

    df = pd.DataFrame(columns=["level", "nsd", "dice", "hd95", "other"])
    assert metric_columns(df) == ["dice", "hd95", "nsd"]
    assert _axis_title("nsd", "LV") == "NSD LV" and _axis_title("hd95") == "HD95 (mm)"


def test_leaderboard_ranks_nsd_higher_is_better():
    from cardbench.benchmark.leaderboard import metric_direction

    assert metric_direction("nsd") == 1 and metric_direction("hd95") == -1 and metric_direction("dice") == 1
