"""Validation of a submission against a reference, before any score is published.

Every problem is one :class:`Problem`: the file, what is wrong, and how to fix it. Scoring
collects all problems of a submission and raises :class:`ValidationError` when there is any, so
no partial result is ever written; the CLI prints one line per problem and exits with code 2.

Checks: missing, extra and duplicate cases; unreadable or truncated files; shape mismatch; spacing
and affine mismatch beyond a tolerance; label values outside the declared map (including 0/255
masks); float masks that are not integral; colour PNGs.
"""

from __future__ import annotations

import numpy as np

from cardbench.datasets.io import LabelImage
from cardbench.problems import Problem  # noqa: F401  (re-exported)
from cardbench.labelmaps import LabelMap

#: default absolute tolerance on every affine element (mm): origin jitter of 1e-3 mm passes.
DEFAULT_AFFINE_TOL = 1e-2
#: default relative tolerance on voxel spacing.
DEFAULT_SPACING_RTOL = 1e-3


class ValidationError(Exception):
    """A submission (or reference) failed validation; nothing was scored or written.

    Attributes:
        problems: every problem found, in file order.
    """

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        head = "\n".join(str(p) for p in self.problems[:20])
        more = f"\n... and {n - 20} more" if n > 20 else ""
        super().__init__(f"{n} validation problem{'s' if n != 1 else ''}:\n{head}{more}")


def check_labels(img: LabelImage, label_map: LabelMap, role: str = "prediction") -> list[Problem]:
    """Problems with the label values of one mask under ``label_map``.

    Args:
        img: the mask as read.
        label_map: the map the file is declared to use.
        role: ``prediction`` or ``reference``, for the message.
    """
    if not label_map.bad_values(img.array):
        return []
    vals = np.unique(img.array)
    bad = label_map.check_values(vals)
    allowed = sorted(label_map.values)
    if 255 in bad and set(int(v) for v in vals) <= {0, 255}:
        fix = ("this looks like a binary 0/255 mask; save class indices "
               f"({', '.join(f'{v} {c}' for c, v in label_map.labels.items())}) instead of 0/255")
    elif label_map.name == "cardbench" and set(int(v) for v in vals) <= {0, 1, 2, 3}:
        fix = "declare the label map with --labels"
    else:
        fix = (f"use the values of label map '{label_map.name}' {allowed}, or declare the map the file uses "
               "with --labels acdc|mnms|FILE.yaml (or label_map in submission.yaml)")
    return [Problem(str(img.path), f"{role} label values {bad} are not in label map '{label_map.name}' "
                                   f"(allowed {allowed})", fix, "labels")]


def check_geometry(ref: LabelImage, pred: LabelImage, affine_tol: float = DEFAULT_AFFINE_TOL,
                   spacing_rtol: float = DEFAULT_SPACING_RTOL) -> list[Problem]:
    """Problems with the prediction's grid compared to the reference's.

    Shape must be equal. For NIfTI, spacing must agree within ``spacing_rtol`` (relative) and every
    affine element within ``affine_tol`` mm (so an origin jitter of 1e-3 mm passes); a flipped
    or permuted axis is reported as an orientation problem. PNG has no geometry beyond shape.
    """
    where = str(pred.path)
    if ref.array.shape != pred.array.shape:
        return [Problem(where, f"shape {pred.array.shape} differs from the reference's {ref.array.shape} "
                               f"({ref.path.name})",
                        "predict on the reference grid (same matrix and number of slices; no cropping or "
                        "resampling), or resample back with nearest-neighbour interpolation", "shape")]
    if ref.affine is None or pred.affine is None:
        return []
    probs = []
    if ref.spacing is not None and pred.spacing is not None:
        rs, ps = np.asarray(ref.spacing), np.asarray(pred.spacing)
        if not np.allclose(ps, rs, rtol=spacing_rtol, atol=0):
            probs.append(Problem(where, f"voxel spacing {tuple(round(float(x), 4) for x in ps)} mm differs from the "
                                        f"reference's {tuple(round(float(x), 4) for x in rs)} mm",
                                 "write the prediction with the reference's header (copy its affine), "
                                 "after resampling to the reference grid if needed", "spacing"))
            return probs
    # orientation first, whatever the tolerance: a flipped or permuted axis is never "close enough"
    rdir = np.sign(np.round(ref.affine[:3, :3], 6))
    pdir = np.sign(np.round(pred.affine[:3, :3], 6))
    if not np.array_equal(rdir, pdir):
        probs.append(Problem(where, "orientation differs from the reference's (an axis is flipped or permuted)",
                             "save the prediction in the reference's voxel order with the reference's affine "
                             "(e.g. nibabel.Nifti1Image(pred, ref_img.affine, ref_img.header)); undo any flip or "
                             "transpose applied to the array", "affine"))
        return probs
    diff = np.abs(ref.affine - pred.affine)
    if diff.max() > affine_tol:
        probs.append(Problem(where, f"affine differs from the reference's by up to {diff.max():.4g} mm "
                                    f"(tolerance {affine_tol} mm)",
                             "save the prediction with the reference's affine (e.g. nibabel.Nifti1Image(pred, "
                             "ref_img.affine, ref_img.header)); raise --affine-tol only if the offset is known to "
                             "be harmless", "affine"))
    return probs
