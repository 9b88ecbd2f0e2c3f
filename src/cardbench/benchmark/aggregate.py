"""Aggregation of per-case values into the figures a protocol reports, with bootstrap CIs.

``pooled`` (protocol ``ankenbrand2021``): the mean over all values of the group (NaN excluded).

``subject`` (protocol ``cardbench-v1``): the mean of each subject's values first, then the mean over
subjects, so a subject with many slices or frames does not weigh more. The 95 % confidence
interval is the 2.5th and 97.5th percentile of that statistic over ``B`` bootstrap resamples of
subjects with replacement (Efron & Tibshirani 1993, percentile interval), with a fixed seed, so
the interval is reproducible. With fewer than 2 subjects no interval is given.

NaN values (excluded by the policy, e.g. both empty under cardbench-v1) are counted in
``n_excluded`` and never silently dropped from the report. This mirrors MONAI's NaN-aware
reductions (``monai.metrics.utils.do_metric_reduction``) which also return the count of valid values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd

from cardbench.benchmark.protocols import Protocol

if TYPE_CHECKING:
    from cardbench.benchmark.casestore import PerCaseStore

#: groupings reported in summary.json: (name, columns).
GROUPINGS: list[tuple[str, list[str]]] = [
    ("all", []), ("split", ["split"]), ("phase", ["phase"]), ("split+phase", ["split", "phase"]),
]
#: the slice-position grouping (base / mid / apex of the LV): always over the image-level rows,
#: whatever the protocol's level (per-image values aggregated per position, as M&Ms reports them).
POSITION_GROUPING = ("position", ["position"])
POSITIONS = ("base", "mid", "apex")
AGG_COLUMNS = ["grouping", "group", "class", "metric", "mean", "ci_low", "ci_high", "std", "median",
               "n_subjects", "n_values", "n_excluded"]


#: a block of resamples holds at most this many values (8 bytes each as float64: 2 MB; the
#: agreement statistics hold about six such arrays at once), so no dense ``n_boot x subjects``
#: float matrix is built for large cohorts. The block size never changes a result.
BLOCK_VALUES = 1 << 18
#: index matrices of at most this many bytes (in the smallest integer type that holds the
#: subject index) are drawn once and cached (at most :data:`CACHE_ENTRIES` of them, so the cache
#: never holds more than 32 MB); larger ones are drawn block by block on every call (same rows).
CACHE_BYTES = 8 << 20
CACHE_ENTRIES = 4


def _index_dtype(n: int):
    return np.uint16 if n <= 1 << 16 else (np.uint32 if n <= 1 << 32 else np.int64)


def _rows_per_block(n: int, block_values: int | None = None) -> int:
    return max(1, int(block_values or BLOCK_VALUES) // max(n, 1))


@lru_cache(maxsize=CACHE_ENTRIES)
def _cached_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n), dtype=_index_dtype(n))
    step = _rows_per_block(n)
    for a in range(0, n_boot, step):
        b = min(n_boot, a + step)
        out[a:b] = rng.integers(0, n, size=(b - a, n))
    out.setflags(write=False)
    return out


def clear_bootstrap_cache() -> None:
    """Forget the cached resample matrices (the next draw is made again from the seed)."""
    _cached_indices.cache_clear()


def bootstrap_blocks(n: int, n_boot: int, seed: int, block_values: int | None = None) -> Iterator[np.ndarray]:
    """The rows of the bootstrap resample matrix ``(n_boot, n)`` of subject indices, in blocks
    of consecutive rows ``(b, n)`` with ``b * n <= block_values`` (default :data:`BLOCK_VALUES`).

    The rows are exactly those of ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``
    (numpy's generator gives the same stream whether the matrix is drawn at once or row block by
    row block), so any statistic computed row by row is identical to the dense computation, for
    every ``n`` and block size. Matrices up to :data:`CACHE_BYTES` are drawn once and cached, so
    every metric and class of one run is resampled identically (paired) at no extra cost; larger
    ones are drawn again on every call (same rows, bounded memory).
    """
    step = _rows_per_block(n, block_values)
    if n_boot * n * np.dtype(_index_dtype(n)).itemsize <= CACHE_BYTES:
        full = _cached_indices(n, n_boot, seed)
        for a in range(0, n_boot, step):
            yield full[a:a + step]
        return
    rng = np.random.default_rng(seed)
    for a in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(n_boot, a + step) - a, n))


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resample matrix ``(n_boot, n)`` of subject indices (int64, read-only): the rows
    of :func:`bootstrap_blocks` as one dense matrix. Prefer :func:`bootstrap_blocks` for large
    ``n``; cardbench itself only uses the blocks."""
    idx = np.concatenate([b.astype(np.int64) for b in bootstrap_blocks(n, n_boot, seed)]) if n_boot > 0 \
        else np.empty((0, n), dtype=np.int64)
    idx.setflags(write=False)
    return idx


