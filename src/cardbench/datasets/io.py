"""Reading label masks (NIfTI volumes and 2D PNG images) with every check a benchmark needs.

Every reader returns a :class:`LabelImage` with the raw integer label values (not yet remapped to
cardbench's label map) and the geometry, and raises :class:`MaskReadError` naming the file, the
problem and the fix for anything it cannot read faithfully. The file's bytes are read once and
hashed on the way (sha256), so provenance costs no second read.

Axis order:
    NIfTI: the array exactly as stored, ``(x, y, slice)`` (voxel axes i, j, k of the affine);
    a 2D NIfTI becomes ``(x, y, 1)``. Spacing is ``header.get_zooms()[:3]`` in mm, in the same axis
    order; the affine maps voxel indices to scanner (RAS+) mm.
    PNG: ``(row, column)`` as in the image; no spacing and no affine (PNG carries none).
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardbench._util import sha256_bytes
from cardbench.datasets.naming import mask_format


class MaskReadError(ValueError):
    """A mask file cannot be read faithfully.

    Attributes:
        path: the file.
        problem: what is wrong, in words.
        fix: what the user should do.
    """

    def __init__(self, path, problem: str, fix: str):
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; {fix}")


@dataclass
class LabelImage:
    """A label mask as read from disk.

    Attributes:
        array: integer array of raw label values; ``(x, y, slice)`` for NIfTI, ``(row, col)`` for PNG.
        path: the file it came from.
        fmt: ``"nifti"`` or ``"png"``.
        sha256: hex sha256 of the file's bytes.
        affine: 4x4 voxel-to-mm affine (NIfTI) or None (PNG).
        spacing: voxel size in mm per array axis (NIfTI) or None (PNG).
        source_dtype: the dtype stored in the file (for messages).
        notes: non-fatal remarks made while reading (e.g. a float mask with integral values).
    """

    array: np.ndarray
    path: Path
    fmt: str
    sha256: str
    affine: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    source_dtype: str = ""
    notes: list[str] = field(default_factory=list)


def _integral(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """Return ``arr`` as an integer array; floats must hold only whole numbers."""
    if arr.dtype.kind in "iu":
        return arr, []
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8), []
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise MaskReadError(path, "float mask holds NaN or infinite values",
                                "save the label map as an integer type (uint8) with class indices")
        r = np.rint(arr)
        if not np.array_equal(r, arr):
            frac = arr[r != arr]
            raise MaskReadError(
                path,
                f"float mask with non-integral values (e.g. {frac.flat[0]!s}); it looks like "  # full precision
                "probabilities or an interpolated mask",
                "save the argmax class indices as uint8 (nearest-neighbour, never linear, resampling)",
            )
        return r.astype(np.int64), [f"float mask ({arr.dtype}) with integral values, read as integers"]
    raise MaskReadError(path, f"unsupported data type {arr.dtype}", "save the label map as uint8")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MaskReadError(path, f"cannot read file ({e.strerror})", "check the path and permissions") from e


def read_nifti_mask(path: str | Path, data: bytes | None = None) -> LabelImage:
    """Read a NIfTI-1/2 label volume (``.nii`` or ``.nii.gz``).

    Args:
        path: the file.
        data: its bytes, if already read.

    Returns:
        A :class:`LabelImage`, array ``(x, y, slice)``; a 2D image becomes ``(x, y, 1)``, a 4D image
        with a single volume is squeezed to 3D.

    Raises:
        MaskReadError: unreadable, truncated or corrupt gzip, not NIfTI, more than one volume,
            non-integral float values.
    """
    import nibabel as nib

    path = Path(path)
    data = _read_bytes(path) if data is None else data
    digest = sha256_bytes(data)
    raw = data
    if data[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise MaskReadError(path, f"truncated or corrupt gzip ({e})",
                                "re-export or re-copy the file; check that the upload finished") from e
    elif path.name.lower().endswith(".gz"):
        raise MaskReadError(path, "named .gz but not gzip-compressed", "rename it to .nii or gzip it")
    if len(raw) < 348:
        raise MaskReadError(path, f"too short to be NIfTI ({len(raw)} bytes)", "re-export the file as NIfTI")
    img = None
    err: Exception | None = None
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            img = cls.from_bytes(raw)
            break
        except Exception as e:  # nibabel raises several types for bad headers
            err = e
    if img is None:
        raise MaskReadError(path, f"not a readable NIfTI file ({err})", "re-export the mask as NIfTI-1 (.nii.gz)")
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as e:
        raise MaskReadError(path, f"image data cannot be read, file truncated? ({e})",
                            "re-export or re-copy the file") from e
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise MaskReadError(path, f"expected a 3D label volume, got shape {arr.shape}",
                            "save one 3D file per frame (<subject>_frame<FF>.nii.gz)")
    arr, notes = _integral(np.asarray(arr), path)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    return LabelImage(arr, path, "nifti", digest, affine=np.asarray(img.affine, dtype=float),
                      spacing=zooms, source_dtype=str(img.get_data_dtype()), notes=notes)


def read_png_mask(path: str | Path, data: bytes | None = None) -> LabelImage:
    """Read a 2D PNG label mask.

    Greyscale (8 or 16 bit) values are the labels. A palette ("P" mode) PNG is read as its
    palette indices, which are the labels, never converted to grey. RGB(A) and grey+alpha masks
    are rejected (colours are not labels).

    Returns:
        A :class:`LabelImage`, array ``(row, col)``, no spacing or affine.

    Raises:
        MaskReadError: unreadable or truncated PNG, colour PNG, non-integral float values.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    data = _read_bytes(path) if data is None else data
    digest = sha256_bytes(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB", "PA"):
                raise MaskReadError(
                    path, f"colour PNG (mode {mode}); colours are not labels",
                    "save a single-channel PNG whose pixel values (or palette indices) are the class labels",
                )
            arr = np.array(im)  # mode P gives palette indices, I;16 gives uint16
    except MaskReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MaskReadError(path, f"not a readable PNG, truncated? ({e})", "re-export or re-copy the file") from e
    if arr.ndim != 2:
        raise MaskReadError(path, f"expected a 2D mask, got shape {arr.shape}", "save a single-channel PNG")
    arr, notes = _integral(arr, path)
    return LabelImage(arr, path, "png", digest, source_dtype=f"PNG mode {mode}", notes=notes)


def read_mask(path: str | Path) -> LabelImage:
    """Read a NIfTI or PNG label mask, chosen by file name (see :func:`read_nifti_mask`,
    :func:`read_png_mask`).

    Raises:
        MaskReadError: unsupported extension or any problem the readers report.
    """
    fmt = mask_format(path)
    if fmt == "nifti":
        return read_nifti_mask(path)
    if fmt == "png":
        return read_png_mask(path)
    raise MaskReadError(path, "not a mask file", "use .nii, .nii.gz or .png")
