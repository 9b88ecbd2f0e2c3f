"""Fixes of a fresh-user trial: the dashboard's image reader is bounded; `leaderboard show`, `volumes
score` and `data info` fit an 80-column terminal without cutting a word or a number."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardbench.datasets.io import MaskReadError
from cardbench.limits import Limits
from tests.helpers import refusal_and_peak


# ---- 1. the drill-down's image reader (cardbench.dashboard.images.read_volume)

def _nifti_header(shape, dtype=np.int16) -> bytes:
    """A NIfTI-1 single-file header (352 bytes: 348 + the extension flag) declaring ``shape``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def test_image_declaring_a_huge_shape_is_refused_before_decoding(tmp_path):
    from cardbench.dashboard.images import read_volume

    # declares 4096 x 4096 x 64 int16 = 2 GiB (8 GiB as float32) but holds 1 KiB: nothing is allocated
    f = tmp_path / "huge.nii.gz"
    f.write_bytes(gzip.compress(_nifti_header((4096, 4096, 64)) + b"\x00" * 1024))
    msg, peak = refusal_and_peak(lambda: read_volume(f), MaskReadError)
    assert str(f) in msg and "declares" in msg and "CARDBENCH_MAX_MASK_BYTES" in msg
    assert peak < 4 * 2**20, peak


def test_image_gzip_expanding_beyond_its_header_is_refused_with_bounded_memory(tmp_path):
    from cardbench.dashboard.images import read_volume

    # header: 64 x 64 x 2 int16 = 16,384 bytes of data; the gzip expands to 32 MiB of zeros after it
    f = tmp_path / "bomb.nii.gz"
    f.write_bytes(gzip.compress(_nifti_header((64, 64, 2)) + b"\x00" * (32 * 2**20), compresslevel=9))
    assert f.stat().st_size < 100_000
    msg, peak = refusal_and_peak(lambda: read_volume(f), MaskReadError)
    assert str(f) in msg and "decompresses to more than" in msg
    assert peak < 4 * 2**20, peak


def test_image_float32_output_counts_against_the_limit(tmp_path):
    from cardbench.dashboard.images import read_volume

    # uint8 64 x 64 x 4 = 16,384 bytes stored, 65,536 bytes as the float32 array returned
    f = tmp_path / "u8.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 4), np.uint8), np.eye(4)), str(f))
    assert read_volume(f, Limits(max_mask_bytes=65_536))[0].shape == (64, 64, 4)
    with pytest.raises(MaskReadError, match="above the limit of 65535 bytes"):
        read_volume(f, Limits(max_mask_bytes=65_535))


def test_image_not_nifti_by_its_bytes_is_refused(tmp_path):
    from cardbench.dashboard.images import read_volume

    f = tmp_path / "fake.nii.gz"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000)
    with pytest.raises(MaskReadError, match="not gzip-compressed"):
        read_volume(f)


def test_sunnybrook_image_reads_as_nibabel_does(sunnybrook_prepared):
    from cardbench.dashboard.images import read_volume

    files = sorted((sunnybrook_prepared / "images").rglob("*.nii.gz"))
    assert files
    for f in files[:2]:
        img = nib.load(str(f))
        want = np.asarray(img.dataobj, dtype=np.float32)
        while want.ndim > 3:
            want = want[..., 0]
        arr, zooms = read_volume(f)
        assert arr.dtype == np.float32 and arr.shape == want.shape
        np.testing.assert_array_equal(arr, want)
        assert zooms == tuple(float(z) for z in img.header.get_zooms()[:3])


# ---- 4. `cardbench data info` wraps at the terminal's width

def test_data_info_fits_80_columns_without_losing_words():
    from typer.testing import CliRunner

    from cardbench.cli import app
    from cardbench.datasets.cards import load_card

    res = CliRunner().invoke(app, ["data", "info", "ankenbrand2021-derived"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    words = " ".join(res.stdout.split())  # wrapping changes only the whitespace between words
    c = load_card("ankenbrand2021-derived")
    for text in [c.description, *c.known_issues]:
        assert " ".join(text.split()) in words


# ---- 2. `cardbench leaderboard show` (table format): nothing cut at 80 or 120 columns

@pytest.mark.parametrize("columns", [80, 120])
def test_leaderboard_show_fits_and_keeps_every_name_and_value(prefilled_dir, columns):
    import re

    from typer.testing import CliRunner

    from cardbench.benchmark.leaderboard import direction_text, display_table, open_leaderboard
    from cardbench.cli import app

    res = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(prefilled_dir)],
                             env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= columns, max(lines, key=len)
    words = " ".join(res.stdout.split())
    lb = open_leaderboard(prefilled_dir, prefill=False)
    n_rows = 0
    for b in lb.benchmark_ids():
        df = lb.ranked(b, "dice_lv")
        a = df.attrs
        title = f"{lb.benchmark(b).title}  |  ranked by {a['rank_column']} ({a['group']}), " \
                f"{direction_text(a['direction'])}"
        assert " ".join(title.split()) in words  # wrapped, not cut
        disp = display_table(df)
        for _, r in disp.iterrows():
            # the lines of this entry in every table of the benchmark: its rank and name, then the next line
            # (the value's interval in the narrow layout)
            at = [i for i, ln in enumerate(lines) if re.match(rf"^[\s│┃]*{re.escape(r['rank'])}\s+[│┃]?\s*"
                                                               rf"{re.escape(r['entry'])}(\s|$)", ln)]
            assert at, (b, r["entry"])
            text = " ".join(lines[i] + " " + lines[i + 1] for i in at if i + 1 < len(lines))
            for c in disp.columns:
                if c in ("rank", "entry", "label"):
                    continue
                for part in str(r[c]).replace(" [", "\n[").split("\n"):
                    assert re.search(rf"(^|\s){re.escape(part)}(\s|$)", text), (b, r["entry"], c, part)
            n_rows += 1
    assert n_rows >= 14