def bootstrap_ci(subject_means: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``subject_means`` (one value per subject).

    The resamples are the rows of :func:`bootstrap_blocks`, averaged block by block (memory
    bounded by :data:`BLOCK_VALUES`, not by ``n_boot x subjects``).

    Args:
        subject_means: 1D array of per-subject values, no NaN.
        n_boot: number of resamples (0 gives NaN bounds).
        seed: seed of numpy's default generator.
        alpha: 1 - coverage (0.05 for 95 %).

    Returns:
        (low, high); (NaN, NaN) with fewer than 2 subjects or ``n_boot == 0``.
    """
    x = np.asarray(subject_means, dtype=np.float64)
    if n_boot <= 0 or x.size < 2:
        return (np.nan, np.nan)
    means = np.concatenate([x[blk].mean(axis=1) for blk in bootstrap_blocks(x.size, n_boot, seed)])
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def subject_means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Mean of ``metric`` per subject (NaN excluded); subjects with only NaN are dropped."""
    return rows.groupby("subject", sort=True)[metric].mean().dropna()


def _summarise(rows: pd.DataFrame, metric: str, protocol: Protocol, seed_offset: int) -> dict:
    vals = rows[metric].to_numpy(np.float64)
    valid = vals[~np.isnan(vals)]
    out = {"n_values": int(valid.size), "n_excluded": int(vals.size - valid.size),
           "n_subjects": int(rows.loc[~np.isnan(vals), "subject"].nunique())}
    if protocol.aggregation == "subject":
        sm = subject_means(rows, metric).to_numpy()
        mean = float(sm.mean()) if sm.size else np.nan
        std = float(sm.std(ddof=1)) if sm.size > 1 else np.nan
        median = float(np.median(sm)) if sm.size else np.nan
        lo, hi = bootstrap_ci(sm, protocol.bootstrap, protocol.seed + seed_offset)
    else:
        mean = float(valid.mean()) if valid.size else np.nan
        std = float(valid.std(ddof=1)) if valid.size > 1 else np.nan
        median = float(np.median(valid)) if valid.size else np.nan
        if protocol.bootstrap:
            sm = subject_means(rows, metric).to_numpy()
            lo, hi = bootstrap_ci(sm, protocol.bootstrap, protocol.seed + seed_offset)
        else:
            lo, hi = np.nan, np.nan
    out.update(mean=mean, std=std, median=median, ci_low=lo, ci_high=hi)
    return out


def _summarise_classes(rows: pd.DataFrame, metrics: list[str], protocol: Protocol):
    """:func:`_summarise` of every class and metric of one group's rows, classes in order of first
    appearance: one per-subject groupby for all classes and metrics (pandas computes each group's
    mean the same way as one groupby per class and metric, so the values are identical).

    Yields:
        (class, metric, summary dict).
    """
    if rows.empty or not metrics:
        return
    sm_all = rows.groupby(["class", "subject"], sort=True)[metrics].mean()
    for cls, pos in rows.groupby("class", sort=False).indices.items():
        sm_cls = sm_all.xs(cls, level="class")
        for m in metrics:
            vals = rows[m].to_numpy(np.float64)[pos]
            valid = vals[~np.isnan(vals)]
            sm = sm_cls[m].dropna().to_numpy()
            rec = {"n_values": int(valid.size), "n_excluded": int(vals.size - valid.size),
                   "n_subjects": int(sm.size)}
            if protocol.aggregation == "subject":
                mean = float(sm.mean()) if sm.size else np.nan
                std = float(sm.std(ddof=1)) if sm.size > 1 else np.nan
                median = float(np.median(sm)) if sm.size else np.nan
                lo, hi = bootstrap_ci(sm, protocol.bootstrap, protocol.seed)
            else:
                mean = float(valid.mean()) if valid.size else np.nan
                std = float(valid.std(ddof=1)) if valid.size > 1 else np.nan
                median = float(np.median(valid)) if valid.size else np.nan
                lo, hi = bootstrap_ci(sm, protocol.bootstrap, protocol.seed) if protocol.bootstrap else (np.nan, np.nan)
            rec.update(mean=mean, std=std, median=median, ci_low=lo, ci_high=hi)
            yield cls, m, rec


def _group_label(column: str, key) -> str:
    """Label of one group key: an empty phase is a frame that is neither ED nor ES (``other``); an
    empty split is unknown (``-``)."""
    if pd.isna(key) or key == "":
        return "other" if column == "phase" else "-"
    return str(key)


def class_rows(per_case: "pd.DataFrame | PerCaseStore", level: str,
               columns: list[str] | None = None) -> Iterator[tuple[str, pd.DataFrame]]:
    """The rows of ``per_case`` at ``level``, one class (or region) at a time, classes in the order
    of the table (first appearance), rows in table order.

    ``per_case`` is a DataFrame or a :class:`~cardbench.benchmark.casestore.PerCaseStore`; a store
    reads only ``columns`` (default: all) of one class from disk at a time, so memory holds one
    class's rows at one level, never the whole table.

    Yields:
        (class, DataFrame of that class's rows).
    """
    from cardbench.benchmark.casestore import PerCaseStore

    if isinstance(per_case, PerCaseStore):
        for cls in per_case.classes:
            df = per_case.read(columns, level=level, cls=cls)
            if len(df):
                yield cls, df
        return
    rows = per_case[per_case["level"] == level]
    if columns is not None:
        rows = rows[[c for c in dict.fromkeys(list(columns) + ["class"]) if c in rows.columns]]
    for cls, idx in rows.groupby("class", sort=False).indices.items():
        yield cls, rows.iloc[idx]


def aggregate(per_case: "pd.DataFrame | PerCaseStore", protocol: Protocol,
              metrics: list[str] | None = None) -> pd.DataFrame:
    """Aggregate the per-case table under ``protocol`` for every grouping in :data:`GROUPINGS`.

    Only rows at the protocol's level (image or volume) are used, except for the ``position``
    grouping (base / mid / apex, :func:`cardbench.benchmark.casetable.slice_positions`), which
    aggregates the image-level rows of each position with the protocol's aggregation (per subject
    first under ``subject``). A grouping whose column is empty everywhere is skipped. An empty phase
    is labelled ``other`` (neither ED nor ES), an empty split ``-``.

    The work is done one class at a time (:func:`class_rows`): every figure of a class depends
    only on that class's rows, so the result is the same as over the whole table, and a
    :class:`~cardbench.benchmark.casestore.PerCaseStore` is never read into memory whole.

    Args:
        per_case: table from :func:`cardbench.benchmark.casetable.per_case_table`, or its store.
        protocol: level, aggregation, bootstrap settings.
        metrics: metric columns to aggregate (default: the protocol's metrics present in the table).

    Returns:
        DataFrame with :data:`AGG_COLUMNS`: groupings in :data:`GROUPINGS` order (then
        ``position``), groups in sorted order, classes in table order, metrics in protocol order.
    """
    all_cols = list(per_case.columns)
    metrics = [m for m in (metrics or protocol.all_metrics) if m in all_cols]
    group_cols = sorted({c for _, cols in GROUPINGS for c in cols if c in all_cols})
    with_position = "position" in all_cols
    need = ["subject", "class"] + group_cols + metrics + (["position"] if with_position else [])
    # per grouping: group label -> class -> records; labels in sorted order (first class that has them)
    found: dict[int, dict[str, dict[str, list]]] = {i: {} for i in range(len(GROUPINGS))}
    empty_everywhere = {i: True for i in range(len(GROUPINGS))}
    pos_found: dict[str, dict[str, list]] = {p: {} for p in POSITIONS}
    classes: list[str] = []
    for cls, rows in class_rows(per_case, protocol.level, need):
        classes.append(cls)
        for gi, (gname, cols) in enumerate(GROUPINGS):
            if cols and all((rows[c].fillna("") == "").all() for c in cols):
                continue
            empty_everywhere[gi] = False
            groups = [((), rows)] if not cols else rows.groupby(cols, sort=True, dropna=False)
            for gkey, grows in groups:
                gkey = gkey if isinstance(gkey, tuple) else (gkey,)
                label = "/".join(_group_label(c, k) for c, k in zip(cols, gkey)) if cols else "all"
                recs = found[gi].setdefault(label, {}).setdefault(cls, [])
                for c2, m, summ in _summarise_classes(grows, metrics, protocol):
                    recs.append({"grouping": gname, "group": label, "class": c2, "metric": m, **summ})
        if with_position and protocol.level == "image":
            _position_records(rows, cls, metrics, protocol, pos_found)
    if with_position and protocol.level != "image":
        for cls, rows in class_rows(per_case, "image", ["subject", "class", "position"] + metrics):
            if cls not in classes:
                classes.append(cls)
            _position_records(rows, cls, metrics, protocol, pos_found)
    records = []
    for gi in range(len(GROUPINGS)):
        if GROUPINGS[gi][1] and empty_everywhere[gi]:
            continue
        for label, by_cls in found[gi].items():
            for cls in classes:
                records.extend(by_cls.get(cls, []))
    for pos in POSITIONS:
        for cls in classes:
            records.extend(pos_found[pos].get(cls, []))
    return pd.DataFrame.from_records(records, columns=AGG_COLUMNS)


def _position_records(rows: pd.DataFrame, cls: str, metrics: list[str], protocol: Protocol,
                      out: dict[str, dict[str, list]]) -> None:
    """Records of the ``position`` grouping of one class's image-level rows, into ``out[pos][cls]``."""
    img = rows[rows["position"].isin(POSITIONS)]
    for pos in POSITIONS:
        prow = img[img["position"] == pos]
        for c2, m, summ in _summarise_classes(prow, metrics, protocol):
            out[pos].setdefault(cls, []).append({"grouping": POSITION_GROUPING[0], "group": pos, "class": c2,
                                                 "metric": m, **summ})


def per_subject_table(per_case: "pd.DataFrame | PerCaseStore", protocol: Protocol,
                      metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-subject means at the protocol's level: subject, split, class, metric, mean, n_values, n_excluded.

    Rows sorted by subject, class, then metric (protocol order); ``mean`` is the mean of the
    subject's values (NaN excluded), ``n_values`` their number, ``n_excluded`` the NaN ones. Worked
    one class at a time (:func:`class_rows`).
    """
    cols = ["subject", "split", "class", "metric", "mean", "n_values", "n_excluded"]
    all_cols = list(per_case.columns)
    metrics = [m for m in (metrics or protocol.all_metrics) if m in all_cols]
    if not metrics:
        return pd.DataFrame(columns=cols)
    parts = []
    for cls, rows in class_rows(per_case, protocol.level, ["subject", "split", "class"] + metrics):
        g = rows.groupby("subject", sort=True)
        mean, count, size = g[metrics].mean(), g[metrics].count(), g.size()
        split = g["split"].first()
        for m in metrics:
            part = pd.DataFrame({"subject": mean.index.to_numpy(), "split": split.to_numpy(), "class": cls,
                                 "metric": m, "mean": mean[m].to_numpy(), "n_values": count[m].to_numpy(),
                                 "n_excluded": size.to_numpy() - count[m].to_numpy()})
            parts.append(part)
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out["_m"] = out["metric"].map({m: i for i, m in enumerate(metrics)})
    out = out.sort_values(["subject", "class", "_m"], kind="stable").drop(columns="_m").reset_index(drop=True)
    return out[cols]
