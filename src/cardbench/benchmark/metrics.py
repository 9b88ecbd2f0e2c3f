"""Overlap metrics and per-value statuses.

Definitions (per class, from confusion counts; TP, FP, FN counted in pixels/voxels):

- Dice (Sorensen-Dice coefficient, DSC) = 2 TP / (2 TP + FP + FN)  (Dice 1945; as in MONAI
  ``compute_dice`` and MedPy ``dc``).
- IoU (Jaccard index) = TP / (TP + FP + FN)  (as in MONAI ``compute_iou``, MedPy ``jc``).

Both are undefined (0/0) when the class is absent from reference and prediction. This module
returns NaN there and a *status* for every value; what a protocol does with each status (NaN
excluded, counted as 1, worst value) is declared in :mod:`cardbench.benchmark.protocols`.

Statuses (:data:`STATUSES`):

==============  ============================================================================
ok              class present in reference and prediction
both_empty      class absent from both (Dice 0/0)
ref_empty       absent from the reference, present in the prediction (false positive; Dice 0)
pred_empty      present in the reference, absent from the prediction (missed; Dice 0)
not_annotated   the reference does not annotate this class here: not scored
missing         the prediction file is missing (only with ``--allow-missing``): worst value
failed          the metric could not be computed (reason recorded)
==============  ============================================================================
"""

from __future__ import annotations

import numpy as np

OK = "ok"
BOTH_EMPTY = "both_empty"
REF_EMPTY = "ref_empty"
PRED_EMPTY = "pred_empty"
NOT_ANNOTATED = "not_annotated"
MISSING = "missing"
FAILED = "failed"
STATUSES = (OK, BOTH_EMPTY, REF_EMPTY, PRED_EMPTY, NOT_ANNOTATED, MISSING, FAILED)


def dice_from_counts(tp, fp, fn) -> np.ndarray:
    """Dice = 2 TP / (2 TP + FP + FN); NaN where the denominator is 0 (class absent from both).

    Args:
        tp, fp, fn: counts (scalars or arrays of one shape).

    Returns:
        float64 array (or scalar) in [0, 1] or NaN.
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def iou_from_counts(tp, fp, fn) -> np.ndarray:
    """IoU (Jaccard) = TP / (TP + FP + FN); NaN where the denominator is 0."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    den = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, tp / np.where(den > 0, den, 1), np.nan)


def status_from_counts(ref, pred) -> np.ndarray:
    """Status of each value from reference and predicted voxel counts of a class.

    Returns:
        array of status strings (``ok``, ``both_empty``, ``ref_empty``, ``pred_empty``), shape of inputs.
    """
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    out = np.full(ref.shape, OK, dtype=object)
    out[(ref == 0) & (pred == 0)] = BOTH_EMPTY
    out[(ref == 0) & (pred > 0)] = REF_EMPTY
    out[(ref > 0) & (pred == 0)] = PRED_EMPTY
    return out
