"""Clinical indices from label maps: chamber volumes, EDV, ESV, SV, EF and LV mass.

Definitions (Schulz-Menger J, Bluemke DA, Bremerich J, et al. Standardized image interpretation
and post-processing in cardiovascular magnetic resonance - 2020 update. J Cardiovasc Magn Reson
2020;22:19, doi:10.1186/s12968-020-00610-6; the short-axis "summation of discs" method):

- Volume of a class in one frame (mL) = number of voxels labelled with the class x volume of one
  voxel (mL) = count x (spacing_x x spacing_y x spacing_z in mm) / 1000. The slice spacing is the
  distance between slice centres (slice thickness + gap), so the count x voxel volume is the
  summation of discs over the stack. Label values are never summed: a voxel counts once, for the
  class it holds.
- EDV, ESV (mL): LV (or RV) volume at the end-diastolic (ED) and end-systolic (ES) frame.
- SV (mL) = EDV - ESV.
- EF (%) = 100 x (EDV - ESV) / EDV; undefined (NaN) when EDV is 0.
- LV mass (g) = MY volume at ED (mL) x 1.05 g/mL, the myocardial density used by the SCMR
  recommendations (Schulz-Menger et al. 2020) and by most CMR software.

ED/ES frames come from the reference: the ``phase`` column of the per-case table (subjects.csv's
``ed_frame`` and ``es_frame``); where a subject has none, from the reference LV volume curve
(maximum = ED, minimum = ES) when the reference annotates LV in at least 2 frames and the frame
numbers have no gap (the whole cine, or a contiguous part of it). Otherwise the indices are not
computed (status ``no_phase``). Which rule gave a subject's frames is written in the
``phase_source`` column (``reference``, ``lv_curve``, ``none``). The prediction is measured at the
reference's ED and ES frames, so EDV and ESV compare the same frames.

Whether papillary muscles and trabeculations count as blood pool (LV) or myocardium (MY) is the
reference's convention; cardbench counts voxels as labelled.

The per-subject table written as ``clinical.csv`` has one row per (subject, index) with columns
:data:`CLINICAL_COLUMNS`:

=============  ================================================================================
subject        subject id
split          the subject's split ("" when unknown)
index          LVEDV, LVESV, LVSV, LVEF, LVM, RVEDV, RVESV, RVSV, RVEF
unit           mL, %, g
ref, pred      value from the reference and from the prediction
diff           pred - ref (the Bland-Altman difference)
abs_diff       abs(pred - ref)
status         ok | not_annotated (the reference does not annotate the class in that frame) |
               no_phase (ED or ES unknown) | missing (prediction file missing: volume 0) |
               ref_undefined / pred_undefined (EF with EDV 0) | no_spacing (voxel size unknown)
ed_frame       ED frame used; es_frame: ES frame used
phase_source   reference | lv_curve | none
=============  ================================================================================
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from cardbench.benchmark.metrics import MISSING, NOT_ANNOTATED
from cardbench.formulas import (  # noqa: F401  (re-exported: the clinical formulas live in one place)
    MYOCARDIAL_DENSITY_G_PER_ML, ejection_fraction, lv_mass, stroke_volume, voxel_volume_ml,
)
from cardbench.labelmaps import CLASS_VALUES


#: index -> unit.
INDEX_UNITS: dict[str, str] = {
    "LVEDV": "mL", "LVESV": "mL", "LVSV": "mL", "LVEF": "%", "LVM": "g",
    "RVEDV": "mL", "RVESV": "mL", "RVSV": "mL", "RVEF": "%",
}
#: one-line definitions (written into summary.json).
INDEX_DEFINITIONS: dict[str, str] = {
    "LVEDV": "LV volume at ED (voxel count x voxel volume)",
    "LVESV": "LV volume at ES",
    "LVSV": "LVEDV - LVESV",
    "LVEF": "100 x (LVEDV - LVESV) / LVEDV",
    "LVM": "MY volume at ED x 1.05 g/mL",
    "RVEDV": "RV volume at ED",
    "RVESV": "RV volume at ES",
    "RVSV": "RVEDV - RVESV",
    "RVEF": "100 x (RVEDV - RVESV) / RVEDV",
}
CLINICAL_COLUMNS = ["subject", "split", "index", "unit", "ref", "pred", "diff", "abs_diff", "status",
                    "ed_frame", "es_frame", "phase_source"]
CITATION = ("Schulz-Menger J et al. Standardized image interpretation and post-processing in cardiovascular "
            "magnetic resonance - 2020 update. J Cardiovasc Magn Reson 2020;22:19. "
            "doi:10.1186/s12968-020-00610-6")

OK = "ok"
NO_PHASE = "no_phase"
NO_SPACING = "no_spacing"
REF_UNDEFINED = "ref_undefined"
PRED_UNDEFINED = "pred_undefined"


def label_volumes_ml(labels: np.ndarray, spacing: Sequence[float],
                     classes: Iterable[str] = ("LV", "MY", "RV")) -> dict[str, float]:
    """Volume of each class in mL: voxel count x voxel volume.

    Args:
        labels: integer label map in cardbench values (0 bg, 1 LV, 2 MY, 3 RV), any shape (a 3D
            stack ``(x, y, slice)`` for a volume).
        spacing: voxel spacing in mm in the array's axis order (3 values).
        classes: classes to measure.

    Returns:
        class -> volume in mL.

    Raises:
        ValueError: bad spacing, unknown class, or a non-integer label array.
    """
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise ValueError(f"labels must be an integer label map, got dtype {arr.dtype}")
    vml = voxel_volume_ml(spacing)
    out = {}
    for c in classes:
        if c not in CLASS_VALUES:
            raise ValueError(f"unknown class {c!r}; use {', '.join(CLASS_VALUES)}")
        out[c] = int(np.count_nonzero(arr == CLASS_VALUES[c])) * vml
    return out


def phases_from_curve(frames: Sequence[int], lv_ml: Sequence[float]) -> tuple[int | None, int | None]:
    """ED and ES frames from an LV volume curve: ED = frame of the largest, ES = of the smallest volume.

    Used only when the reference gives no ED/ES frames. Requires at least 2 frames with a finite
    volume and frame numbers without gaps; ties go to the earliest frame.

    Args:
        frames: frame numbers.
        lv_ml: LV volume per frame (mL), same length.

    Returns:
        (ed_frame, es_frame), or (None, None) when the rule does not apply.
    """
    f = np.asarray(frames, dtype=np.int64)
    v = np.asarray(lv_ml, dtype=np.float64)
    ok = np.isfinite(v)
    f, v = f[ok], v[ok]
    if f.size < 2:
        return None, None
    order = np.argsort(f, kind="stable")
    f, v = f[order], v[order]
    if np.any(np.diff(f) != 1):
        return None, None
    if v.max() == v.min():
        return None, None
    return int(f[int(np.argmax(v))]), int(f[int(np.argmin(v))])


def frame_volumes(per_case: pd.DataFrame) -> pd.DataFrame:
    """Per-frame volumes from the per-case table's ``volume`` level rows.

    Args:
        per_case: table from :func:`cardbench.benchmark.casetable.per_case_table` (needs columns
            ``level, subject, frame, phase, split, class, status, ref_ml, pred_ml``).

    Returns:
        one row per (subject, frame, class): subject, split, frame, phase, class, status, ref_ml,
        pred_ml (mL; NaN where the voxel size is unknown).
    """
    cols = ["subject", "split", "frame", "phase", "class", "status", "ref_ml", "pred_ml"]
    if per_case.empty or "ref_ml" not in per_case.columns:
        return pd.DataFrame(columns=cols)
    vol = per_case[per_case["level"] == "volume"]
    return vol[cols].reset_index(drop=True)


def _phase_frames(recs: list[dict]) -> tuple[int | None, int | None, str]:
    """ED/ES frames of one subject from its :func:`frame_volumes` rows (as records): the
    reference's ED/ES phases when given, else the LV volume curve (:func:`phases_from_curve`)."""
    phase_frames: dict[str, set] = {"ED": set(), "ES": set()}
    for r in recs:
        if r["phase"] in phase_frames and not pd.isna(r["frame"]):
            phase_frames[r["phase"]].add(int(r["frame"]))
    ed, es = phase_frames["ED"], phase_frames["ES"]
    if len(ed) == 1 or len(es) == 1:
        return (next(iter(ed)) if len(ed) == 1 else None, next(iter(es)) if len(es) == 1 else None, "reference")
    lv = [r for r in recs if r["class"] == "LV" and r["status"] != NOT_ANNOTATED]
    if not lv or any(pd.isna(r["frame"]) for r in lv):
        return None, None, "none"
    ed_f, es_f = phases_from_curve([int(r["frame"]) for r in lv], [float(r["ref_ml"]) for r in lv])
    if ed_f is None:
        return None, None, "none"
    return ed_f, es_f, "lv_curve"


