"""Clinical formulas: the one home of the voxel volume, SV, EF, LV mass and the myocardial density.

Every part of cardbench (datasets' converters, benchmark's clinical indices, the reproductions)
computes these through this module, so a definition is written once. It depends on numpy only.

Definitions (Schulz-Menger J, Bluemke DA, Bremerich J, et al. Standardized image interpretation and
post-processing in cardiovascular magnetic resonance - 2020 update. J Cardiovasc Magn Reson
2020;22:19, doi:10.1186/s12968-020-00610-6; short-axis summation of discs):

- voxel volume (mL) = |det(A)| / 1000 for the 3x3 linear part A of the voxel-to-world affine in mm;
  for an axis-aligned grid this is the product of the three spacings / 1000.
- SV (mL) = EDV - ESV.
- EF (%) = 100 x (EDV - ESV) / EDV; undefined (NaN) where EDV is 0, negative or not finite.
- LV mass (g) = MY volume at ED (mL) x 1.05 g/mL, the myocardial density of the SCMR recommendations
  (Schulz-Menger et al. 2020; Grothues et al., Am J Cardiol 2002;90:29).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: myocardial density in g/mL (Schulz-Menger et al., JCMR 2020;22:19).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05


def voxel_volume_ml(spacing: "Sequence[float] | None" = None, *, affine: "np.ndarray | None" = None) -> float:
    """Volume of one voxel in mL, from its spacing or from a voxel-to-world affine.

    Args:
        spacing: (sx, sy, sz) in mm in the array's axis order (for a 2D image: sx, sy and the slice
            spacing).
        affine: instead of ``spacing``, a 4x4 (or 3x3) affine in mm; the volume is
            ``|det(affine[:3, :3])| / 1000``, so rotations and shears are handled.

    Returns:
        the voxel volume in mL (1 mL = 1000 mm^3).

    Raises:
        ValueError: neither or both given; spacing not 3 finite positive numbers; a singular or
            non-finite affine.
    """
    if (spacing is None) == (affine is None):
        raise ValueError("give exactly one of spacing (mm) or affine")
    if affine is not None:
        a = np.asarray(affine, dtype=np.float64)
        if a.shape not in ((4, 4), (3, 3)) or not np.all(np.isfinite(a)):
            raise ValueError(f"affine must be a finite 4x4 or 3x3 matrix in mm, got shape {a.shape}")
        vol = float(abs(np.linalg.det(a[:3, :3])))
        if not vol > 0:
            raise ValueError("affine is singular: its voxels have no volume")
        return vol / 1000.0
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive numbers in mm, got {tuple(spacing)}")
    return float(np.prod(sp)) / 1000.0


def stroke_volume(edv, esv):
    """SV = EDV - ESV (mL); scalars or arrays of one shape, returned as float64."""
    return np.asarray(edv, dtype=np.float64) - np.asarray(esv, dtype=np.float64)


def ejection_fraction(edv, esv):
    """EF (%) = 100 x (EDV - ESV) / EDV; NaN where EDV is 0, negative or not finite.

    Args:
        edv, esv: volumes in mL (scalars or arrays of one shape).

    Returns:
        float64 array (0-d for scalars) in %; negative when ESV > EDV.
    """
    edv = np.asarray(edv, dtype=np.float64)
    esv = np.asarray(esv, dtype=np.float64)
    ok = np.isfinite(edv) & (edv > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, 100.0 * (edv - esv) / np.where(ok, edv, 1.0), np.nan)


def lv_mass(my_ml, density: float = MYOCARDIAL_DENSITY_G_PER_ML):
    """LV mass (g) = MY volume (mL) x density (default 1.05 g/mL); float64 array or 0-d array."""
    return np.asarray(my_ml, dtype=np.float64) * density
