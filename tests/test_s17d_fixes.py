"""Fresh-user trial findings (helper s17d), each test failing on the code before its fix:

1. submitter text (a submission's name and label, file names) reaches the terminal with its control
   characters shown as visible escapes (``\\x1b``, ``\\n``): no escape sequence clears or retitles the
   operator's terminal, no newline in a file name forges a second ``error:`` line;
2. an uncompressed ``.nii`` whose header declares a huge shape is refused after its header, and one
   whose size differs from what its header declares (trailing junk, truncation) is refused with the
   byte counts;
3. messages that follow the content: a PNG or text named ``.nii.gz``; a FIFO or a link to a device in
   place of a mask is "not a regular file", never a missing case; a case name with non-ASCII digits
   is no frame number.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardbench._util import terminal_safe
from cardbench.cli import app

ESC, BEL = "\x1b", "\x07"
EVIL_NAME = "\x1b[2J\x1b[31mEVIL"
EVIL_LABEL = "\x1b[31mRED\x1b[0m \x1b]0;pwned\x07"


def _cli(args, columns=None):
    env = {"COLUMNS": str(columns)} if columns else {}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _output(res) -> str:
    out = res.stdout
    try:
        out += res.stderr
    except ValueError:
        pass
    return out


def _clean(out: str) -> bool:
    """No ESC or BEL byte in ``out`` (a function, so that a failing assert does not print them raw)."""
    return ESC not in out and BEL not in out


def _predictions(ref: Path, dest: Path) -> Path:
    """The reference's own label files as a submission folder (a perfect prediction)."""
    dest.mkdir()
    for f in sorted((ref / "labels").rglob("*.nii.gz")):
        shutil.copy(f, dest / f.name)
    return dest


# ---------------------------------------------------------------- 1. terminal-safe text


