"""Confusion counts between a reference and a predicted label map: the basis of every overlap metric.

A confusion matrix ``C`` has shape ``(4, 4)`` over cardbench labels (0 background, 1 LV, 2 MY,
3 RV); ``C[r, p]`` is the number of pixels (voxels) labelled ``r`` in the reference and ``p`` in the
prediction. Rows are the reference, columns the prediction (as in the seed's published
``confusion_<A>_<B>.tsv`` tables, A = reference, B = prediction).
"""

from __future__ import annotations

import numpy as np

from cardbench.benchmark.surface import foreground_bbox

#: number of cardbench labels (background, LV, MY, RV).
N_LABELS = 4


def confusion_per_slice(ref: np.ndarray, pred: np.ndarray, n_labels: int = N_LABELS) -> np.ndarray:
    """Confusion matrices of every 2D slice of a pair of label maps.

    Args:
        ref: reference label map in cardbench values (0..n_labels-1), shape ``(x, y, slice)`` or
            ``(row, col)``.
        pred: predicted label map, same shape and values.
        n_labels: number of labels incl. background (4 for cardbench's map; 5 for a map with a
            further class such as LA, see :func:`cardbench.labelmaps.class_space`).

    Returns:
        int64 array ``(n_slices, n_labels, n_labels)``; a 2D input gives ``n_slices = 1``. Slices
        are taken along the last axis.

    Raises:
        ValueError: shapes differ or a value is outside 0..n_labels-1.
    """
    N_LABELS = n_labels  # noqa: N806 (the module constant is the default)
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs prediction {pred.shape}")
    if ref.ndim == 2:
        ref = ref[..., None]
        pred = pred[..., None]
    if ref.ndim != 3:
        raise ValueError(f"expected a 2D or 3D label map, got {ref.ndim}D")
    n_slices = ref.shape[2]
    if ref.size and (int(ref.max()) >= N_LABELS or int(pred.max()) >= N_LABELS):
        raise ValueError(f"label values must be 0..{N_LABELS - 1} (cardbench map) before counting")
    # one code per voxel, ref * 4 + pred, counted per slice inside the bounding box of all
    # foreground; code 0 (background in both) is the rest of each slice
    nl2 = N_LABELS * N_LABELS
    per_slice = ref.shape[0] * ref.shape[1]
    counts = np.zeros((n_slices, nl2), np.int64)
    box = foreground_bbox(ref, pred)
    if box is not None:
        (x0, x1), (y0, y1), (z0, z1) = box
        code = (ref[x0:x1, y0:y1, z0:z1].astype(np.intp) * N_LABELS + pred[x0:x1, y0:y1, z0:z1]
                + (np.arange(z1 - z0) * nl2)[None, None, :])
        counts[z0:z1] = np.bincount(code.ravel(), minlength=(z1 - z0) * nl2).reshape(z1 - z0, nl2)
    counts[:, 0] = per_slice - counts[:, 1:].sum(axis=1)
    return counts.reshape(n_slices, N_LABELS, N_LABELS)
