"""Leftovers of the session-16 trials (helper s17a), each test failing on the code before its fix:

1. an uncompressed ``.nii`` (or a ``.nii.gz``) that is no NIfTI is refused after reading its header,
   not the whole file (up to the 1 GiB file limit);
2. the message for a ``.nii.gz`` whose content is no NIfTI names the file's suffix ``.nii.gz``;
3. ``cardbench leaderboard export`` / ``show`` print a corrupt entry's warning before the "skipped"
   line that refers to it;
4. ``cardbench score --help`` at 80 columns: no line longer than 80 characters, no option's help cut
   or its ``[extra]`` eaten as markup, no description broken mid-sentence.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.datasets.formats import MaskReadError, read_mask
from cardbench.datasets.io import read_nifti_mask
from helpers import refusal_and_peak

NOT_NIFTI = ("but the content is zeros only (no header at all), not NIfTI (no NIfTI magic n+1/n+2 in its "
             "header); save the mask as a real NIfTI file (a renamed file is not converted)")


# ---------------------------------------------------------------- 1. header first


# the fixture bytes_read (a spy counting the bytes the mask reader reads) is in conftest.py


def _refusal(reader, path) -> tuple[str, int]:
    """The one-line message of ``reader(path)`` and the peak of Python memory while it ran (bytes)."""
    return refusal_and_peak(lambda: reader(path), MaskReadError)


@pytest.mark.parametrize("reader", [read_mask, read_nifti_mask])
def test_zeros_only_nii_is_refused_after_its_header(tmp_path, bytes_read, reader):
    p = tmp_path / "x.nii"
    with open(p, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # 64 MiB of zeros, sparse: like a zero-filled upload
    msg, peak = _refusal(reader, p)
    assert msg == f"{p}: named .nii {NOT_NIFTI}"  # the message of a small all-zero .nii (test_s16b_fixes)
    assert 348 <= bytes_read["n"] <= 64 * 1024  # the header was read, not the 64 MiB
    assert peak < 4 * 1024 * 1024


def test_large_text_named_nii_is_refused_after_its_header(tmp_path, bytes_read):
    p = tmp_path / "notes.nii"
    p.write_bytes(b"subject,frame,label\n" * 100_000)  # 2 MB of CSV text
    msg, _ = _refusal(read_mask, p)
    assert msg.startswith(f"{p}: named .nii but the content is text, not NIfTI")
    assert 348 <= bytes_read["n"] <= 64 * 1024


def test_gzip_of_zeros_is_refused_after_the_first_compressed_bytes(tmp_path, bytes_read):
    """A gzip whose decompressed header is zeros, followed by 1 MiB of incompressible bytes: the header
    decompresses from the first compressed bytes; the rest is never read."""
    p = tmp_path / "x.nii.gz"
    p.write_bytes(gzip.compress(bytes(4096) + random.Random(0).randbytes(1 << 20), compresslevel=1))
    assert p.stat().st_size > 1 << 20
    msg, _ = _refusal(read_mask, p)
    assert msg == f"{p}: named .nii.gz {NOT_NIFTI}"
    assert 0 < bytes_read["n"] <= 64 * 1024


def test_annex_pointer_named_nii_is_still_content_not_retrieved(tmp_path):
    p = tmp_path / "x_frame01.nii"
    p.write_bytes(b"/annex/objects/SHA256E-s2123--" + b"ab" * 32 + b".nii\n")
    with pytest.raises(MaskReadError) as ei:
        read_mask(p)
    assert ei.value.kind == "not_retrieved" and "content not retrieved" in str(ei.value)


@pytest.mark.parametrize("name", ["v_frame01.nii", "v_frame01.nii.gz"])
@pytest.mark.parametrize("version", [1, 2])
def test_real_nifti_larger_than_the_header_reads_as_nibabel_reads_it(tmp_path, name, version):
    """Header first, then the rest: a valid file (data beyond the first KiB) reads whole, as nibabel
    reads it."""
    arr = np.random.default_rng(0).integers(0, 4, (48, 40, 6), dtype=np.uint8)  # 11520 data bytes
    aff = np.diag([1.25, 1.25, 8.0, 1.0])
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    p = tmp_path / name
    cls(arr, aff).to_filename(p)
    assert p.stat().st_size > 2048  # beyond the first KiB read before the rest (about 3 KB gzip-compressed)
    img = read_mask(p)
    ref = nib.load(p)
    np.testing.assert_array_equal(img.array, np.asarray(ref.dataobj))
    np.testing.assert_allclose(img.affine, ref.affine)
    assert img.spacing == (1.25, 1.25, 8.0)


# ---------------------------------------------------------------- 2. the full suffix


def test_gzip_of_zeros_named_nii_gz_says_nii_gz(tmp_path):
    p = tmp_path / "x.nii.gz"
    p.write_bytes(gzip.compress(bytes(100_000)))
    with pytest.raises(MaskReadError) as ei:
        read_mask(p)
    assert str(ei.value) == f"{p}: named .nii.gz {NOT_NIFTI}"


def test_the_suffix_named_is_the_files_own(tmp_path):
    from cardbench.datasets.formats.nifti import NiftiFormat

    fmt = NiftiFormat()
    assert fmt.suffix_of("a_frame01.nii.gz") == ".nii.gz"
    assert fmt.suffix_of("a_frame01.NII.GZ") == ".NII.GZ"  # as written
    assert fmt.suffix_of("a.b_frame01.nii") == ".nii"
    assert fmt.suffix_of("masks.tar.gz") == ".tar.gz"
    assert fmt.suffix_of("mask.img") == ".img"
    p = tmp_path / "masks.tar.gz"  # given to the NIfTI reader by a Python user
    p.write_bytes(gzip.compress(bytes(100_000)))
    with pytest.raises(MaskReadError) as ei:
        read_nifti_mask(p)
    assert str(ei.value) == f"{p}: named .tar.gz {NOT_NIFTI}"


# ---------------------------------------------------------------- 3. the warning before its skipped line

B_KAGGLE = "kaggle-dsb-manual-masks__all__cardbench-v1"  # one entry: ukbb_cardiac-labels


def _corrupt_dice(entry: Path, value: float) -> Path:
    f = entry / "summary.json"
    d = json.loads(f.read_text(encoding="utf-8"))
    next(r for r in d["results"] if r["metric"] == "dice")["mean"] = value
    f.write_text(json.dumps(d), encoding="utf-8")
    return f


@pytest.fixture
def board_with_emptied_benchmark(prefilled_dir, tmp_path) -> tuple[Path, Path]:
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    return lb, _corrupt_dice(lb / B_KAGGLE / "entries" / "ukbb_cardiac-labels", 1.5)


def _order(stderr: str, bad: Path) -> tuple[int, int]:
    lines = stderr.splitlines()
    warn = [i for i, ln in enumerate(lines) if ln.startswith("warning:") and str(bad) in ln]
    skipped = [i for i, ln in enumerate(lines) if ln.startswith(f"skipped {B_KAGGLE}:")]
    assert len(warn) == 1 and len(skipped) == 1, stderr
    assert "see the warning line" in lines[skipped[0]]
    return warn[0], skipped[0]


@pytest.mark.parametrize("cmd", [["export", "{out}"], ["show", "-f", "json"],
                                 ["show", "-f", "json", "--ranks", "--resamples", "20"]])
def test_warning_comes_before_the_skipped_line(board_with_emptied_benchmark, tmp_path, cmd):
    lb, bad = board_with_emptied_benchmark
    args = ["leaderboard", *[a.format(out=tmp_path / "out") for a in cmd], "-L", str(lb)]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    warn, skipped = _order(r.stderr, bad)
    assert warn < skipped, r.stderr


# ---------------------------------------------------------------- 4. score --help at 80 columns


@pytest.fixture(scope="module")
def score_help() -> str:
    r = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert r.exit_code == 0, r.output
    return r.stdout


def test_score_help_fits_80_columns(score_help):
    lines = score_help.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert "…" not in score_help  # nothing cut with an ellipsis


def test_score_help_shows_every_word_of_every_option(score_help):
    import typer.main

    cmd = typer.main.get_command(app).commands["score"]
    tokens = score_help.replace("│", " ").split()
    for param in cmd.params:
        if not getattr(param, "help", None):
            continue
        words = param.help.replace("\\[", "[").split()  # \[ : a literal [ in rich markup
        it = iter(tokens)
        missing = [w for w in words if w not in it]  # in order: each word after the one before
        assert not missing, (param.name, missing)
    assert "(needs the [distributed] extra)" in " ".join(tokens)


def test_score_help_description_is_not_broken_mid_sentence(score_help):
    """The description paragraphs fill their lines: a line ends early only where the next word would
    not fit (78 columns of text between 1-column margins), or at a paragraph's end."""
    lines = score_help.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Usage:")) + 1
    end = next(i for i, ln in enumerate(lines) if ln.startswith("╭"))
    desc = [ln.strip() for ln in lines[start:end]]
    text = " ".join(" ".join(desc).split())
    assert "Every problem (missing, extra or duplicate cases, shape/spacing/affine mismatch, label values " \
           "outside the map, unreadable files) is printed on one line; then the command exits with code 2 " \
           "and writes nothing." in text
    for cur, nxt in zip(desc, desc[1:]):
        if cur and nxt:
            assert len(cur) + 1 + len(nxt.split()[0]) > 78, (cur, nxt)
