"""Builders for small hand-made test cases (NIfTI and PNG) whose expected scores are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

SPACING = (1.25, 1.25, 8.0)


def affine(spacing=SPACING, origin=(-10.0, -20.0, 30.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def save_nifti(path: Path, arr, aff=None, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(arr).astype(dtype), affine(SPACING) if aff is None else aff)
    nib.save(img, str(path))
    return path


def save_png(path: Path, arr, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if mode == "P":
        # palette: index i -> a colour whose grey value is not i, so a grey conversion would be caught
        pal = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [7] * (256 * 3 - 12)
        im = Image.new("P", (arr.shape[1], arr.shape[0]))
        im.putdata(arr.astype(np.uint8).ravel().tolist())
        im.putpalette(pal)
    elif mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16))
    elif mode == "RGB":
        im = Image.fromarray(np.stack([arr] * 3, axis=-1).astype(np.uint8), mode="RGB")
    else:
        im = Image.fromarray(arr.astype(np.uint8))
    im.save(path)
    return path


def two_slice_case():
    """Reference and prediction of shape (4, 4, 2) with hand-computable scores.

    LV (1): slice 0: reference 4 voxels, prediction the same 4 -> Dice 1.
            slice 1: reference 4 voxels, prediction 2 of them -> TP 2, FP 0, FN 2 -> Dice 4/6.
            volume: TP 6, FP 0, FN 2 -> Dice 12/14.
    MY (2): slice 0: reference 2 voxels, prediction 2 other voxels -> Dice 0 (both non-empty).
            slice 1: empty in both -> both_empty.
            volume: TP 0, FP 2, FN 2 -> Dice 0.
    """
    ref = np.zeros((4, 4, 2), np.uint8)
    pred = np.zeros((4, 4, 2), np.uint8)
    ref[0:2, 0:2, 0] = 1
    pred[0:2, 0:2, 0] = 1
    ref[0:2, 0:2, 1] = 1
    pred[0:2, 0, 1] = 1
    ref[3, 0:2, 0] = 2
    pred[3, 2:4, 0] = 2
    return ref, pred


def erode_lv_boundary(lab: np.ndarray, to: int) -> np.ndarray:
    """Copy of a label volume ``(x, y, slice)`` whose LV (1) boundary pixels, per slice (2D
    4-connected erosion), are relabelled ``to``: a realistic one-pixel under-segmentation."""
    from scipy import ndimage

    out = lab.copy()
    for z in range(lab.shape[2]):
        lv = lab[:, :, z] == 1
        out[:, :, z][lv & ~ndimage.binary_erosion(lv)] = to
    return out


class LazyModule:
    """A module imported on first attribute access, so that collecting a test file does not import
    it: under pytest-xdist every worker collects every file, and torch with segmentation-models-
    pytorch takes about 6 s of CPU to import. Only the workers that run such tests import it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # pytest probes every module global for markers (``_pytest...``)
            raise AttributeError(attr)
        import importlib

        return getattr(importlib.import_module(self._name), attr)


def has_modules(*names: str) -> bool:
    """Whether every module in ``names`` is installed (found without importing it)."""
    from importlib.util import find_spec

    return all(find_spec(n) is not None for n in names)


def refusal_and_peak(call, exc_type) -> tuple[str, int]:
    """``call()`` must raise ``exc_type``: its message and the peak of Python memory while it ran
    (bytes, ``tracemalloc``)."""
    import tracemalloc

    import pytest

    tracemalloc.start()
    try:
        with pytest.raises(exc_type) as ei:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(ei.value), peak


def copy_board(prefilled_dir: Path, tmp_path: Path) -> Path:
    """A writable copy ``tmp_path/lb`` of the run's pre-filled leaderboard (conftest ``prefilled_dir``)."""
    import shutil

    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    return lb


def warning_lines(stderr: str) -> list[str]:
    """The ``warning:`` lines of a command's standard error."""
    return [ln for ln in stderr.splitlines() if ln.startswith("warning:")]
