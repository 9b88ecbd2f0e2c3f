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
    shown = str(bad) if len(bad) <= 10 else f"[{', '.join(map(str, bad[:10]))}, ... ({len(bad)} values)]"
    return [Problem(str(img.path), f"{role} label values {shown} are not in label map '{label_map.name}' "
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
    for img, who in ((pred, "prediction"), (ref, "reference")):
        # NaN compares False with any tolerance: a non-finite header is never "close enough"
        if not np.all(np.isfinite(img.affine)) or (img.spacing is not None and not np.all(np.isfinite(img.spacing))):
            return [Problem(str(img.path), f"{who} affine or spacing holds NaN or infinite values",
                            "write the mask with the reference's affine (e.g. nibabel.Nifti1Image(pred, "
                            "ref_img.affine, ref_img.header))", "affine")]
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


def label_map_warnings(counts, classes: list[str], not_annotated: list[str], pred_map: LabelMap,
                       ref_map: LabelMap, space: dict[str, int] | None = None) -> list[str]:
    """Warnings for scores that are computable but probably wrong because of a label-map mix-up.

    A prediction in ACDC's map (3 = LV) read as cardbench's (3 = RV) is valid input, but its LV is
    then "missed" everywhere: a silent zero. These checks, on the summed confusion counts
    (``c<ref><pred>`` columns of the counts table), say so:

    1. most reference voxels of a scored class are predicted as another label (swapped labels);
    2. predictions contain a label whose class the reference has nowhere (not scored);
    3. a scored class has no reference voxel at all but predicted voxels (reference map mix-up).

    Args:
        space: class -> cardbench value of both maps (:func:`cardbench.labelmaps.class_space`);
            default LV, MY, RV = 1, 2, 3.

    Returns:
        warning lines (empty when nothing looks wrong).
    """
    from cardbench.labelmaps import CLASS_VALUES

    CLASS_VALUES = dict(space or CLASS_VALUES)  # noqa: N806
    CLASSES = tuple(CLASS_VALUES)  # noqa: N806
    nl = max(4, max(CLASS_VALUES.values()) + 1)
    tot = {c: int(counts[c].sum()) if c in counts.columns else 0
           for c in (f"c{r}{p}" for r in range(nl) for p in range(nl))}
    name_of = {v: c for c, v in CLASS_VALUES.items()}

    def raw(label: int, lm: LabelMap) -> str:
        cls = name_of[label]
        return f"{cls} (value {lm.labels[cls]} in label map '{lm.name}')" if cls in lm.labels else cls

    out: list[str] = []
    scored = [c for c in classes if c not in not_annotated]
    for a in scored:
        ka = CLASS_VALUES[a]
        ref_a = sum(tot[f"c{ka}{p}"] for p in range(nl))
        if not ref_a:
            continue
        for kb in range(1, nl):
            if kb == ka:
                continue
            s_ab = tot[f"c{ka}{kb}"]
            if s_ab > tot[f"c{ka}{ka}"] and s_ab > 0.5 * ref_a:
                out.append(f"{100 * s_ab / ref_a:.0f} % of the reference's {a} voxels are predicted as "
                           f"{raw(kb, pred_map)}: are the predictions in another label map? Declare it with "
                           "--labels (e.g. --labels acdc for 1 RV, 2 MY, 3 LV) or label_map in submission.yaml")
    for c in CLASSES:
        if c in scored:
            continue
        k = CLASS_VALUES[c]
        if sum(tot[f"c{k}{q}"] for q in range(nl)):
            continue  # the reference has this class: it was left out on purpose (--classes), not mixed up
        p = sum(tot[f"c{r}{k}"] for r in range(nl))
        if p:
            out.append(f"the predictions contain {p} voxels of {raw(k, pred_map)}, a class the reference does not "
                       "annotate: they are not scored. If that label means something else in your masks, declare "
                       "the label map with --labels")
    for c in scored:
        k = CLASS_VALUES[c]
        if not sum(tot[f"c{k}{p}"] for p in range(nl)) and sum(tot[f"c{r}{k}"] for r in range(nl)):
            out.append(f"the reference has no {c} voxel in any case, but the predictions have {c}: is the reference "
                       f"in another label map than '{ref_map.name}'? Declare it with --reference-labels or "
                       "label_map in its card.yaml")
    return out


def collapse_notes(notes: list[str], limit: int = 3) -> list[str]:
    """Merge notes that repeat one message for many cases (``"<case>: <message>"``) into one line."""
    groups: dict[str, list[str]] = {}
    order: list[str] = []
    for n in notes:
        where, sep, msg = n.partition(": ")
        key = msg if sep else n
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(where if sep else "")
    out = []
    for key in order:
        wh = groups[key]
        if len(wh) <= limit or not all(wh):
            out.extend(f"{w}: {key}" if w else key for w in wh)
        else:
            out.append(f"{len(wh)} cases ({', '.join(wh[:limit])}, ...): {key}")
    return out
