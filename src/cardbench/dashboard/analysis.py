"""Table computations behind the dashboard pages (pandas only; no streamlit, no plotly).

Kept apart from the pages so each is a function a Python user (and a test) can call.

Per-case tables are those of :mod:`cardbench.benchmark.casetable` (one row per level, case and
class). A *case* at the ``volume`` level is a (subject, frame); at the ``image`` level a
(subject, frame, slice).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cardbench.benchmark.aggregate import bootstrap_ci
from cardbench.benchmark.metric_registry import METRICS, direction_of
from cardbench.labelmaps import CLASSES

CASE_KEYS = ["subject", "frame", "slice"]


def metric_columns(per_case: pd.DataFrame) -> list[str]:
    """Metric columns present in a per-case table, in registry order (dice, iou, hd, hd95, assd,
    masd, nsd...): every registered metric appears, none silently disappears."""
    known = [m for m in METRICS if m in per_case.columns]
    return known


def level_rows(per_case: pd.DataFrame, level: str) -> pd.DataFrame:
    """Rows of one level (``image`` or ``volume``)."""
    return per_case[per_case["level"] == level]


def worst_cases(per_case: pd.DataFrame, metric: str, level: str, n: int | None = 50) -> pd.DataFrame:
    """The worst cases of a level for ``metric`` first (lowest Dice / highest distance).

    Rows with no value (NaN: excluded by the protocol's policy) come last. Returns the columns
    subject, frame, slice, phase, split, class, status, the metric, ref/pred voxel counts.
    """
    rows = level_rows(per_case, level)
    direction = direction_of(metric)
    key = rows[metric] * direction
    out = rows.assign(_k=key.fillna(np.inf)).sort_values(["_k", "subject", "frame"], kind="stable")
    cols = [c for c in ["subject", "frame", "slice", "phase", "split", "class", "status", metric,
                        "ref_voxels", "pred_voxels"] if c in out.columns]
    out = out[cols]
    if level == "volume" and "slice" in out:
        out = out.drop(columns="slice")
    return out.head(n).reset_index(drop=True) if n else out.reset_index(drop=True)


def status_table(per_case: pd.DataFrame, level: str) -> pd.DataFrame:
    """Counts of each status per class at ``level`` (class x status)."""
    rows = level_rows(per_case, level)
    t = rows.groupby(["class", "status"]).size().unstack(fill_value=0)
    return t.reindex([c for c in CLASSES if c in t.index] + [c for c in t.index if c not in CLASSES])


def subject_table(per_case: pd.DataFrame, metric: str, level: str) -> pd.DataFrame:
    """Per-subject mean of ``metric`` at ``level`` (NaN excluded): rows subjects, columns classes."""
    rows = level_rows(per_case, level)
    t = rows.groupby(["subject", "class"])[metric].mean().unstack()
    return t[[c for c in CLASSES if c in t.columns] + [c for c in t.columns if c not in CLASSES]]


def split_sizes(per_case: pd.DataFrame) -> pd.DataFrame:
    """Subjects, volumes (subject x frame) and 2D images per split in a per-case table."""
    recs = []
    vol = level_rows(per_case, "volume")
    img = level_rows(per_case, "image")
    splits = sorted(set(vol["split"].fillna("").astype(str)) | set(img["split"].fillna("").astype(str)))
    for sp in splits:
        v = vol[vol["split"].fillna("").astype(str) == sp]
        i = img[img["split"].fillna("").astype(str) == sp]
        recs.append({"split": sp or "-", "subjects": int(pd.concat([v["subject"], i["subject"]]).nunique()),
                     "volumes": int(v[["subject", "frame"]].drop_duplicates().shape[0]),
                     "images": int(i[["subject", "frame", "slice"]].drop_duplicates().shape[0])})
    return pd.DataFrame(recs, columns=["split", "subjects", "volumes", "images"])


def subjects_per_split(per_case: pd.DataFrame) -> pd.DataFrame:
    """One row per subject with its split (sorted by split, then subject)."""
    t = per_case[["subject", "split"]].drop_duplicates().copy()
    t["split"] = t["split"].fillna("").astype(str).replace("", "-")
    return t.sort_values(["split", "subject"], kind="stable").reset_index(drop=True)


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str, level: str, tol: float = 0.0) -> pd.DataFrame:
    """Pair two per-case tables on the same cases.

    Args:
        a, b: per-case tables of two entries of one benchmark.
        metric: metric column.
        level: ``image`` or ``volume``.
        tol: differences with ``|a - b| <= tol`` are ties.

    Returns:
        One row per (case, class) present in both with a value in both: subject, frame, slice,
        phase, class, ``a``, ``b``, ``diff`` = a - b (as ``cardbench compare``), ``better`` in {``A``, ``tie``, ``B``} (by the
        metric's direction: for Dice higher is better, for distances lower). ``df.attrs`` has
        ``only_a``, ``only_b`` (cases in one table only) and ``nan`` (pairs with a NaN side).
    """
    keys = ["subject", "frame", "slice", "class"]
    ra = level_rows(a, level)
    rb = level_rows(b, level)
    ka = ra[keys + ["phase", metric]].rename(columns={metric: "a"})
    kb = rb[keys + [metric]].rename(columns={metric: "b"})
    for df in (ka, kb):
        df["subject"] = df["subject"].astype(str)
        for c in ("frame", "slice"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    m = ka.merge(kb, on=keys, how="outer", indicator=True)
    only_a = int((m["_merge"] == "left_only").sum())
    only_b = int((m["_merge"] == "right_only").sum())
    both = m[m["_merge"] == "both"].drop(columns="_merge")
    nan = int((both["a"].isna() | both["b"].isna()).sum())
    both = both.dropna(subset=["a", "b"]).copy()
    both["diff"] = both["a"] - both["b"]
    direction = direction_of(metric)
    d = both["diff"] * direction
    both["better"] = np.where(d.abs() <= tol, "tie", np.where(d > 0, "A", "B"))
    both = both.reset_index(drop=True)
    both.attrs.update(only_a=only_a, only_b=only_b, nan=nan, metric=metric, level=level, tol=tol,
                      direction=direction)
    return both


def win_tie_loss(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per class: cases, A better, tie, B better, mean of a, mean of b, mean difference (a - b)."""
    recs = []
    for cls, g in pairs.groupby("class", sort=False):
        vc = g["better"].value_counts()
        recs.append({"class": cls, "cases": len(g), "A better": int(vc.get("A", 0)), "tie": int(vc.get("tie", 0)),
                     "B better": int(vc.get("B", 0)), "mean A": float(g["a"].mean()), "mean B": float(g["b"].mean()),
                     "mean diff (A - B)": float(g["diff"].mean())})
    t = pd.DataFrame(recs, columns=["class", "cases", "A better", "tie", "B better", "mean A", "mean B",
                                    "mean diff (A - B)"])
    order = {c: i for i, c in enumerate(CLASSES)}
    return t.sort_values("class", key=lambda s: s.map(lambda c: order.get(c, 99))).reset_index(drop=True)


def subject_differences(pairs: pd.DataFrame, n_boot: int = 2000, seed: int = 20210421) -> pd.DataFrame:
    """Paired difference at subject level, per class: mean over subjects of each subject's mean
    ``diff`` (a - b), with a 95 % percentile bootstrap CI resampling subjects
    (:func:`cardbench.benchmark.aggregate.bootstrap_ci`; none with fewer than 2 subjects)."""
    recs = []
    for cls, g in pairs.groupby("class", sort=False):
        sm = g.groupby("subject")["diff"].mean().to_numpy()
        lo, hi = bootstrap_ci(sm, n_boot, seed)
        recs.append({"class": cls, "subjects": int(sm.size), "mean diff (A - B)": float(sm.mean()) if sm.size else np.nan,
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(recs, columns=["class", "subjects", "mean diff (A - B)", "ci_low", "ci_high"])


def flips(pairs: pd.DataFrame) -> pd.DataFrame:
    """Cases whose per-case winner is the opposite of the class's overall winner (by mean), largest
    difference first. Columns: class, subject, frame, slice, phase, a, b, diff, better, overall."""
    out = []
    direction = pairs.attrs.get("direction", 1)
    for cls, g in pairs.groupby("class", sort=False):
        md = g["diff"].mean() * direction
        if md == 0 or np.isnan(md):
            continue
        overall = "A" if md > 0 else "B"
        f = g[(g["better"] != "tie") & (g["better"] != overall)].assign(overall=overall)
        out.append(f)
    if not out:
        return pd.DataFrame(columns=["class", "subject", "frame", "slice", "phase", "a", "b", "diff", "better",
                                     "overall"])
    f = pd.concat(out, ignore_index=True)
    f = f.assign(_k=-f["diff"].abs()).sort_values(["_k", "class", "subject"], kind="stable").drop(columns="_k")
    return f[["class", "subject", "frame", "slice", "phase", "a", "b", "diff", "better", "overall"]].reset_index(
        drop=True)
