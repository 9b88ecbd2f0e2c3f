"""DICOM -> NIfTI geometry: hand-computed affines, nibabel/pydicom facts, and the real Sunnybrook files.

Every expected affine below is written out by hand from the DICOM definitions (PS3.3 C.7.6.2.1.1):
pixel (row r, column c) lies at IPP + c * PixelSpacing[1] * IOP[:3] + r * PixelSpacing[0] * IOP[3:],
NIfTI x = column, y = row, LPS -> RAS negates the first two world axes.
"""

from __future__ import annotations

import gzip
import io
import warnings
from importlib import resources

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicomfactory import coded_image, write_dicom

from cardbench.datasets.dicom import (DicomError, DicomGeometryError, cine_to_nifti, read_dicom, slice_info,
                                      stack_geometry, stack_to_nifti)

AXIAL = [1, 0, 0, 0, 1, 0]


def _axial_stack(tmp_path, z_order=(12.0, 10.0, 14.0), slice_locations=(0.0, 5.0, 1.0)):
    """Three 3x4 axial slices at z = 10, 12, 14 mm written in a shuffled order with wrong SliceLocation
    and instance numbers that do not follow z."""
    paths = []
    for i, (z, sl) in enumerate(zip(z_order, slice_locations)):
        paths.append(write_dicom(tmp_path / f"s{i}.dcm", coded_image(3, 4, int(z)), ipp=[-100, -120, z], iop=AXIAL,
                                 spacing=(0.5, 0.8), instance=10 - i, slice_location=sl))
    return [pydicom.dcmread(p) for p in paths]


def test_axial_affine_by_hand(tmp_path):
    dsets = _axial_stack(tmp_path)
    img, geo = stack_to_nifti(dsets)
    # x (column) step 0.8 mm along L -> -0.8 along R; y (row) 0.5 mm along P -> -0.5 along A; slices +2 mm S
    expected = np.array([[-0.8, 0, 0, 100],
                         [0, -0.5, 0, 120],
                         [0, 0, 2, 10],
                         [0, 0, 0, 1]])
    np.testing.assert_allclose(geo.affine, expected, atol=1e-9)
    np.testing.assert_allclose(img.affine, expected, atol=1e-5)
    assert img.shape == (4, 3, 3)
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.5, 2.0), atol=1e-6)
    assert geo.slice_spacing == pytest.approx(2.0)
    data = np.asarray(img.dataobj)
    # slice k holds z = 10 + 2k (codes 10, 12, 14), x = column, y = row
    for k, z in enumerate((10, 12, 14)):
        np.testing.assert_array_equal(data[:, :, k], coded_image(3, 4, z).T)
    assert data[3, 2, 0] == (10 * 10000 + 2 * 100 + 3) % 32000  # row 2, column 3 of the z=10 slice
    # nibabel's reading of the header: RAS axis codes L, P, S (x grows to the patient's left, y to posterior)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")


def test_oblique_affine_by_hand(tmp_path):
    # rows along +y (anterior->posterior in LPS), columns down -z; normal = row x col = (-1, 0, 0)
    iop = [0, 1, 0, 0, 0, -1]
    dsets = []
    for i, x in enumerate((1.0, 5.0, 3.0)):
        p = write_dicom(tmp_path / f"o{i}.dcm", coded_image(2, 3, i), ipp=[x, -20, 30], iop=iop, spacing=(1.5, 1.0))
        dsets.append(pydicom.dcmread(p))
    img, geo = stack_to_nifti(dsets)
    # positions along n=(-1,0,0): x=5 -> -5, x=3 -> -3, x=1 -> -1: ascending = x 5, 3, 1; step (-2, 0, 0) LPS
    # LPS columns: (0, 1.0, 0), (0, 0, -1.5), (-2, 0, 0), origin (5, -20, 30); RAS negates rows 0 and 1
    expected = np.array([[0, 0, 2, -5],
                         [-1, 0, 0, 20],
                         [0, -1.5, 0, 30],
                         [0, 0, 0, 1]])
    np.testing.assert_allclose(geo.affine, expected, atol=1e-9)
    assert list(geo.order) == [1, 2, 0]
    data = np.asarray(img.dataobj)
    np.testing.assert_array_equal(data[:, :, 0], coded_image(2, 3, 1).T)


def test_slice_location_and_instance_number_are_ignored(tmp_path):
    a = _axial_stack(tmp_path / "a", slice_locations=(0.0, 5.0, 1.0))
    b = _axial_stack(tmp_path / "b", slice_locations=(100.0, -3.0, 7.0))
    ia, _ = stack_to_nifti(a)
    ib, _ = stack_to_nifti(b)
    np.testing.assert_array_equal(ia.affine, ib.affine)
    np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj))


def test_rescale_slope_applied(tmp_path):
    p = write_dicom(tmp_path / "r.dcm", np.array([[1, 2], [3, 4]]), ipp=[0, 0, 0], iop=AXIAL, spacing=(1, 1),
                    slope=2.0, intercept=-1.0)
    img, _ = stack_to_nifti([pydicom.dcmread(p)])
    np.testing.assert_allclose(np.asarray(img.dataobj)[:, :, 0], np.array([[1, 3], [5, 7]]).T)