@pytest.mark.parametrize("text,shown", [
    (EVIL_NAME, "\\x1b[2J\\x1b[31mEVIL"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x7f\x9b\x00", "\\x7f\\x9b\\x00"),
    ("x\u202ey\u2066z\u2069", "x\\u202ey\\u2066z\\u2069"),
    ("SCD0000101 é 日本 [red]", "SCD0000101 é 日本 [red]"),  # printable text is kept as it is
], ids=["esc", "newline-cr-tab", "del-c1-nul", "bidi", "printable"])
def test_terminal_safe_shows_control_characters_as_escapes(text, shown):
    assert terminal_safe(text) == shown  # the visible forms are Python's repr escapes, written out here


def test_score_title_shows_the_submission_name_escaped(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    (pred / "submission.yaml").write_text('name: "\\e[2J\\e[31mEVIL"\nlabel: "\\e[31mRED\\e[0m \\e]0;pwned\\a"\n')
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--no-save"], columns=200)
    out = _output(res)
    assert res.exit_code == 0, terminal_safe(out)
    assert _clean(out), terminal_safe(out)
    assert "\\x1b[2J\\x1b[31mEVIL vs sunnybrook-sample" in out, terminal_safe(out)


def test_leaderboard_show_and_export_show_the_label_escaped(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    (pred / "submission.yaml").write_text('name: evil1\nlabel: "\\e[31mRED\\e[0m \\e]0;pwned\\a"\n')
    lb = tmp_path / "lb"
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--out", tmp_path / "res", "--leaderboard", lb])
    assert res.exit_code == 0, terminal_safe(_output(res))
    for columns in (80, 200):
        res = _cli(["leaderboard", "show", "-L", lb], columns=columns)
        out = _output(res)
        assert res.exit_code == 0, terminal_safe(out)
        assert _clean(out), terminal_safe(out)
        assert "evil1" in out and "pwned" in out, terminal_safe(out)
    for fmt in ("csv", "markdown"):
        res = _cli(["leaderboard", "show", "-L", lb, "--format", fmt])
        out = _output(res)
        assert _clean(out), fmt
        assert "\\x1b]0;pwned\\x07" in out, (fmt, terminal_safe(out))


def test_file_name_with_newline_cannot_forge_an_error_line(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    some = sorted(pred.glob("*.nii.gz"))[0]
    shutil.copy(some, pred / "evil\nerror: fake line.nii.gz")
    shutil.copy(some, pred / "\x1b[31mred.nii.gz")
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--no-save"])
    out = _output(res)
    assert res.exit_code == 2, terminal_safe(out)
    assert _clean(out), terminal_safe(out)
    lines = out.splitlines()
    assert not any(line.startswith("error: fake line") for line in lines), terminal_safe(out)
    forged = [line for line in lines if "fake line" in line]
    assert len(forged) == 1, terminal_safe(out)
    assert "evil\\nerror: fake line" in forged[0] and forged[0].startswith("error: ")
    assert any("\\x1b[31mred.nii.gz" in line for line in lines), terminal_safe(out)


# ---------------------------------------------------------------- 2. uncompressed NIfTI: size before reading


# bytes_read: conftest.py


def _small_mask():
    import numpy as np

    a = np.zeros((8, 8, 3), np.uint8)
    a[2:5, 2:4, 1] = 1  # 6 voxels of class 1
    return a


def _refused(path) -> str:
    from cardbench.datasets.formats import MaskReadError, read_mask

    with pytest.raises(MaskReadError) as ei:
        read_mask(path)
    return str(ei.value)


def test_huge_declared_shape_is_refused_after_the_header(tmp_path, bytes_read):
    import nibabel as nib
    import numpy as np

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8192, 8192, 14))
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_offset(352)
    p = tmp_path / "SCD0000101_frame08.nii"
    with open(p, "wb") as fh:
        fh.write(hdr.binaryblock + b"\x00" * 4)
        fh.truncate(352 + 8192 * 8192 * 14)  # sparse: 939 MB as the header declares, nothing on disk
    msg = _refused(p)
    assert f"header declares {8192 * 8192 * 14} bytes of image data (shape (8192, 8192, 14)), above the limit" in msg
    assert bytes_read["n"] <= 1024  # the first KiB, not the 939 MB


def test_nifti_with_trailing_bytes_is_refused_with_the_byte_counts(tmp_path, bytes_read):
    import nibabel as nib
    import numpy as np

    ok = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(_small_mask(), np.eye(4)), ok)
    assert ok.stat().st_size == 352 + 8 * 8 * 3  # header + 4 extension-flag bytes, then 192 voxels of uint8
    p = tmp_path / "SCD0000101_frame08.nii"
    with open(p, "wb") as fh:
        fh.write(ok.read_bytes())
        fh.truncate(544 + 100 * 1024 * 1024)  # 100 MiB of junk after the data (sparse)
    msg = _refused(p)
    assert f"{100 * 1024 * 1024} bytes after the image data: the file has {544 + 100 * 1024 * 1024} bytes, its " \
           "header declares 544 bytes (vox_offset 352 + shape (8, 8, 3) x 1 bytes per voxel)" in msg
    assert "nothing may be appended" in msg
    assert bytes_read["n"] <= 1024


def test_truncated_nifti_names_the_bytes_there(tmp_path):
    import nibabel as nib
    import numpy as np

    ok = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(_small_mask(), np.eye(4)), ok)
    p = tmp_path / "SCD0000101_frame08.nii"
    p.write_bytes(ok.read_bytes()[:-10])
    msg = _refused(p)
    assert "image data truncated: the file has 534 bytes, its header declares 544 bytes" in msg
    assert "182 of 192 bytes of image data are there" in msg


@pytest.mark.parametrize("kind", ["nifti1", "nifti2", "extension", "gzip"])
def test_valid_nifti_still_reads_as_nibabel_reads_it(tmp_path, kind):
    import nibabel as nib
    import numpy as np

    from cardbench.datasets.formats import read_mask

    a = _small_mask()
    img = (nib.Nifti2Image if kind == "nifti2" else nib.Nifti1Image)(a, np.diag([1.5, 1.5, 8.0, 1.0]))
    if kind == "extension":
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment extension " * 5))
    p = tmp_path / ("m.nii.gz" if kind == "gzip" else "m.nii")
    nib.save(img, p)
    if kind == "extension":
        import struct

        assert struct.unpack("<f", p.read_bytes()[108:112])[0] > 352  # vox_offset (NIfTI-1 byte 108) after the extension
    got = read_mask(p)
    np.testing.assert_array_equal(got.array, np.asanyarray(nib.load(p).dataobj))


