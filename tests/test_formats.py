"""The mask-format registry and the checks shared by every format (datasets/formats)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from cardbench.datasets import formats
from cardbench.datasets.formats.base import MaskFormat, MaskReadError, capped_gunzip
from cardbench.datasets.formats.confusion import is_confusion_table
from cardbench.datasets.io import read_mask
from cardbench.datasets.naming import CaseKey, mask_format, parse_case_name
from cardbench.limits import Limits
from helpers import affine, save_nifti, save_png


def test_registry_names_suffixes_and_case_keys():
    assert list(formats.FORMATS) == ["nifti", "png", "nrrd"]
    assert formats.suffix_list() == ".nii.gz, .nii, .png or .nrrd"
    assert mask_format("a/B_frame01.NII.GZ") == "nifti" and mask_format("x.nrrd") == "nrrd"
    assert mask_format("x.png") == "png" and mask_format("x.txt") is None
    assert parse_case_name("p7_frame03.nrrd") == CaseKey("p7", 3)
    assert parse_case_name("v1_slice002_frame011-mask.png") == CaseKey("v1", 11, 2)
    assert parse_case_name("12-frame004-slice005.png") == CaseKey("12", 4, 5)
    with pytest.raises(ValueError, match=r"use .nii.gz, .nii, .png or .nrrd"):
        parse_case_name("x.mha")


def test_register_refuses_taken_name_or_suffix():
    class Dup(MaskFormat):
        name = "nifti2"
        suffixes = (".nii",)

    with pytest.raises(ValueError, match="already registered"):
        formats.register(Dup())
    assert "nifti2" not in formats.FORMATS


def test_annex_pointer_and_link_say_datalad_get(tmp_path):
    p = tmp_path / "s_frame01.nii.gz"
    p.write_text("/annex/objects/SHA256E-s10--abc.nii.gz\n")
    with pytest.raises(MaskReadError, match=r"content not retrieved.*datalad get") as e:
        read_mask(p)
    assert e.value.kind == "not_retrieved"
    q = tmp_path / "t_frame01.nii.gz"
    q.symlink_to(".git/annex/objects/aa/bb/SHA256E-s10--abc.nii.gz/SHA256E-s10--abc.nii.gz")
    with pytest.raises(MaskReadError, match="content not retrieved"):
        read_mask(q)
    r = tmp_path / "u_frame01.nii.gz"
    r.symlink_to("elsewhere.nii.gz")
    with pytest.raises(MaskReadError, match="broken symbolic link"):
        read_mask(r)


def test_capped_gunzip_stops_at_the_cap(tmp_path):
    data = gzip.compress(b"\x00" * 10_000)
    assert capped_gunzip(data, 10_000, tmp_path) == b"\x00" * 10_000
    with pytest.raises(MaskReadError, match="decompresses to more than the 9999 bytes"):
        capped_gunzip(data, 9_999, tmp_path)
    # two members, as `cat a.gz b.gz` gives (gzip(1) reads both)
    assert capped_gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 4, tmp_path) == b"abcd"


def test_limits_from_environment():
    lim = Limits.from_env({"CARDBENCH_MAX_PNG_PIXELS": "100"})
    assert lim.max_png_pixels == 100 and lim.max_mask_bytes == Limits().max_mask_bytes
    with pytest.raises(ValueError, match="CARDBENCH_MAX_MASK_BYTES"):
        Limits.from_env({"CARDBENCH_MAX_MASK_BYTES": "lots"})


def test_png_pixel_limit_from_the_header(tmp_path):
    p = save_png(tmp_path / "v_slice001_frame001-mask.png", np.zeros((20, 30)))
    with pytest.raises(MaskReadError, match="20 = 600 pixels"):
        formats.read_mask(p, limits=Limits(max_png_pixels=599))
    assert formats.read_mask(p, limits=Limits(max_png_pixels=600)).array.shape == (20, 30)


def test_nifti_declared_size_limit(tmp_path):
    p = save_nifti(tmp_path / "a_frame01.nii.gz", np.zeros((10, 10, 10)))
    with pytest.raises(MaskReadError, match="declares 1000 bytes"):
        formats.read_mask(p, limits=Limits(max_mask_bytes=999))
    assert formats.read_mask(p, limits=Limits(max_mask_bytes=1000)).array.shape == (10, 10, 10)


def test_qform_sform_disagreement_is_a_note_naming_the_sform(tmp_path):
    arr = np.zeros((4, 4, 2), np.uint8)
    img = nib.Nifti1Image(arr, affine())
    q = affine()
    q[0, 3] += 5.0  # 5 mm shift in the qform only
    img.set_qform(q, code=1)
    img.set_sform(affine(), code=2)
    p = tmp_path / "a_frame01.nii.gz"
    nib.save(img, str(p))
    m = read_mask(p)
    np.testing.assert_allclose(m.affine, affine())  # the sform is used (sform_code > 0)
    assert any("qform and sform differ by up to 5 mm; the sform (sform_code 2) was used" in n
               for n in m.summary_notes)


def test_qform_only_header_uses_the_qform(tmp_path):
    arr = np.zeros((4, 4, 2), np.uint8)
    img = nib.Nifti1Image(arr, affine())
    img.set_sform(None, code=0)
    img.set_qform(affine(), code=1)
    p = tmp_path / "a_frame01.nii.gz"
    nib.save(img, str(p))
    m = read_mask(p)
    np.testing.assert_allclose(m.affine, affine(), atol=1e-5)
    assert m.summary_notes == []


def test_confusion_table_detected_by_its_first_line(tmp_path):
    t = tmp_path / "c.tsv"
    t.write_text("image\tset\tmethodA\tmethodB\tbg_bg\tbg_lv\n")
    assert is_confusion_table(t)
    b = tmp_path / "d.tsv"
    b.write_bytes(b"image\tbg_bg\x00\x00binary\n")
    assert not is_confusion_table(b)
    assert not is_confusion_table(tmp_path / "missing.tsv")


def test_qform_note_reaches_the_summary(tmp_path):
    from cardbench.benchmark.scoring import score

    arr = np.zeros((4, 4, 2), np.uint8)
    arr[1:3, 1:3] = 1
    save_nifti(tmp_path / "ref" / "s_frame01.nii.gz", arr)
    img = nib.Nifti1Image(arr, affine())
    q = affine()
    q[1, 3] -= 3.0
    img.set_qform(q, code=1)
    img.set_sform(affine(), code=2)
    (tmp_path / "pred").mkdir()
    nib.save(img, str(tmp_path / "pred" / "s_frame01.nii.gz"))
    res = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert any("qform and sform differ by up to 3 mm; the sform" in n for n in res.summary["notes"])
