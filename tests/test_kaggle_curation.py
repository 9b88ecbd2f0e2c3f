"""Kaggle curation steps on small synthetic DICOM studies built with pydicom, one inconsistency each.

Every synthetic image samples a known function of the patient position, f(x, y, z) = x + 2y + 3z (LPS mm),
plus 1000 per frame. So after conversion each voxel of the NIfTI must hold f at the position that the
NIfTI affine gives for it: one check covers slice order, spacing, affine and pixel placement without
reusing any of the converter's formulas.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dicomfactory import write_dicom

from cardbench.datasets.kaggle import (CurationLog, curate_kaggle, curate_study, read_conversion_log, read_study,
                                       split_study)

AXIAL = (1, 0, 0, 0, 1, 0)
FRAME_STEP = 1000


def f_world(lps: np.ndarray) -> np.ndarray:
    return lps[..., 0] + 2 * lps[..., 1] + 3 * lps[..., 2]


def write_slice(folder: Path, name: str, *, ipp, iop=AXIAL, rows=12, cols=12, spacing=(1.0, 1.0), frames=3,
                series=1, offset=0):
    iop = np.asarray(iop, float)
    r, c = np.mgrid[0:rows, 0:cols]
    pts = np.asarray(ipp, float) + c[..., None] * spacing[1] * iop[:3] + r[..., None] * spacing[0] * iop[3:]
    base = np.rint(f_world(pts)).astype(np.int16) + offset
    for t in range(frames):
        write_dicom(folder / f"{name}-{t + 1:04d}.dcm", base + FRAME_STEP * t, ipp=ipp, iop=iop, spacing=spacing,
                    instance=t + 1, trigger=30.0 * t, series_number=series, series_uid=f"1.2.826.0.1.{series}",
                    slice_location=-999.0)


def simple_study(root: Path, zs=(0, 10, 20, 30, 40), rows=12, cols=12, **kw) -> Path:
    study = root / "study"
    for i, z in enumerate(zs):
        write_slice(study / f"sax_{i + 1}", f"IM-{i + 1:04d}", ipp=[-6, -5, z], rows=rows, cols=cols, series=i + 1,
                    **kw)
    return study


def world_values(img: nib.Nifti1Image) -> np.ndarray:
    """f at the LPS position of every voxel according to the image's affine, shape (x, y, slice)."""
    nx, ny, nz = img.shape[:3]
    i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    ras = np.stack([i, j, k, np.ones_like(i)], -1) @ img.affine.T
    lps = ras[..., :3] * np.array([-1, -1, 1])
    return f_world(lps)


def check_world(img, slices=None, frames=3, atol=1e-3):
    data = np.asarray(img.dataobj)
    w = world_values(img)
    ks = range(img.shape[2]) if slices is None else slices
    for k in ks:
        for t in range(frames):
            np.testing.assert_allclose(data[:, :, k, t], w[:, :, k] + FRAME_STEP * t, atol=atol)


def run(study: Path, out: Path, pid="P", **kw):
    log = CurationLog()
    dims = curate_study(study, out, pid, log, **kw)
    return log, dims


def problems(log):
    return [(e.problem, e.resolution) for e in log.entries]


def test_clean_study(tmp_path):
    log, dims = run(simple_study(tmp_path), tmp_path / "out")
    assert log.entries == []
    img = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    assert img.shape == (12, 12, 5, 3)
    # by hand: x = column (+1 mm L -> -1 R), y = row (+1 mm P -> -1 A), slices 10 mm S, origin LPS (-6, -5, 0)
    np.testing.assert_allclose(img.affine, [[-1, 0, 0, 6], [0, -1, 0, 5], [0, 0, 10, 0], [0, 0, 0, 1]], atol=1e-5)
    assert img.header.get_zooms()[3] == pytest.approx(0.030)
    check_world(img)
    assert dims == [{"pid": "P", "X": 12, "Y": 12, "pixelSpacingX": 1.0, "pixelSpacingY": 1.0, "sliceSpacing": 10.0,
                     "scaleFactor": 1.0}]


def test_duplicate_position_keeps_later_series(tmp_path):
    study = simple_study(tmp_path)
    write_slice(study / "sax_9", "IM-0009", ipp=[-6, -5, 20.3], series=9, offset=500)
    log, _ = run(study, tmp_path / "out")
    assert problems(log) == [("collission", "slice removed")]
    e = log.entries[0]
    assert "sax_3" in e.file and "sax_9" in e.detail and e.detail.endswith("(20.0,20.3)")
    img = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    assert img.shape[2] == 5
    data = np.asarray(img.dataobj)
    # slice 2 comes from series 9 (offset 500; written at z = 20.3 with values rint(x + 2y + 60.9) = x + 2y + 61,
    # and placed on the regular grid at z = 20, 0.3 mm from its true position, within the 1 mm collision tolerance)
    np.testing.assert_allclose(data[:, :, 2, 0], world_values(img)[:, :, 2] + 500 + 1, atol=1e-3)
    check_world(img, slices=[0, 1, 3, 4])