# ---------------------------------------------------------------- 3. messages that follow the content


def test_png_named_nii_gz_is_told_to_be_named_png(tmp_path):
    import numpy as np
    from PIL import Image

    p = tmp_path / "SCD0000101_frame08.nii.gz"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(p, format="PNG")
    msg = _refused(p)
    assert "not gzip-compressed (the content is a PNG image)" in msg
    assert "name it .png" in msg and "rename it to .nii" not in msg and "gzip it" not in msg


def test_text_named_nii_gz_is_told_to_give_a_nifti(tmp_path):
    p = tmp_path / "SCD0000101_frame08.nii.gz"
    p.write_text("my mask is here\n" * 200)  # 3200 bytes: more than the first KiB
    msg = _refused(p)
    assert "(the content is text)" in msg and "give a NIfTI file" in msg
    assert "rename it to .nii" not in msg and "gzip it" not in msg


def test_uncompressed_nifti_named_nii_gz_is_still_told_to_rename_or_gzip(tmp_path):
    import nibabel as nib
    import numpy as np

    ok = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(_small_mask(), np.eye(4)), ok)
    p = tmp_path / "SCD0000101_frame08.nii.gz"
    shutil.copy(ok, p)
    assert "it is an uncompressed NIfTI: rename it to .nii, or gzip it" in _refused(p)


def _with_special_files(ref: Path, tmp_path: Path) -> Path:
    import os

    pred = _predictions(ref, tmp_path / "pred")
    (pred / "SCD0000101_frame08.nii.gz").unlink()
    os.mkfifo(pred / "SCD0000101_frame08.nii.gz")
    (pred / "SCD0000201_frame07.nii.gz").unlink()
    (pred / "SCD0000201_frame07.nii.gz").symlink_to("/dev/zero")
    return pred


@pytest.mark.parametrize("allow_missing", [False, True])
def test_fifo_and_link_to_dev_zero_are_not_regular_files_never_missing(sunnybrook_prepared, tmp_path, allow_missing):
    pred = _with_special_files(sunnybrook_prepared, tmp_path)
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--no-save",
                *(["--allow-missing"] if allow_missing else [])])
    out = _output(res)
    assert res.exit_code == 2, terminal_safe(out)
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert any("SCD0000101_frame08.nii.gz: not a regular file: a FIFO (named pipe)" in line for line in lines), out
    assert any("SCD0000201_frame07.nii.gz: not a regular file: a symbolic link to a character device: /dev/zero"
               in line for line in lines), out
    assert "missing prediction" not in out and "scored as misses" not in out
    assert len(lines) == 2, out


def test_reading_a_fifo_directly_is_refused_without_blocking(tmp_path):
    import os

    p = tmp_path / "SCD0000101_frame08.nii.gz"
    os.mkfifo(p)  # opening it for reading would wait for a writer forever
    assert "not a regular file: a FIFO (named pipe)" in _refused(p)


@pytest.mark.parametrize("name", ["SCD0000101_frame\u0661\u0669", "SCD0000101_frame\uff11\uff19",
                                  "SCD0000101_frame1\u0669"], ids=["arabic-indic", "fullwidth", "mixed"])
def test_non_ascii_digits_are_no_frame_number(name):
    from cardbench.datasets.naming import CaseKey
    from cardbench.datasets.formats.nifti import parse_volume_stem

    assert parse_volume_stem("SCD0000101_frame19") == CaseKey("SCD0000101", 19)
    key = parse_volume_stem(name)
    assert key.frame is None and key != CaseKey("SCD0000101", 19)


def test_arabic_indic_digits_file_is_not_matched_to_frame_19(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    (pred / "SCD0000101_frame19.nii.gz").rename(pred / "SCD0000101_frame\u0661\u0669.nii.gz")
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--no-save"])
    out = _output(res)
    assert res.exit_code == 2, out
    assert "missing prediction for case SCD0000101_frame19" in out
