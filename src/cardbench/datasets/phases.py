"""ED/ES frames and volumes from label maps.

Definitions:

* LV volume of a frame (mL) = number of LV voxels x voxel volume (mm^3) / 1000, the voxel volume
  being ``|det(affine[:3, :3])|`` of the NIfTI affine (summation of discs, as in the Sunnybrook and
  ACDC evaluations; no interpolation between slices).
* MY mass (g) = MY volume (mL) x 1.05 g/mL (``cardbench.formulas``; myocardial density, Grothues et al. 2002;
  Schulz-Menger et al. 2020).
* ED (end-diastole) = the frame of largest LV volume, ES (end-systole) = the frame of smallest, when a
  dataset does not say; a dataset that names its ED/ES frames is always followed (Sunnybrook: ED is
  the contoured frame that also has an epicardial contour, ES the one with the endocardium only;
  Medis ``.con``: ``manual_lv_ed_phase`` / ``manual_lv_es_phase``). Ties go to the earliest frame.
* EF (%) = (EDV - ESV) / EDV x 100.

The formulas themselves live in :mod:`cardbench.formulas`; this module adds the checks a
converter needs (a dataset whose EDV is not positive is an error here, not a NaN).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cardbench import formulas
from cardbench.labelmaps import CLASS_VALUES

#: myocardial density (g/mL) used for LV mass (the one constant in :mod:`cardbench.formulas`).
MYOCARDIUM_DENSITY = formulas.MYOCARDIAL_DENSITY_G_PER_ML


class PhaseError(ValueError):
    """ED/ES cannot be determined from what is given."""


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel (mL) from a 4x4 affine (mm): ``|det(affine[:3, :3])| / 1000``.

    Raises:
        ValueError: a singular or non-finite affine (see :func:`cardbench.formulas.voxel_volume_ml`).
    """
    return formulas.voxel_volume_ml(affine=affine)


def class_volume_ml(labels: np.ndarray, affine: np.ndarray, cls: str = "LV") -> float:
    """Volume (mL) of class ``cls`` (cardbench values) in a label volume ``(x, y, slice)``."""
    return int(np.count_nonzero(np.asarray(labels) == CLASS_VALUES[cls])) * voxel_volume_ml(affine)


def ed_es_from_volumes(volumes: Mapping[int, float]) -> tuple[int, int]:
    """``(ED, ES)`` frames: largest and smallest LV volume (earliest frame on ties).

    Args:
        volumes: frame -> LV volume (any unit), one entry per frame of the cycle.

    Raises:
        PhaseError: fewer than 2 frames, or every frame has the same volume.
    """
    if len(volumes) < 2:
        raise PhaseError(f"ED/ES need the LV volume of at least 2 frames (got {len(volumes)}); "
                         "label every frame of the cycle or give ed_frame/es_frame")
    frames = sorted(volumes)
    v = np.array([volumes[f] for f in frames], dtype=float)
    if np.all(v == v[0]):
        raise PhaseError("every frame has the same LV volume; ED/ES cannot be told apart")
    return frames[int(np.argmax(v))], frames[int(np.argmin(v))]


def ed_es_frames(*, given: tuple[int | None, int | None] | None = None,
                 label_volumes: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
                 n_frames: int | None = None) -> tuple[int, int, str]:
    """ED/ES frames: from the dataset when given, else from the LV volume curve.

    Args:
        given: ``(ed, es)`` stated by the dataset (either may be None).
        label_volumes: frame -> ``(labels (x, y, slice), affine)`` for the curve.
        n_frames: number of frames in the cycle; when given, the curve is used only if every
            frame is labelled.

    Returns:
        ``(ed, es, source)``, source ``"dataset"`` or ``"lv-volume-curve"``.

    Raises:
        PhaseError: not given and the labels do not cover every frame.
    """
    if given is not None and given[0] is not None and given[1] is not None:
        return int(given[0]), int(given[1]), "dataset"
    if not label_volumes:
        raise PhaseError("ED/ES frames are not given and there are no labels to derive them from")
    if n_frames is not None and len(label_volumes) < n_frames:
        missing = sorted(set(range(1, n_frames + 1)) - set(label_volumes))
        raise PhaseError(f"ED/ES from the LV volume curve need labels for every frame; frames {missing[:10]} "
                         f"of {n_frames} are unlabelled: give ed_frame/es_frame instead")
    vols = {f: class_volume_ml(lab, aff) for f, (lab, aff) in label_volumes.items()}
    ed, es = ed_es_from_volumes(vols)
    return ed, es, "lv-volume-curve"


def ejection_fraction(edv: float, esv: float) -> float:
    """EF (%) = (EDV - ESV) / EDV x 100 (:func:`cardbench.formulas.ejection_fraction`), for converters.

    Raises:
        PhaseError: EDV is not positive.
    """
    if not edv > 0:
        raise PhaseError(f"EF needs a positive EDV (got {edv})")
    return float(formulas.ejection_fraction(edv, esv))