def test_missing_slice_filled_with_previous(tmp_path):
    study = simple_study(tmp_path, zs=(0, 10, 30, 40))
    log, dims = run(study, tmp_path / "out")
    assert problems(log) == [("slice spacing: missing", "previous slice copied")]
    assert "sax_2" in log.entries[0].file and log.entries[0].detail == "expected: 10.0, actual: 20.0"
    img = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    assert img.shape[2] == 5 and dims[0]["sliceSpacing"] == 10.0
    check_world(img, slices=[0, 1, 3, 4])
    data = np.asarray(img.dataobj)
    np.testing.assert_array_equal(data[:, :, 2], data[:, :, 1])  # the copy of z = 10 stands at z = 20


def test_interspersed_and_outlier_slices_removed(tmp_path):
    study = simple_study(tmp_path, zs=(0, 10, 14, 20, 30, 40, 120))
    log, _ = run(study, tmp_path / "out")
    assert sorted(problems(log)) == [("slice spacing: interspersed", "slice removed"),
                                     ("slice spacing: outlier", "slice removed")]
    removed = {e.problem: e.file for e in log.entries}
    assert "sax_3" in removed["slice spacing: interspersed"] and "sax_7" in removed["slice spacing: outlier"]
    img = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    assert img.shape[2] == 5
    check_world(img)


def test_multi_slice_folder_is_split(tmp_path):
    study = tmp_path / "study"
    for i, z in enumerate((0, 10, 20)):
        write_slice(study / "sax_5", f"IM-0005-{i + 1:04d}", ipp=[-6, -5, z], series=5)
    log = CurationLog()
    slices = read_study(study, "P", log)
    assert problems(log) == [("multi-slice series", "split")]
    assert len(slices) == 3 and all(len(s.frames) == 3 for s in slices)
    log2, _ = run(study, tmp_path / "out")
    check_world(nib.load(tmp_path / "out" / "P" / "sa.nii.gz"))


def test_repeated_series_split_into_two_patients(tmp_path):
    study = simple_study(tmp_path, zs=(0, 10, 20))
    # a second acquisition of the same heart, 3 positions, all in sax_10 (the seed's patient 1082 layout)
    for i, z in enumerate((2, 12, 22)):
        write_slice(study / "sax_10", f"IM-0010-{i + 1:04d}", ipp=[-6, -5, z], series=10)
    log, dims = run(study, tmp_path / "out", pid="1082")  # the seed's manual split: {"a": ["sax_10"], "b": rest}
    assert ("repeated series", "split") in problems(log)
    assert sorted(d["pid"] for d in dims) == ["1082_a", "1082_b"]
    a = nib.load(tmp_path / "out" / "1082_a" / "sa.nii.gz")
    b = nib.load(tmp_path / "out" / "1082_b" / "sa.nii.gz")
    assert a.shape[2] == b.shape[2] == 3
    assert a.affine[2, 3] == pytest.approx(2) and b.affine[2, 3] == pytest.approx(0)
    check_world(a)
    check_world(b)
    with pytest.raises(ValueError, match="not in the study"):
        split_study(read_study(study, "x", CurationLog()), "x", {"a": ["sax_99"], "b": None}, CurationLog())


def test_downscale_keeps_geometry(tmp_path):
    study = simple_study(tmp_path, rows=12, cols=16)
    log, dims = run(study, tmp_path / "out", target_size=8)
    assert ("image size >8", "scaled") in problems(log)
    e = [x for x in log.entries if x.problem == "image size >8"][0]
    assert e.detail == "(16,12) scaling down with factor: 0.5"
    img = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    assert img.shape[:2] == (8, 6)
    assert dims[0]["pixelSpacingX"] == 2.0 and dims[0]["scaleFactor"] == 0.5
    # by hand: the grid centre stays where it was: old centre (7.5, 5.5) px = new centre (3.5, 2.5) x 2 mm,
    # so the new origin is the old one + 0.5 mm along rows and columns: LPS (-5.5, -4.5, 0) -> RAS (5.5, 4.5, 0)
    np.testing.assert_allclose(img.affine, [[-2, 0, 0, 5.5], [0, -2, 0, 4.5], [0, 0, 10, 0], [0, 0, 0, 1]],
                               atol=1e-5)
    # f is linear, so linear interpolation (and the symmetric anti-aliasing blur) reproduce it away from the border
    data = np.asarray(img.dataobj)
    w = world_values(img)
    np.testing.assert_allclose(data[1:7, 1:5, :, 0], w[1:7, 1:5, :], atol=1e-3)


def test_rows_less_than_columns_rotated_copy(tmp_path):
    study = simple_study(tmp_path, rows=10, cols=14)
    log, _ = run(study, tmp_path / "out")
    assert problems(log) == [("rows<columns", "rotated copy added")]
    a = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    b = nib.load(tmp_path / "out" / "P_rot90" / "sa.nii.gz")
    assert a.shape[:2] == (14, 10) and b.shape[:2] == (10, 14)
    check_world(a)
    check_world(b)  # the copy's affine places every rotated voxel where its value says it is
    # the original is kept unchanged: rotating the copy back gives it
    np.testing.assert_array_equal(np.rot90(np.asarray(b.dataobj), 1, axes=(0, 1)), np.asarray(a.dataobj))