def clinical_indices(per_case: pd.DataFrame, classes: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-subject clinical indices of reference and prediction (the ``clinical.csv`` table).

    Args:
        per_case: per-case table (volume level rows are used; ``ref_ml``/``pred_ml`` come from
            voxel counts x voxel volume, see :mod:`cardbench.benchmark.casetable`).
        classes: classes scored (default: those in the table). LV gives LVEDV, LVESV, LVSV, LVEF;
            MY gives LVM; RV gives RVEDV, RVESV, RVSV, RVEF.

    Returns:
        DataFrame with :data:`CLINICAL_COLUMNS` (empty when the table has no volumes).
    """
    fv = frame_volumes(per_case)
    if fv.empty:
        return pd.DataFrame(columns=CLINICAL_COLUMNS)
    classes = set(classes) if classes is not None else set(fv["class"].unique())
    subjects = sorted(fv["subject"].unique())
    if len(subjects) <= SUBJECTS_PER_CHUNK:
        return _indices_of_subjects(fv, classes)
    # a large cohort, a few thousand subjects at a time: each subject's indices depend on its rows only,
    # and the chunks follow the sorted subjects, so the table is the same as in one piece
    rank = pd.Series(np.arange(len(subjects)) // SUBJECTS_PER_CHUNK, index=subjects)
    part_of = fv["subject"].map(rank).to_numpy()
    parts = [_indices_of_subjects(fv[part_of == k], classes) for k in range(int(part_of.max()) + 1)]
    return pd.concat([p for p in parts if not p.empty], ignore_index=True)


#: subjects whose records are held as Python dicts at once by :func:`clinical_indices`.
SUBJECTS_PER_CHUNK = 500


def _indices_of_subjects(fv: pd.DataFrame, classes: set[str]) -> pd.DataFrame:
    """:func:`clinical_indices` of the subjects of a :func:`frame_volumes` table."""
    recs: list[dict] = []
    by_subject: dict[str, list[dict]] = {}
    for rec in fv.to_dict("records"):
        by_subject.setdefault(rec["subject"], []).append(rec)
    for subj in sorted(by_subject):
        srecs = by_subject[subj]
        split = srecs[0].get("split", "")
        ed_f, es_f, source = _phase_frames(srecs)
        base = {"subject": subj, "split": "" if pd.isna(split) else split,
                "ed_frame": ed_f, "es_frame": es_f, "phase_source": source}

        rows = {}
        for rec in srecs:
            if not pd.isna(rec["frame"]):
                rows.setdefault((rec["class"], int(rec["frame"])), rec)

        def at(cls: str, frame: int | None) -> tuple[float, float, str]:
            if frame is None:
                return np.nan, np.nan, NO_PHASE
            r = rows.get((cls, int(frame)))
            if r is None:
                return np.nan, np.nan, NO_PHASE
            if r["status"] == NOT_ANNOTATED:
                return np.nan, np.nan, NOT_ANNOTATED
            ref, pred = float(r["ref_ml"]), float(r["pred_ml"])
            if not np.isfinite(ref):
                return np.nan, np.nan, NO_SPACING
            return ref, pred, MISSING if r["status"] == MISSING else OK

        def add(index: str, ref: float, pred: float, status: str) -> None:
            if status not in (OK, MISSING):
                ref, pred = np.nan, np.nan
            recs.append({**base, "index": index, "unit": INDEX_UNITS[index], "ref": ref, "pred": pred,
                         "status": status})

        for cls, pre in (("LV", "LV"), ("RV", "RV")):
            if cls not in classes:
                continue
            edr, edp, eds = at(cls, ed_f)
            esr, esp, ess = at(cls, es_f)
            add(f"{pre}EDV", edr, edp, eds)
            add(f"{pre}ESV", esr, esp, ess)
            both = eds if eds not in (OK, MISSING) else ess if ess not in (OK, MISSING) else \
                (MISSING if MISSING in (eds, ess) else OK)
            add(f"{pre}SV", float(stroke_volume(edr, esr)), float(stroke_volume(edp, esp)), both)
            ef_r = float(ejection_fraction(edr, esr))
            ef_p = float(ejection_fraction(edp, esp))
            st = both
            if st in (OK, MISSING) and not np.isfinite(ef_r):
                st = REF_UNDEFINED
            elif st in (OK, MISSING) and not np.isfinite(ef_p):
                st = PRED_UNDEFINED
            recs.append({**base, "index": f"{pre}EF", "unit": "%",
                         "ref": ef_r if st not in (NO_PHASE, NOT_ANNOTATED, NO_SPACING) else np.nan,
                         "pred": ef_p if st not in (NO_PHASE, NOT_ANNOTATED, NO_SPACING) else np.nan,
                         "status": st})
        if "MY" in classes:
            r, p, s = at("MY", ed_f)
            add("LVM", float(lv_mass(r)), float(lv_mass(p)), s)
    out = pd.DataFrame.from_records(recs)
    if out.empty:
        return pd.DataFrame(columns=CLINICAL_COLUMNS)
    out["diff"] = out["pred"] - out["ref"]
    out["abs_diff"] = out["diff"].abs()
    out["ed_frame"] = out["ed_frame"].astype("Int64")
    out["es_frame"] = out["es_frame"].astype("Int64")
    order = [i for i in INDEX_UNITS if i in set(out["index"])]
    out["index"] = pd.Categorical(out["index"], categories=order, ordered=True)
    out = out.sort_values(["subject", "index"], kind="stable").reset_index(drop=True)
    out["index"] = out["index"].astype(str)
    return out[CLINICAL_COLUMNS]


def clinical_summary(per_case: pd.DataFrame, n_boot: int, seed: int,
                     classes: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Clinical indices, their agreement with the reference and the ``clinical`` block of summary.json.

    Args:
        per_case: per-case table.
        n_boot, seed: subject bootstrap settings (the protocol's; 2000 when it has none).
        classes: classes scored (default: those in the table).

    Returns:
        (per-subject table :data:`CLINICAL_COLUMNS`, agreement table
        :data:`cardbench.benchmark.stats.AGREEMENT_COLUMNS`, summary block). The block is
        ``{"available": False, "reason": ...}`` when the table has no volumes (e.g. a confusion
        table without voxel size); otherwise::

            available      true
            definitions    index -> definition;  units: index -> mL | % | g
            citation       source of the definitions (SCMR 2020 recommendations)
            density_g_per_ml  1.05
            phase_source   {reference|lv_curve|none: number of subjects}
            status         index -> status -> number of subjects
            bootstrap      {resamples, seed, unit: subject, interval: 95 % percentile}
            agreement      list of records, one per (grouping, group, index): index, unit,
                           grouping (all | split), group, n_subjects, n_excluded, ref_mean,
                           pred_mean, bias, sd_diff, loa_low, loa_high, mae (unit of the index),
                           pearson_r, each with _ci_low/_ci_high, and pearson_p.
    """
    from cardbench.benchmark.stats import agreement_table

    table = clinical_indices(per_case, classes)
    if table.empty:
        reason = ("no voxel size: volumes need spacing (NIfTI header, or the reference's spacing.csv for PNG)"
                  if "ref_ml" not in per_case.columns else "no volume-level rows")
        return table, pd.DataFrame(), {"available": False, "reason": reason}
    if table["status"].eq(NO_SPACING).all():
        return table, pd.DataFrame(), {"available": False, "reason": "voxel size unknown for every case"}
    # an index whose class the reference never annotates (e.g. RV in an LV/MY dataset) is not reported
    never = table.groupby("index", observed=True)["status"].transform(lambda st: st.eq(NOT_ANNOTATED).all())
    table = table[~never].reset_index(drop=True)
    if not table["status"].isin([OK, MISSING]).any():
        why = {NO_PHASE: "ED/ES frames unknown (give ed_frame/es_frame in subjects.csv, or labels of every frame)",
               NO_SPACING: "voxel size unknown (NIfTI header, or spacing.csv for PNG)",
               NOT_ANNOTATED: "the classes are not annotated at ED/ES"}
        reasons = [why.get(st, st) for st in dict.fromkeys(table["status"])]
        return table, pd.DataFrame(), {"available": False, "reason": "; ".join(reasons) or "no subject"}
    agree = agreement_table(table, n_boot=n_boot, seed=seed)
    subj = table.drop_duplicates("subject")
    status = {ix: {k: int(v) for k, v in g["status"].value_counts().items()}
              for ix, g in table.groupby("index", sort=False)}
    block = {
        "available": True,
        "definitions": {k: v for k, v in INDEX_DEFINITIONS.items() if k in status},
        "units": {k: v for k, v in INDEX_UNITS.items() if k in status},
        "citation": CITATION,
        "density_g_per_ml": MYOCARDIAL_DENSITY_G_PER_ML,
        "difference": "prediction - reference",
        "phase_source": {k: int(v) for k, v in subj["phase_source"].value_counts().items()},
        "status": status,
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "subject", "interval": "95 % percentile"},
        "agreement": agree.to_dict(orient="records"),
    }
    return table, agree, block
