"""Hostile mask files, table-driven: each row is one input built in tmp_path that `cardbench score`
must refuse with exit 2 and ONE error line per bad file containing a fragment, writing nothing and printing no
traceback (issue classes: formats are what their bytes say, reader-side limits, geometry on finite,
consistent headers).

The last test prints "N tried, N refused with one line, 0 tracebacks, 0 scored silently".
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cardbench.cli import app
from helpers import affine, save_nifti, save_png

runner = CliRunner()
TALLY = {"tried": 0, "refused_one_line": 0, "tracebacks": 0, "scored_silently": 0}


def _mask(shape=(6, 6, 2)) -> np.ndarray:
    arr = np.zeros(shape, np.uint8)
    arr[1:3, 1:3, :] = 1
    arr[3, 1:3, :] = 2
    return arr


def _nifti_ref(tmp: Path, n: int = 3, aff=None) -> np.ndarray:
    arr = _mask()
    for i in range(n):
        save_nifti(tmp / "ref" / "labels" / f"s{i}" / f"s{i}_frame01.nii.gz", arr, aff)
    return arr


def _nifti_pred(tmp: Path, n: int = 3, aff=None, arr=None) -> None:
    arr = _mask() if arr is None else arr
    for i in range(n):
        save_nifti(tmp / "pred" / f"s{i}_frame01.nii.gz", arr, aff)


def _png_pair(tmp: Path) -> np.ndarray:
    arr = np.zeros((16, 16), np.uint8)
    arr[4:10, 4:10] = 1
    arr[4:10, 10:12] = 2
    for d in ("ref", "pred"):
        for s in (1, 2):
            save_png(tmp / d / f"v1_slice{s:03d}_frame001-mask.png", arr)
    return arr


def _patched_nii(path: Path, arr: np.ndarray, aff, patches: dict[int, tuple[str, tuple]], gz: bool = True) -> Path:
    """Write ``arr`` with ``aff`` as NIfTI-1, then overwrite header fields at byte offsets
    (NIfTI-1 header layout, nifti1.h: pixdim at 76, qform_code 252, sform_code 254, srow_x 280)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = bytearray(nib.Nifti1Image(arr, aff).to_bytes())
    for off, (fmt, vals) in patches.items():
        struct.pack_into("<" + fmt, raw, off, *vals)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


