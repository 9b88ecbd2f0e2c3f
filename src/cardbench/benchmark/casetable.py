"""From raw confusion counts to the per-case table: one row per (level, case, class).

Every input format ends here: NIfTI volumes and PNG images (counted per 2D slice by
:mod:`cardbench.benchmark.scoring`) and the seed's published confusion tables
(:mod:`cardbench.benchmark.confusion_tables`). So a score is computed by the same code whatever the
input.

The *counts table* has one row per 2D image with columns ``subject`` (str), ``frame`` (int or
NA), ``slice`` (int), ``c00`` .. ``c33`` (confusion counts, reference row x prediction column, see
:mod:`cardbench.benchmark.confusion`), ``missing`` (bool: prediction absent), and optionally
``ref_file``, ``pred_file``, ``voxel_ml`` (volume of one voxel in mL) and ``fov_diag_mm``.

The *per-case table* (``per_case.csv``) has one row per level (``image`` = 2D slice, ``volume`` =
all slices of one subject and frame), case and class, with the counts, the status and the metric
values after the protocol's policy.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd

from cardbench.benchmark.confusion import N_LABELS
from cardbench.benchmark.metric_registry import METRICS, UnknownMetricError, get_metric
from cardbench.benchmark.metrics import MISSING, NOT_ANNOTATED, status_from_counts
from cardbench.benchmark.protocols import Protocol
from cardbench.labelmaps import CLASS_VALUES

COUNT_COLUMNS = [f"c{r}{p}" for r in range(N_LABELS) for p in range(N_LABELS)]


def count_columns(n_labels: int = N_LABELS) -> list[str]:
    """Count columns ``c<ref><pred>`` of ``n_labels`` labels (``c00`` .. ``c33`` for 4; a label map with
    further classes has more, e.g. ``c44`` for LA = 4)."""
    return [f"c{r}{p}" for r in range(n_labels) for p in range(n_labels)]


def n_labels_of(counts: pd.DataFrame) -> int:
    """Number of labels of a counts table, from its count columns (4 when it has c00..c33)."""
    n = N_LABELS
    while f"c{n}{n}" in counts.columns:
        n += 1
    return n
#: column order of per_case.csv (metric columns follow, then file columns).
ID_COLUMNS = ["level", "subject", "frame", "slice", "phase", "split", "class", "status",
              "ref_voxels", "pred_voxels", "tp", "fp", "fn"]

#: overlap metrics every per-case table holds (readers of per_case.csv rely on these columns).
BASE_OVERLAP_METRICS = ("dice", "iou")
#: columns of ``extra`` that are not metric values.
_EXTRA_NON_METRIC = ("n_ref_boundary", "n_pred_boundary")


def status_group_of(metric: str) -> str | None:
    """The status group of a metric (its spec's ``status_group``): ``<group>_status`` columns of
    the surface engine override the count-based status of every metric of the group."""
    spec = METRICS.get(metric)
    return spec.status_group if spec is not None else None

#: slice positions of the LV, from base to apex (see :func:`slice_positions`).
POSITIONS = ("base", "mid", "apex")

SplitFn = Callable[[str], str]
PhaseFn = Callable[[str, "int | None"], str]
AnnotFn = Callable[[str, "int | None"], "frozenset[str] | None"]


def volume_counts(images: pd.DataFrame) -> pd.DataFrame:
    """Sum the per-image counts of each (subject, frame) into one volume row.

    Args:
        images: counts table (one row per 2D image).

    Returns:
        counts table with one row per (subject, frame); ``slice`` is NA, ``missing`` is True when
        any image of the volume is missing, file columns keep their first value, ``n_slices`` counts
        the images, ``voxel_ml`` and ``fov_diag_mm`` keep their first value (``fov_diag_mm`` is
        taken from ``volume_fov_diag_mm`` when the images carry it).
    """
    keys = ["subject", "frame"]
    agg: dict[str, object] = {c: "sum" for c in count_columns(n_labels_of(images))}
    agg["missing"] = "any"
    for c in ("ref_file", "pred_file", "voxel_ml", "fov_diag_mm", "volume_fov_diag_mm"):
        if c in images.columns:
            agg[c] = "first"
    g = images.groupby(keys, sort=True, dropna=False)
    out = g.agg(agg)
    if "volume_fov_diag_mm" in out.columns:
        # the worst-case distance of a volume is its own field-of-view diagonal, not an image's
        out["fov_diag_mm"] = out.pop("volume_fov_diag_mm")
    out["n_slices"] = g.size()
    out = out.reset_index()
    out["slice"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out


def position_sizes(n: int) -> tuple[int, int, int]:
    """Number of slices in (base, mid, apex) for ``n`` slices holding the reference LV.

    Thirds: ``n = 3 k + r``; ``r = 0``: (k, k, k); ``r = 1``: (k, k + 1, k), the middle slice
    goes to mid; ``r = 2``: (k + 1, k, k + 1), one more slice at each end, so mid stays centred.
    One slice is mid; two slices are base and apex.
    """
    k, r = divmod(int(n), 3)
    return {0: (k, k, k), 1: (k, k + 1, k), 2: (k + 1, k, k + 1)}[r]


def slice_positions(counts: pd.DataFrame) -> np.ndarray:
    """Base / mid / apex of every 2D image of a counts table, from the reference LV.

    Per volume (subject, frame), the slices whose reference holds LV voxels are sorted by slice
    index and split into thirds (:func:`position_sizes`). The base is the end whose third holds
    the larger reference LV area (the LV cavity narrows towards the apex); on a tie, the end with
    the lower slice index. Slices without reference LV get ``""`` (no position). This is the
    basal / mid-ventricular / apical split by which the M&Ms challenge reports per-slice results
    (Campello et al., IEEE TMI 2021;40:3543).

    Args:
        counts: counts table (one row per 2D image; columns subject, frame, slice, c10..c13).

    Returns:
        object array of ``"base"``, ``"mid"``, ``"apex"`` or ``""``, one per row of ``counts``.
    """
    out = np.full(len(counts), "", dtype=object)
    if counts.empty:
        return out
    k = CLASS_VALUES["LV"]
    lv = counts[[f"c{k}{p}" for p in range(N_LABELS)]].to_numpy(np.int64).sum(axis=1)
    tab = pd.DataFrame({"subject": counts["subject"].astype(str).to_numpy(),
                        "frame": counts["frame"].astype("Int64").fillna(-1).to_numpy(np.int64),
                        "slice": counts["slice"].astype("Int64").fillna(-1).to_numpy(np.int64),
                        "lv": lv, "row": np.arange(len(counts))})
    tab = tab[tab["lv"] > 0].sort_values(["subject", "frame", "slice"], kind="stable")
    if tab.empty:
        return out
    # vectorised over all volumes: group id, size and rank of each slice within its volume
    gid = pd.factorize(pd.MultiIndex.from_arrays([tab["subject"], tab["frame"]]))[0]
    size = np.bincount(gid)
    start = np.cumsum(size) - size
    n = size[gid]
    rank = np.arange(len(tab)) - start[gid]
    k, r = np.divmod(n, 3)
    nb = k + (r == 2)
    nm = k + (r == 1)
    na = nb
    idx = np.where(rank < nb, 0, np.where(rank < nb + nm, 1, 2))
    area = tab["lv"].to_numpy(np.float64)
    base_area = np.bincount(gid, weights=np.where(rank < nb, area, 0.0))
    apex_area = np.bincount(gid, weights=np.where(rank >= n - na, area, 0.0))
    flip = (apex_area > base_area)[gid]
    idx = np.where(flip, 2 - idx, idx)  # position_sizes is symmetric: base and apex swap
    out[tab["row"].to_numpy()] = np.asarray(POSITIONS, dtype=object)[idx]
    return out


def _apply_policy(values: np.ndarray, status: np.ndarray, rules: dict, worst: np.ndarray | float) -> np.ndarray:
    out = values.astype(np.float64, copy=True)
    worst = np.broadcast_to(np.asarray(worst, dtype=np.float64), out.shape)
    for st, rule in rules.items():
        sel = status == st
        if not sel.any() or rule == "value":
            continue
        if rule == "nan":
            out[sel] = np.nan
        elif rule == "worst":
            out[sel] = worst[sel]
        else:
            out[sel] = float(rule)
    return out


def per_case_table(
    counts: pd.DataFrame,
    classes: Iterable[str],
    protocol: Protocol,
    split_of: SplitFn,
    phase_of: PhaseFn,
    annotated: AnnotFn | None = None,
    not_annotated_classes: Iterable[str] = (),
    extra: pd.DataFrame | None = None,
    class_values: dict[str, tuple[int, ...]] | None = None,
) -> pd.DataFrame:
    """Build the per-case table at both levels (image and volume).

    Args:
        counts: counts table, one row per 2D image (see module docstring).
        classes: classes to report (subset of LV, MY, RV).
        protocol: supplies the status policy applied to each metric.
        split_of: subject -> split (``""`` when unknown).
        phase_of: (subject, frame) -> ``"ED"``, ``"ES"`` or ``""``.
        annotated: (subject, frame) -> classes annotated there, or None (all annotated).
        not_annotated_classes: classes the reference never annotates (status not_annotated).
        extra: optional metric values computed from arrays (surface distances...), with columns
            level, subject, frame, slice, class, and one column per metric; its ``<metric>_status``
            columns, when present, override the count-based status for that metric, and a
            ``<group>_status`` column (the spec's ``status_group``, ``distance_status``) does so
            for every metric of the group (e.g. ``failed`` when the spacing is unknown). Every
            metric column must have a spec in :mod:`cardbench.benchmark.metric_registry`.
        class_values: class or region -> the cardbench values it joins (a region such as LV+MY
            = (1, 2) is scored as one structure); default: LV, MY, RV = 1, 2, 3.

    Returns:
        DataFrame with :data:`ID_COLUMNS`, then ``dice``, ``iou`` (and any other overlap metric of
        the protocol) and any extra metric columns, then ``n_slices`` (volume level), ``ref_file``,
        ``pred_file``.

    Raises:
        UnknownMetricError: a metric of the protocol or a metric column of ``extra`` has no spec.
    """
    classes = list(classes)
    overlap = list(BASE_OVERLAP_METRICS) + [m for m in list(protocol.policy) + list(protocol.all_metrics)
                                            if get_metric(m).family == "overlap" and m not in BASE_OVERLAP_METRICS]
    overlap = list(dict.fromkeys(overlap))
    not_ann = set(not_annotated_classes)
    levels = [("image", counts.assign(n_slices=1)), ("volume", volume_counts(counts))]
    frames = []
    for level, tab in levels:
        if tab.empty:
            continue
        nl = n_labels_of(tab)
        conf = tab[count_columns(nl)].to_numpy(np.int64).reshape(-1, nl, nl)
        subj = tab["subject"].astype(str).to_numpy()
        frame_vals = [None if pd.isna(f) else int(f) for f in tab["frame"]]
        # look each subject / volume up once (thousands of image rows share a few hundred volumes)
        split_c = {s_: split_of(s_) for s_ in dict.fromkeys(subj)}
        vols = list(dict.fromkeys(zip(subj, frame_vals)))
        phase_c = {v: phase_of(*v) for v in vols}
        ann_c = {v: annotated(*v) for v in vols} if annotated else {}
        split = np.array([split_c[s_] for s_ in subj], dtype=object)
        phase = np.array([phase_c[v] for v in zip(subj, frame_vals)], dtype=object)
        ann = [ann_c.get(v) for v in zip(subj, frame_vals)]
        missing = tab["missing"].to_numpy(bool)
        position = slice_positions(tab) if level == "image" else np.full(len(tab), "", dtype=object)
        for cls in classes:
            ks = class_values[cls] if class_values is not None else (CLASS_VALUES[cls],)
            if len(ks) == 1:
                k = ks[0]
                tp = conf[:, k, k]
                ref = conf[:, k, :].sum(axis=1)
                pred = conf[:, :, k].sum(axis=1)
            else:  # a region: the union of its classes on both sides
                ix = list(ks)
                tp = conf[:, ix][:, :, ix].sum(axis=(1, 2))
                ref = conf[:, ix, :].sum(axis=(1, 2))
                pred = conf[:, :, ix].sum(axis=(1, 2))
            status = status_from_counts(ref, pred)
            status[missing] = MISSING
            na = np.array([cls in not_ann or (a is not None and cls not in a) for a in ann], dtype=bool)
            status[na] = NOT_ANNOTATED
            df = pd.DataFrame({
                "level": level, "subject": subj, "frame": tab["frame"].astype("Int64").to_numpy(),
                "slice": tab["slice"].astype("Int64").to_numpy(), "phase": phase, "split": split,
                "class": cls, "status": status, "ref_voxels": ref, "pred_voxels": pred,
                "tp": tp, "fp": pred - tp, "fn": ref - tp,
            })
            for m in overlap:
                spec = get_metric(m)
                raw = spec.from_counts(tp, pred - tp, ref - tp)
                rules = protocol.policy.get(m)
                worst = spec.worst if spec.worst is not None else np.nan
                df[m] = _apply_policy(raw, status, rules, worst) if rules else raw
            if "voxel_ml" in tab.columns:
                vml = tab["voxel_ml"].to_numpy(np.float64)
                df["ref_ml"] = ref * vml
                df["pred_ml"] = pred * vml
            df["n_slices"] = tab["n_slices"].to_numpy()
            df["position"] = position
            for c in ("ref_file", "pred_file", "fov_diag_mm"):
                if c in tab.columns:
                    df[c] = tab[c].to_numpy()
            frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ID_COLUMNS)
    if extra is not None and len(extra.columns):  # no rows: the columns (NaN) and their policy still apply
        out = _merge_extra(out, extra, protocol)
    front = ID_COLUMNS + [c for c in out.columns if c not in ID_COLUMNS and c not in ("ref_file", "pred_file")]
    back = [c for c in ("ref_file", "pred_file") if c in out.columns]
    return out[front + back]


def _merge_extra(out: pd.DataFrame, extra: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Join metric columns computed from arrays and apply the protocol policy to them.

    A metric's policy ``"worst"`` takes the row's ``fov_diag_mm`` (distances) unless its spec
    defines a fixed worst value (NSD: 0).

    Raises:
        UnknownMetricError: a metric column without a spec in the registry.
    """
    keys = ["level", "subject", "frame", "slice", "class"]
    extra = extra.copy()
    extra["frame"] = extra["frame"].astype("Int64")
    extra["slice"] = extra["slice"].astype("Int64")
    extra["subject"] = extra["subject"].astype(str)
    merged = out.merge(extra, on=keys, how="left", suffixes=("", "_extra"))
    metric_cols = [c for c in extra.columns if c not in keys and not c.endswith("_status")
                   and c not in _EXTRA_NON_METRIC]
    for m in metric_cols:
        if m not in METRICS:
            raise UnknownMetricError(f"per-case table: column {m!r} is no registered metric; register a MetricSpec "
                                     f"for it (cardbench.benchmark.metric_registry); known: {', '.join(METRICS)}")
    for m in metric_cols:
        rules = protocol.policy.get(m)
        if not rules:
            continue
        status = merged["status"].to_numpy(object)
        # a metric-specific status (e.g. failed) overrides the count-based one where it is set
        grp = status_group_of(m)
        scol = f"{m}_status" if f"{m}_status" in merged.columns else (
            f"{grp}_status" if grp is not None and f"{grp}_status" in merged.columns else None)
        if scol is not None:
            ms = merged[scol].to_numpy(object)
            keep = np.isin(status, [MISSING, NOT_ANNOTATED])
            status = np.where(pd.isna(ms) | keep, status, ms)
        worst = get_metric(m).worst
        if worst is None:
            worst = merged["fov_diag_mm"].to_numpy(np.float64) if "fov_diag_mm" in merged.columns else np.nan
        merged[m] = _apply_policy(merged[m].to_numpy(np.float64), status, rules, worst)
    return merged
