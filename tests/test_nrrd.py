"""NRRD, the worked example of a new mask format: an NRRD submission scores the same as its NIfTI
twin on the real Sunnybrook sample (prepared labels), and NRRD geometry is read from
``space directions`` / ``space origin``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

nrrd = pytest.importorskip("nrrd")

from cardbench.benchmark.scoring import score  # noqa: E402
from cardbench.datasets.formats.base import MaskReadError  # noqa: E402
from cardbench.datasets.io import read_mask  # noqa: E402
from helpers import erode_lv_boundary  # noqa: E402

METRICS = ["dice", "iou", "hd", "hd95", "assd", "ref_ml", "pred_ml"]


def write_nrrd_twin(nii: Path, out: Path, arr: np.ndarray | None = None, space: str = "right-anterior-superior"):
    """The NRRD twin of a NIfTI label volume: same array ``(x, y, slice)``, the NIfTI affine written as
    space directions (one row per axis = the affine's columns) and space origin, converted to ``space``."""
    img = nib.load(str(nii))
    a = np.asanyarray(img.dataobj) if arr is None else arr
    aff = np.asarray(img.affine, dtype=float)
    flip = {"right-anterior-superior": np.array([1.0, 1, 1]), "left-posterior-superior": np.array([-1.0, -1, 1])}[space]
    hdr = {"space": space, "space directions": (aff[:3, :3] * flip[:, None]).T,
           "space origin": aff[:3, 3] * flip, "encoding": "gzip"}
    out.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(out), np.asarray(a, dtype=np.uint8), hdr, index_order="F")
    return out


@pytest.fixture(scope="module")
def sunnybrook(tmp_path_factory, sunnybrook_prepared):
    """Prepared Sunnybrook sample, NIfTI predictions (LV boundary eroded into MY) and their NRRD twins."""
    root = tmp_path_factory.mktemp("sbnrrd")
    ref = sunnybrook_prepared  # prepared once per test run (conftest); read only
    for p in sorted((ref / "labels").rglob("*.nii.gz")):
        img = nib.load(str(p))
        pred = erode_lv_boundary(np.asanyarray(img.dataobj).astype(np.uint8), to=2)
        out = root / "pred_nii" / p.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(out))
        write_nrrd_twin(p, root / "pred_nrrd" / p.name.replace(".nii.gz", ".nrrd"), pred)
        write_nrrd_twin(p, root / "pred_nrrd_lps" / p.name.replace(".nii.gz", ".nrrd"), pred,
                        space="left-posterior-superior")
    return root, ref


def _metrics(pc: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in pc.columns if c not in ("pred_file",)]
    return pc[cols].reset_index(drop=True)


def test_nrrd_reads_like_its_nifti_twin(sunnybrook):
    root, ref = sunnybrook
    nii = sorted((ref / "labels").rglob("*.nii.gz"))[0]
    twin = write_nrrd_twin(nii, root / "twin" / nii.name.replace(".nii.gz", ".nrrd"))
    a, b = read_mask(nii), read_mask(twin)
    assert b.fmt == "nrrd" and b.array.shape == a.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
    np.testing.assert_allclose(b.spacing, a.spacing, rtol=1e-6)
    # spacing of each axis = norm of its space direction, independent of nibabel's pixdim
    dirs = np.asarray(nrrd.read_header(str(twin))["space directions"], float)
    np.testing.assert_allclose(b.spacing, np.linalg.norm(dirs, axis=1))


@pytest.mark.parametrize("folder", ["pred_nrrd", "pred_nrrd_lps"])
def test_nrrd_submission_scores_like_nifti_twin(sunnybrook, folder):
    root, ref = sunnybrook
    a = score(root / "pred_nii", ref, progress=False)
    b = score(root / folder, ref, progress=False)
    assert len(a.per_case) == len(b.per_case) > 0
    pd.testing.assert_frame_equal(_metrics(a.per_case), _metrics(b.per_case))
    pd.testing.assert_frame_equal(a.aggregates, b.aggregates)
    assert (b.per_case["pred_file"].str.endswith(".nrrd")).all()
    # the eroded predictions are not perfect: a real comparison, not Dice 1 everywhere
    lv = a.per_case[(a.per_case["class"] == "LV") & (a.per_case["level"] == "volume")]
    assert (lv["dice"] < 1).all()


def test_nrrd_magic_and_detached_header_refused(tmp_path):
    p = tmp_path / "x_frame01.nrrd"
    p.write_bytes(b"\x1f\x8b" + b"\x00" * 100)
    with pytest.raises(MaskReadError, match="NRRD000"):
        read_mask(p)
    p.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                  b"data file: /etc/passwd\n\n")
    with pytest.raises(MaskReadError, match="detached"):
        read_mask(p)


def test_nrrd_declared_size_checked_before_reading(tmp_path):
    p = tmp_path / "x_frame01.nrrd"
    p.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2048 2048 1024\nencoding: raw\n"
                  b"space directions: (1,0,0) (0,1,0) (0,0,1)\nspace: right-anterior-superior\n\n" + b"\x00" * 64)
    with pytest.raises(MaskReadError, match="above the limit"):
        read_mask(p)
    with pytest.raises(MaskReadError, match="header declares shape"):
        read_mask(p, expected_shape=(4, 4, 4))


def test_nrrd_non_finite_direction_refused(tmp_path):
    p = tmp_path / "x_frame01.nrrd"
    p.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\nspace: right-anterior-superior\n"
                  b"space directions: (1,0,0) (0,nan,0) (0,0,1)\nspace origin: (0,0,0)\n\n" + b"\x00" * 8)
    with pytest.raises(MaskReadError, match="NaN or infinite"):
        read_mask(p)
