"""Reading label masks with every check a benchmark needs: the public entry point.

The formats themselves live in :mod:`cardbench.datasets.formats` (one module each: NIfTI, PNG,
NRRD); this module keeps the names callers use. Every reader returns a :class:`LabelImage` with the
raw integer label values (not yet remapped to cardbench's label map) and the geometry, and raises
:class:`MaskReadError` naming the file, the problem and the fix for anything it cannot read
faithfully. The file's bytes are read once and hashed on the way (sha256).

Axis order:
    NIfTI, NRRD: the array exactly as stored, ``(x, y, slice)`` (voxel axes i, j, k of the
    affine); a 2D NIfTI becomes ``(x, y, 1)``. The affine maps voxel indices to scanner (RAS+) mm;
    spacing in mm per array axis (NIfTI: pixdim, checked against the sform, else qform).
    PNG: ``(row, column)`` as in the image; no spacing and no affine (PNG carries none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardbench.datasets.formats import FORMATS, read_mask
from cardbench.datasets.formats.base import LabelImage, MaskReadError, read_file_bytes
from cardbench.limits import Limits

__all__ = ["LabelImage", "MaskReadError", "read_mask", "read_nifti_mask", "read_png_mask"]


def _read_as(fmt_name: str, path, data: bytes | None, expected_shape, limits: Limits | None) -> LabelImage:
    fmt = FORMATS[fmt_name]
    path = Path(path)
    data = read_file_bytes(path, limits, check_head=fmt.check_head) if data is None else data
    fmt.check_bytes(data, path)
    return fmt.read(path, data, expected_shape=expected_shape, limits=limits)


def read_nifti_mask(path: str | Path, data: bytes | None = None, expected_shape=None,
                    limits: Limits | None = None) -> LabelImage:
    """Read a NIfTI-1/2 label volume (``.nii`` or ``.nii.gz``); see :mod:`cardbench.datasets.formats.nifti`.

    Returns:
        A :class:`LabelImage`, array ``(x, y, slice)``; a 2D image becomes ``(x, y, 1)``, a 4D image
        with a single volume is squeezed to 3D.

    Raises:
        MaskReadError: unreadable, truncated or corrupt gzip, not NIfTI, more than one volume,
            non-integral float values, above a size limit, inconsistent geometry.
    """
    return _read_as("nifti", path, data, expected_shape, limits)


def read_png_mask(path: str | Path, data: bytes | None = None, expected_shape=None,
                  limits: Limits | None = None) -> LabelImage:
    """Read a 2D PNG label mask; see :mod:`cardbench.datasets.formats.png`.

    Returns:
        A :class:`LabelImage`, array ``(row, col)``, no spacing or affine.

    Raises:
        MaskReadError: not a PNG by its bytes, above the pixel limit, truncated, colour PNG,
            non-integral values.
    """
    return _read_as("png", path, data, expected_shape, limits)


def write_label_nifti(path: str | Path, labels: np.ndarray, template) -> Path:
    """Write a label map as a uint8 NIfTI on the grid of ``template`` (a nibabel image).

    Args:
        path: the file (``.nii`` or ``.nii.gz``); its folder is created.
        labels: integer array of class values, same shape as ``template`` (``(x, y, slice)``).
        template: the image whose affine and header (spacing, qform/sform) the label map keeps.

    Returns:
        ``path``. The data type is uint8 with scaling 1/0, so the stored values are the labels.
    """
    import nibabel as nib

    path = Path(path)
    hdr = template.header.copy()
    hdr.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(np.asarray(labels).astype(np.uint8), template.affine, header=hdr)
    img.header.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path