def _gz_header_only(path: Path, shape, dtype=np.uint8) -> Path:
    """A small .nii.gz whose header declares ``shape`` but that holds no data (a 'declared bomb')."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_sform(affine(), code=2)
    hdr.set_qform(affine(), code=0)
    hdr["vox_offset"] = 352
    hdr["pixdim"][1:4] = (1.25, 1.25, 8.0)
    head = hdr.binaryblock + b"\x00" * 4
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(head + b"\x00" * 4096))
    return path


# ---- the rows: (id, build(tmp) -> extra CLI args, expected fragment) --------------------------------

def jpeg_as_png(tmp):
    arr = _png_pair(tmp)
    p = tmp / "pred" / "v1_slice002_frame001-mask.png"
    Image.fromarray(arr).save(p, format="JPEG", quality=100)


def nifti_without_magic(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    p = tmp / "pred" / "s1_frame01.nii"
    (tmp / "pred" / "s1_frame01.nii.gz").unlink()
    p.write_bytes(b"\x5c\x01\x00\x00" + os.urandom(600))


def nrrd_that_is_nifti(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    src = tmp / "pred" / "s1_frame01.nii.gz"
    src.rename(tmp / "pred" / "s1_frame01.nrrd")


def annex_pointer_prediction(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    (tmp / "pred" / "s1_frame01.nii.gz").write_text(
        "/annex/objects/SHA256E-s2123--6f1ed002ab5595859014ebf0951522d9ce4a1bc77b8f1a1ab1ba4b5e6a4f1f2c.nii.gz\n")


def annex_link_prediction(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    p = tmp / "pred" / "s1_frame01.nii.gz"
    p.unlink()
    p.symlink_to("../.git/annex/objects/Pk/3Q/SHA256E-s2123--6f1e.nii.gz/SHA256E-s2123--6f1e.nii.gz")


def annex_link_reference(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    p = tmp / "ref" / "labels" / "s2" / "s2_frame01.nii.gz"
    p.unlink()
    p.symlink_to("../../.git/annex/objects/Pk/3Q/SHA256E-s2123--6f1e.nii.gz/SHA256E-s2123--6f1e.nii.gz")


def annex_pointer_reference(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    (tmp / "ref" / "labels" / "s0" / "s0_frame01.nii.gz").write_text(
        "/annex/objects/SHA256E-s2123--6f1ed002ab5595859014ebf0951522d9ce4a1bc77b8f1a1ab1ba4b5e6a4f1f2c.nii.gz\n")


def empty_prediction(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    (tmp / "pred" / "s1_frame01.nii.gz").write_bytes(b"")


def empty_png(tmp):
    _png_pair(tmp)
    (tmp / "pred" / "v1_slice001_frame001-mask.png").write_bytes(b"")


def prediction_declares_1gib(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    _gz_header_only(tmp / "pred" / "s1_frame01.nii.gz", (1024, 1024, 1024))


def reference_declares_1gib(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    _gz_header_only(tmp / "ref" / "labels" / "s1" / "s1_frame01.nii.gz", (1024, 1024, 1024))


def gzip_expands_beyond_header(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    raw = nib.Nifti1Image(_mask(), affine()).to_bytes()
    co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = co.compress(raw) + b"".join(co.compress(b"\x00" * (1 << 20)) for _ in range(64)) + co.flush()
    (tmp / "pred" / "s1_frame01.nii.gz").write_bytes(body)  # ~64 kB that expands to 64 MiB


def nrrd_gzip_expands_beyond_header(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    aff = affine()
    head = ("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 6 6 2\nencoding: gzip\nspace: right-anterior-superior\n"
            f"space directions: ({aff[0, 0]},0,0) (0,{aff[1, 1]},0) (0,0,{aff[2, 2]})\n"
            f"space origin: ({aff[0, 3]},{aff[1, 3]},{aff[2, 3]})\n\n").encode()
    (tmp / "pred" / "s1_frame01.nii.gz").unlink()
    (tmp / "pred" / "s1_frame01.nrrd").write_bytes(head + gzip.compress(b"\x00" * (64 << 20)))


def nifti_huge_vox_offset(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    raw = bytearray(nib.Nifti1Image(_mask(), affine()).to_bytes())
    struct.pack_into("<f", raw, 108, float(1 << 30))  # vox_offset: data 1 GiB after the header
    (tmp / "pred" / "s1_frame01.nii.gz").write_bytes(gzip.compress(bytes(raw)))


def png_declares_100000_squared(tmp):
    _png_pair(tmp)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    idat = zlib.compress(b"\x00" * 100_001 * 4)
    (tmp / "pred" / "v1_slice001_frame001-mask.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def nan_translation(tmp):
    _nifti_ref(tmp)
    _nifti_pred(tmp)
    # srow_x[3] (x translation of the sform, sform_code 2) = NaN
    _patched_nii(tmp / "pred" / "s1_frame01.nii.gz", _mask(), affine(), {280 + 12: ("f", (float("nan"),))})


def stale_pixdim(tmp):
    # a 1 x 2 x 10 mm sform next to a stale pixdim of 1 x 1 x 1, in the reference and the prediction
    aff = np.diag([1.0, 2.0, 10.0, 1.0])
    for i in range(1):
        _patched_nii(tmp / "ref" / "labels" / f"s{i}" / f"s{i}_frame01.nii.gz", _mask(), aff,
                     {76 + 4: ("fff", (1.0, 1.0, 1.0))})
        _patched_nii(tmp / "pred" / f"s{i}_frame01.nii.gz", _mask(), aff, {76 + 4: ("fff", (1.0, 1.0, 1.0))})


ROWS = [
    ("jpeg_as_png", jpeg_as_png, "the content is a JPEG image"),
    ("nifti_without_magic", nifti_without_magic, "no NIfTI magic"),
    ("nrrd_that_is_gzip_nifti", nrrd_that_is_nifti, "no NRRD000x magic"),
    ("annex_pointer_prediction", annex_pointer_prediction, "content not retrieved"),
    ("annex_link_prediction", annex_link_prediction, "content not retrieved"),
    ("annex_link_reference", annex_link_reference, "content not retrieved"),
    ("annex_pointer_reference", annex_pointer_reference, "datalad get"),
    ("empty_prediction", empty_prediction, "empty file (0 bytes)"),
    ("empty_png", empty_png, "empty file (0 bytes)"),
    ("prediction_declares_1gib", prediction_declares_1gib, "header declares shape (1024, 1024, 1024)"),
    ("reference_declares_1gib", reference_declares_1gib, "above the limit of"),
    ("gzip_expands_beyond_header", gzip_expands_beyond_header, "decompresses to more than"),
    ("nrrd_gzip_expands_beyond_header", nrrd_gzip_expands_beyond_header, "decompresses to more than"),
    ("nifti_huge_vox_offset", nifti_huge_vox_offset, "(vox_offset)"),
    ("png_declares_100000_squared", png_declares_100000_squared, "100000 x 100000"),
    ("nan_translation", nan_translation, "NaN or infinite"),
    ("stale_pixdim", stale_pixdim, "pixdim spacing (1.0, 1.0, 1.0) mm disagrees with the sform"),
]
#: rows with more than one bad file: one line per bad file (here the reference's and the prediction's)
LINES = {"stale_pixdim": 2}


@pytest.mark.parametrize("name,build,fragment", ROWS, ids=[r[0] for r in ROWS])
def test_hostile_input_refused(tmp_path, name, build, fragment):
    build(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"),
                              "--out", str(out)])
    TALLY["tried"] += 1
    stderr = res.stderr
    tb = "Traceback" in stderr or (res.exception is not None and not isinstance(res.exception, SystemExit))
    TALLY["tracebacks"] += int(tb)
    TALLY["scored_silently"] += int(res.exit_code == 0)
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    n_lines = LINES.get(name, 1)
    ok = res.exit_code == 2 and len(errors) == n_lines and all(fragment in e for e in errors) and not tb
    TALLY["refused_one_line"] += int(ok)
    assert not tb, stderr
    assert res.exit_code == 2, (res.exit_code, res.stdout, stderr)
    assert len(errors) == n_lines, stderr
    assert all(fragment in e and "Fix:" in e for e in errors), errors
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_zz_hostile_summary(capsys):
    """Printed at the end of the module (run with -s to see it)."""
    line = (f"{TALLY['tried']} tried, {TALLY['refused_one_line']} refused with one line, "
            f"{TALLY['tracebacks']} tracebacks, {TALLY['scored_silently']} scored silently")
    with capsys.disabled():
        print("\n" + line)
    if TALLY["tried"]:
        assert TALLY["refused_one_line"] == TALLY["tried"] and not TALLY["tracebacks"] and not TALLY["scored_silently"]