def test_rotated_parallel_slice_is_resampled(tmp_path):
    study = simple_study(tmp_path, zs=(0, 10, 30, 40))
    # slice at z = 20 acquired with the image rotated by 90 degrees in plane: rows along -x, columns along +y.
    # Same field of view: centre LPS (-0.5, 0.5, 20) -> IPP = centre - 5.5 * (0, 1, 0) - 5.5 * (-1, 0, 0)
    write_slice(study / "sax_20", "IM-0020", ipp=[5, -5, 20], iop=(0, 1, 0, -1, 0, 0), series=3)
    log, _ = run(study, tmp_path / "out")
    assert problems(log) == [("rotation", "rotation")]
    assert log.entries[0].detail == "90.0 degrees"
    check_world(nib.load(tmp_path / "out" / "P" / "sa.nii.gz"))


def test_tilted_slice_removed(tmp_path):
    study = simple_study(tmp_path)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    write_slice(study / "sax_9", "IM-0009", ipp=[-6, -5, 25], iop=(1, 0, 0, 0, c, s), series=9)
    log, _ = run(study, tmp_path / "out")
    assert problems(log) == [("orientation", "slice removed")]
    assert "sax_9" in log.entries[0].file
    assert float(log.entries[0].detail.split(":")[1]) == pytest.approx(30.0)
    check_world(nib.load(tmp_path / "out" / "P" / "sa.nii.gz"))


def test_missing_frame_copied_and_other_pixel_spacing_resampled(tmp_path):
    study = simple_study(tmp_path, zs=(0, 10, 30, 40))
    write_slice(study / "sax_20", "IM-0020", ipp=[-6, -5, 20], frames=2, series=3)
    write_slice(study / "sax_6", "IM-0006", ipp=[-6, -5, 50], rows=6, cols=6, spacing=(2.0, 2.0), series=6)
    log, _ = run(study, tmp_path / "out")
    assert sorted(problems(log)) == [("image size", "scaling/padding/cropping"),
                                     ("missing frame", "previous frame copied"),
                                     ("pixel spacing", "scaling/padding/cropping")]
    img = nib.load(tmp_path / "out" / "P" / "sa.nii.gz")
    data = np.asarray(img.dataobj)
    check_world(img, slices=[0, 1, 3, 4])
    np.testing.assert_array_equal(data[:, :, 2, 2], data[:, :, 2, 1])
    check_world(img, slices=[2], frames=2)
    # the 2 mm slice resampled onto the 1 mm grid: exact inside its field of view (f is linear),
    # zero outside it (no data there): its 6 x 6 pixels of 2 mm cover columns/rows 0..10 of the 1 mm grid
    w = world_values(img)
    np.testing.assert_allclose(data[0:11, 0:11, 5, 0], w[0:11, 0:11, 5], atol=1e-3)
    assert (data[11, :, 5, 0] == 0).all()


def test_log_format_and_vocabulary(tmp_path, shared_data):
    """Our log has the seed's 5 tab-separated columns; its problem names are the seed's (from the published
    conversion.log, read here with the csv module) plus the steps the seed did not log."""
    import csv

    published = shared_data / "cmr-seg-tl/analysis/kaggle/conversion.log"
    with open(published, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    seed_problems = {r[1] for r in rows}
    df = read_conversion_log(published)
    assert len(df) == len(rows) == 956
    assert df["problem"].value_counts().to_dict() == {p: sum(r[1] == p for r in rows) for p in seed_problems}
    raw = tmp_path / "raw" / "train" / "train"
    simple_study(raw / "11", zs=(0, 10, 30, 40))
    s = simple_study(raw / "12")
    write_slice(s / "sax_9", "IM-0009", ipp=[-6, -5, 20.3], series=9)
    log, dims = curate_kaggle(tmp_path / "raw", tmp_path / "out", progress=False)
    lines = (tmp_path / "out" / "conversion.log").read_text().splitlines()
    assert len(lines) == 2 and all(len(x.split("\t")) == 5 for x in lines)
    ours = {x.split("\t")[1] for x in lines}
    assert ours <= seed_problems
    header = (shared_data / "cmr-seg-tl/analysis/kaggle/patient_dimensions.tsv").read_text().splitlines()[0]
    assert (tmp_path / "out" / "patient_dimensions.tsv").read_text().splitlines()[0] == header
    assert [d["pid"] for d in dims] == ["11", "12"]


def test_cli_prepare_kaggle(tmp_path):
    from typer.testing import CliRunner

    from cardbench.cli import app

    simple_study(tmp_path / "raw" / "validate" / "validate" / "500", zs=(0, 10, 30, 40))
    r = CliRunner().invoke(app, ["data", "prepare", "kaggle", "--source", str(tmp_path / "raw"), "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "slice spacing: missing" in r.stdout
    assert (tmp_path / "out" / "500" / "sa.nii.gz").is_file()
    r = CliRunner().invoke(app, ["data", "prepare", "kaggle", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2
