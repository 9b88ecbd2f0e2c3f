"""Label maps and mask readers: real Kaggle manual masks and hand-made edge cases."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from cardbench.datasets.io import MaskReadError, read_mask
from cardbench.labelmaps import ACDC, LabelValueError, get_label_map
from helpers import save_nifti, save_png


def test_real_kaggle_manual_masks_pixel_counts_match_published(shared_data):
    """All 816 manual masks (8- and 16-bit greyscale PNG) give the published per-class pixel counts."""
    root = shared_data / "cmr-seg-tl" / "data" / "kaggle" / "manual" / "own_masks"
    pub = pd.read_csv(shared_data / "cmr-seg-tl" / "analysis" / "kaggle" / "manual" / "pixel_counts_by_class.tsv",
                      sep="\t")
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 816 == len(pub)
    pub = pub.set_index("file")
    modes = set()
    for f in files:
        img = read_mask(f)
        modes.add(img.source_dtype)
        a = img.array
        row = pub.loc[f.name]
        assert (int((a == 0).sum()), int((a == 1).sum()), int((a == 2).sum())) == (row["bg"], row["lv"], row["my"]), f
        assert a.size == row["bg"] + row["lv"] + row["my"], f  # no other value
    assert {"PNG mode L", "PNG mode I;16"} <= modes  # both bit depths really were exercised


def test_acdc_map_remaps_to_cardbench():
    # ACDC: 1 RV, 2 MY, 3 LV  ->  cardbench: 3 RV, 2 MY, 1 LV
    out = ACDC.to_cardbench(np.array([0, 1, 2, 3]))
    assert out.tolist() == [0, 3, 2, 1]


def test_value_outside_map_is_an_error():
    with pytest.raises(LabelValueError) as e:
        get_label_map("cardbench").to_cardbench(np.array([0, 1, 255]))
    assert e.value.bad_values == [255]


def test_custom_yaml_label_map(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nlabels: {background: 0, MY: 5, LV: 9}\n")
    lm = get_label_map(p)
    assert lm.classes == ("LV", "MY")
    assert lm.to_cardbench(np.array([0, 5, 9])).tolist() == [0, 2, 1]
    with pytest.raises(LabelValueError):
        lm.to_cardbench(np.array([1]))


def test_bad_label_map_file_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("labels: {background: 0, LV: 1, XX: 2}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        get_label_map(p)


def test_palette_png_read_as_indices(tmp_path):
    arr = np.array([[0, 1], [2, 3]])
    img = read_mask(save_png(tmp_path / "a_slice000_frame000-mask.png", arr, "P"))
    assert img.array.tolist() == arr.tolist()


def test_16bit_png(tmp_path):
    arr = np.array([[0, 1], [2, 0]])
    img = read_mask(save_png(tmp_path / "a.png", arr, "I;16"))
    assert img.array.tolist() == arr.tolist()


def test_rgb_png_rejected(tmp_path):
    with pytest.raises(MaskReadError, match="colour PNG"):
        read_mask(save_png(tmp_path / "a.png", np.zeros((2, 2)), "RGB"))


def test_truncated_gzip_rejected(tmp_path):
    p = save_nifti(tmp_path / "x_frame01.nii.gz", np.ones((8, 8, 3)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(MaskReadError, match="truncated or corrupt gzip"):
        read_mask(p)


def test_gz_name_without_gzip_rejected(tmp_path):
    p = save_nifti(tmp_path / "x_frame01.nii", np.ones((2, 2, 1)))
    q = tmp_path / "y_frame01.nii.gz"
    q.write_bytes(p.read_bytes())
    with pytest.raises(MaskReadError, match="not gzip-compressed"):
        read_mask(q)


def test_float_mask_integral_ok_nonintegral_rejected(tmp_path):
    ok = read_mask(save_nifti(tmp_path / "a_frame01.nii.gz", np.array([[[0.0, 1.0], [2.0, 3.0]]]), dtype=np.float32))
    assert ok.array.dtype.kind == "i" and ok.array.ravel().tolist() == [0, 1, 2, 3]
    with pytest.raises(MaskReadError, match="non-integral"):
        read_mask(save_nifti(tmp_path / "b_frame01.nii.gz", np.array([[[0.0, 0.4]]]), dtype=np.float32))


def test_sha256_is_of_file_bytes(tmp_path):
    import hashlib

    p = save_nifti(tmp_path / "a_frame01.nii.gz", np.ones((2, 2, 2)))
    assert read_mask(p).sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert gzip.decompress(p.read_bytes())[:4]  # really gzip


def test_label_map_value_that_is_not_a_number_is_one_clear_line(tmp_path):
    from cardbench.labelmaps import get_label_map

    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nlabels: {background: 0, LV: banana}\n")
    with pytest.raises(ValueError) as e:
        get_label_map(str(p))
    msg = str(e.value)
    assert "LV" in msg and "'banana'" in msg and "whole number" in msg and "invalid literal" not in msg