def test_geometry_errors(tmp_path):
    d = _axial_stack(tmp_path)
    dup = write_dicom(tmp_path / "dup.dcm", coded_image(3, 4, 1), ipp=[-100, -120, 12.0], iop=AXIAL,
                      spacing=(0.5, 0.8))
    with pytest.raises(DicomGeometryError, match="same position"):
        stack_geometry([slice_info(x) for x in d + [pydicom.dcmread(dup)]])
    gap = write_dicom(tmp_path / "gap.dcm", coded_image(3, 4, 1), ipp=[-100, -120, 18.0], iop=AXIAL,
                      spacing=(0.5, 0.8))
    with pytest.raises(DicomGeometryError, match="not evenly spaced"):
        stack_geometry([slice_info(x) for x in d + [pydicom.dcmread(gap)]])
    tilted = write_dicom(tmp_path / "t.dcm", coded_image(3, 4, 1), ipp=[-100, -120, 16.0],
                         iop=[1, 0, 0, 0, 0.8, 0.6], spacing=(0.5, 0.8))
    with pytest.raises(DicomGeometryError, match="ImageOrientationPatient"):
        stack_geometry([slice_info(x) for x in d + [pydicom.dcmread(tilted)]])
    bad = pydicom.dcmread(d[0].filename)
    del bad.ImagePositionPatient
    with pytest.raises(DicomError, match="ImagePositionPatient"):
        slice_info(bad)
    with pytest.raises(DicomError, match="not a readable DICOM"):
        read_dicom(b"not a dicom file at all", name="junk.dcm")


def test_cine_4d(tmp_path):
    dsets = []
    for z in (0.0, 8.0):
        for t, tt in enumerate((0.0, 40.0, 80.0)):
            p = write_dicom(tmp_path / f"z{z}_t{t}.dcm", coded_image(2, 2, int(z) + t), ipp=[0, 0, z], iop=AXIAL,
                            spacing=(1, 1), trigger=tt)
            dsets.append(pydicom.dcmread(p))
    out = cine_to_nifti(dsets[::-1], cine=True)
    assert sorted(k for k in out if k != "cine") == [1, 2, 3]
    c = out["cine"]
    assert c.shape == (2, 2, 2, 3)
    assert c.header.get_zooms()[3] == pytest.approx(0.040)  # 40 ms between frames, stored in seconds
    data = np.asarray(c.dataobj)
    np.testing.assert_array_equal(data[:, :, 1, 2], coded_image(2, 2, 8 + 2).T)


# --------------------------------------------------------------------------- real Sunnybrook files

def _sunnybrook_dicoms():
    root = resources.files("cardbench.datasets") / "data" / "sunnybrook-sample" / "final_data" / "dicoms"
    out = []
    for pdir in sorted(root.iterdir(), key=lambda p: p.name):
        for f in sorted(pdir.iterdir(), key=lambda p: p.name):
            out.append((pdir.name, f.name, pydicom.dcmread(io.BytesIO(gzip.decompress(f.read_bytes())))))
    return out


def test_nibabel_agrees_on_single_slice_geometry():
    """nibabel's DICOM wrapper gives the LPS affine of one image with voxel axes (row, column):
    our (x = column, y = row) LPS affine is it with the first two columns swapped."""
    from nibabel.nicom import dicomwrappers

    from cardbench.datasets.dicom import LPS_TO_RAS

    dsets = _sunnybrook_dicoms()
    assert len(dsets) == 186
    for _, _, ds in dsets[::9]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = dicomwrappers.wrapper_from_data(ds)
            nib_aff = w.affine
            nib_normal = w.slice_normal
        geo = stack_geometry([slice_info(ds)])
        lps = np.linalg.inv(LPS_TO_RAS) @ geo.affine
        np.testing.assert_allclose(lps[:3, 0], nib_aff[:3, 1], atol=1e-6)
        np.testing.assert_allclose(lps[:3, 1], nib_aff[:3, 0], atol=1e-6)
        np.testing.assert_allclose(lps[:3, 3], nib_aff[:3, 3], atol=1e-6)
        # nibabel's voxel axes are (row, column, slice), so its normal is IOP[3:] x IOP[:3] (right-handed for
        # that order); ours, for (column, row, slice), is IOP[:3] x IOP[3:]: the same line, opposite sign
        np.testing.assert_allclose(slice_info(ds).normal, -nib_normal, atol=1e-6)


def test_sunnybrook_slice_location_is_not_the_spacing():
    """The data README's warning, checked on the files: SliceLocation steps differ from the IPP spacing."""
    by: dict[str, dict[int, object]] = {}
    for pid, name, ds in _sunnybrook_dicoms():
        n = int(name.split(".")[0])
        by.setdefault(pid, {}).setdefault((n - 1) // 20 + 1, ds)  # one image per slice (N = (slice-1)*20+frame)
    for pid, per_slice in by.items():
        dsets = list(per_slice.values())
        iop = np.array(dsets[0].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        ipp_pos = sorted(float(np.array(d.ImagePositionPatient, float) @ normal) for d in dsets)
        loc = sorted(float(d.SliceLocation) for d in dsets)
        ipp_gap = np.median(np.diff(ipp_pos))
        loc_gap = np.median(np.diff(loc))
        assert ipp_gap in (pytest.approx(8.0, abs=0.01), pytest.approx(10.0, abs=0.01))
        assert abs(loc_gap - ipp_gap) > 1.0
        geo = stack_geometry([slice_info(d) for d in dsets])
        assert geo.slice_spacing == pytest.approx(ipp_gap, abs=0.01)
