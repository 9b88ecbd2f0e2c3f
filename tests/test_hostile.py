"""Hostile and malformed input, table-driven: one row per attack.

Each row builds its input in ``tmp_path``, runs one ``cardbench`` command in-process and checks: the
expected exit code, a fragment of the expected one-line message, no traceback, and nothing written
(the files under ``tmp_path``, the temporary folder included, are the same before and after). The
last test prints the tally "N tried, N refused with one line, 0 tracebacks, 0 scored silently"
(visible with ``pytest -s``).

Expected values come from the attack itself (a count of 2^70 is not a pixel count; 20,000 nested
brackets are deeper than 20), never from cardbench's output.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from helpers import save_nifti

EMBEDDED_7T = (Path(__file__).resolve().parents[1] / "src" / "cardbench" / "datasets" / "data" / "cmr-seg-tl"
               / "analysis" / "7T" / "confusion_tables" / "confusion_WS_base.tsv.gz")

TALLY = {"tried": 0, "refused": 0, "tracebacks": 0, "silent": 0}


# ---------------------------------------------------------------------------------------------
# inputs

def _mask() -> np.ndarray:
    arr = np.zeros((6, 6, 2), np.uint8)
    arr[1:3, 1:3, :] = 1
    arr[3, 1:3, :] = 2
    return arr


def _reference(tmp: Path) -> Path:
    for i in range(2):
        save_nifti(tmp / "ref" / "labels" / f"s{i}" / f"s{i}_frame01.nii.gz", _mask())
    return tmp / "ref"


def _predictions(tmp: Path) -> Path:
    for i in range(2):
        save_nifti(tmp / "pred" / f"s{i}_frame01.nii.gz", _mask())
    return tmp / "pred"


def _score(tmp: Path, predictions, *extra) -> list[str]:
    return ["score", str(predictions), "--reference", str(_reference(tmp)), "--out", str(tmp / "out"), *extra]


def _zip(tmp: Path, extra: Callable[[zipfile.ZipFile], None] | None = None, name: str = "preds.zip") -> Path:
    pred = _predictions(tmp)
    z = tmp / name
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(pred.iterdir()):
            zf.write(f, f.name)
        if extra:
            extra(zf)
    shutil.rmtree(pred)
    return z


def _with_yaml(text: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        pred = _predictions(tmp)
        (pred / "submission.yaml").write_text(text, encoding="utf-8")
        return _score(tmp, pred)
    return build


def _table(tmp: Path, change: Callable[[list[list[str]]], list[list[str]]]) -> list[str]:
    """The seed's published 7T confusion table (embedded copy) with ``change`` applied to its rows."""
    import gzip

    lines = [ln.split("\t") for ln in gzip.decompress(EMBEDDED_7T.read_bytes()).decode().splitlines()]
    rows = change(lines)
    f = tmp / "confusion_WS_base.tsv"
    f.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return ["score", str(f), "--out", str(tmp / "out")]


def _set_count(value: str, row: int = 5, column: str = "lv_lv"):
    def change(lines):
        i = lines[0].index(column)
        lines[row][i] = value
        return lines
    return lambda tmp: _table(tmp, change)


def _annotations(text: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        args = _score(tmp, _predictions(tmp))
        (tmp / "ref" / "annotations.csv").write_text(text)
        return args
    return build


# ---------------------------------------------------------------------------------------------
# attacks


def _zip_total(tmp):
    return _score(tmp, _zip(tmp, lambda zf: zf.writestr("padding.bin", b"\0" * 300_000)))


def _zip_entries(tmp):
    return _score(tmp, _zip(tmp, lambda zf: [zf.writestr(f"notes{i}.txt", "x") for i in range(5)]))


def _zip_bzip2_bomb(tmp):
    def extra(zf):
        zf.writestr(zipfile.ZipInfo("padding.bin"), b"\0" * 4_000_000, compress_type=zipfile.ZIP_BZIP2)
    return _score(tmp, _zip(tmp, extra))


def _zip_duplicate(tmp):
    other = io.BytesIO()
    wrong = np.zeros((6, 6, 2), np.uint8)  # an empty prediction under the same name as a good one
    save_nifti(tmp / "w" / "s1_frame01.nii.gz", wrong)
    other = (tmp / "w" / "s1_frame01.nii.gz").read_bytes()
    shutil.rmtree(tmp / "w")

    def extra(zf):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns "Duplicate name" and writes it anyway
            zf.writestr("s1_frame01.nii.gz", other)
    return _score(tmp, _zip(tmp, extra))


def _zip_inner_path(tmp):
    return _score(tmp, _zip(tmp, lambda zf: zf.writestr("inner/not-a-case.png", b"\x89PNG\r\n\x1a\n")))


def _tgz_total(tmp):
    pred = _predictions(tmp)
    (pred / "padding.bin").write_bytes(b"\0" * 300_000)
    t = tmp / "preds.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        for f in sorted(pred.iterdir()):
            tf.add(f, f.name)
    shutil.rmtree(pred)
    return _score(tmp, t)


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "name: bomb\nnotes:\n" + "\n".join("  " + ln for ln in lines) + "\n"


def _junk(tmp):
    pred = _predictions(tmp)
    for i in range(300):
        (pred / f"junk{i:03d}.nii.gz").write_bytes(b"")
    return _score(tmp, pred)


def _unreadable_yaml(tmp, monkeypatch):
    real = Path.open

    def fake(self, *a, **k):
        if self.name == "submission.yaml":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "open", fake)


def _unreadable_folder_build(tmp):
    pred = tmp / "pred"
    for i in range(2):
        save_nifti(pred / "sub" / f"s{i}_frame01.nii.gz", _mask())
    return _score(tmp, pred)


def _unreadable_folder(tmp, monkeypatch):
    real = os.scandir

    def fake(p="."):
        if Path(os.fsdecode(p)).name == "sub":
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(p))
        return real(p)
    monkeypatch.setattr(os, "scandir", fake)


def _disk_full(tmp, monkeypatch):
    import pandas as pd

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_csv", full)


def _out_of_memory(tmp, monkeypatch):
    from cardbench.benchmark import scoring

    def boom(*a, **k):
        raise MemoryError()
    monkeypatch.setattr(scoring, "read_mask", boom)


@dataclass
class Row:
    id: str
    build: Callable[[Path], list[str]]
    code: int
    fragment: str
    env: dict = field(default_factory=dict)
    patch: Callable | None = None
    max_lines: int = 1  # error lines allowed ("one line"; a list of problems may have more)


ROWS = [
    # archives: limits from the headers, before anything is extracted
    Row("zip_uncompressed_size", _zip_total, 2, "exceeds the limit of 100000 bytes",
        env={"CARDBENCH_MAX_ARCHIVE_BYTES": "100000"}),
    Row("zip_entry_count", _zip_entries, 2, "7 entries exceed the limit of 4",
        env={"CARDBENCH_MAX_ARCHIVE_ENTRIES": "4"}),
    Row("zip_bzip2_ratio_bomb", _zip_bzip2_bomb, 2, "a compression bomb"),
    Row("zip_duplicate_entry", _zip_duplicate, 2, "two entries named 's1_frame01.nii.gz'"),
    Row("tgz_uncompressed_size", _tgz_total, 2, "exceeds the limit of 100000 bytes",
        env={"CARDBENCH_MAX_ARCHIVE_BYTES": "100000"}),
    Row("zip_paths_named_as_given", _zip_inner_path, 2, "preds.zip:inner/not-a-case.png"),
    Row("limit_env_not_a_number", lambda t: _score(t, _zip(t)), 2, "CARDBENCH_MAX_ARCHIVE_BYTES='lots'",
        env={"CARDBENCH_MAX_ARCHIVE_BYTES": "lots"}),
    # submission.yaml
    Row("yaml_alias_bomb", _with_yaml(_alias_bomb()), 2, "after expanding YAML aliases"),
    Row("yaml_20000_brackets", _with_yaml("name: deep\nnotes: " + "[" * 20000 + "]" * 20000 + "\n"), 2,
        "nested deeper than 20 levels"),
    Row("yaml_depth_25", _with_yaml("name: deep\nnotes: " + "[" * 25 + "1" + "]" * 25 + "\n"), 2,
        "nested deeper than 20 levels"),
    Row("yaml_too_large", _with_yaml("name: big\n" + "# padding\n" * 8000), 2, "exceed the limit of 65536"),
    Row("yaml_unreadable", _with_yaml("name: secret\n"), 2, "submission.yaml: cannot be read (permission denied)",
        patch=_unreadable_yaml),
    # folders and report length
    Row("unreadable_subfolder", _unreadable_folder_build, 2, "folder cannot be read (permission denied)",
        patch=_unreadable_folder, max_lines=3),
    Row("300_junk_files", _junk, 2, "... and 250 more problems", max_lines=50),
    # confusion tables (the seed's real table, one row corrupted)
    Row("count_2_pow_70", _set_count(str(2**70)), 2, f"row 6: column lv_lv holds '{2**70}', not a pixel count"),
    Row("count_1e300", _set_count("1e300"), 2, "row 6: column lv_lv holds '1e300', not a pixel count"),
    Row("count_negative", _set_count("-3", column="my_my"), 2, "row 6: column my_my holds '-3', not a pixel count"),
    Row("count_fraction", _set_count("2.5", column="bg_lv"), 2, "row 6: column bg_lv holds '2.5', not a pixel count"),
    Row("table_header_only", lambda t: _table(t, lambda rows: rows[:1]), 2, "has a header but no rows"),
    Row("table_no_count_columns", lambda t: _table(t, lambda rows: [[r[i] for i in range(5)] for r in rows]), 2,
        "missing columns: ['bg_lv', 'lv_bg', 'lv_lv'"),
    # annotations.csv declarations that match no reference mask
    Row("annotations_one_based_frames", _annotations("subject,frame,classes\ns0,2,LV MY\ns1,2,LV MY\n"), 2,
        "2 row(s) match no reference mask: row 2 (subject s0, frame 2)"),
    Row("annotations_blank_frame", _annotations("subject,frame,classes\ns0,,LV MY\ns1,1,LV MY\n"), 2,
        "1 row(s) match no reference mask: row 2 (subject s0, frame blank)"),
    Row("annotations_frame_not_a_number", _annotations("subject,frame,classes\ns0,ED,LV\n"), 2,
        "frame 'ED' is not a frame number"),
    # outputs
    Row("out_inside_predictions", lambda t: _score(t, _predictions(t))[:-2] + ["--out", str(t / "pred" / "res")], 2,
        "inside the predictions folder"),
    Row("leaderboard_bad_name", lambda t: _score(t, _predictions(t), "--leaderboard", str(t / "lb"),
                                                 "--name", "my entry!"), 2, "--name: invalid entry name"),
    Row("leaderboard_windows_name", lambda t: _score(t, _predictions(t), "--leaderboard", str(t / "lb"),
                                                     "--name", "con"), 2, "reserved as a file name on Windows"),
    # errors that used to be tracebacks
    Row("disk_full_result", lambda t: _score(t, _predictions(t)), 1, "no space left on the disk",
        patch=_disk_full),
    Row("out_of_memory", lambda t: _score(t, _predictions(t)), 1, "out of memory", patch=_out_of_memory),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_refused_with_one_line(row: Row, tmp_path, monkeypatch):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))  # archives are extracted here: must be left empty
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(tmp_path / "default-leaderboard"))
    for k, v in row.env.items():
        monkeypatch.setenv(k, v)
    args = row.build(tmp_path)
    before = _snapshot(tmp_path)
    if row.patch is not None:
        row.patch(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, args)
    monkeypatch.undo()
    after = _snapshot(tmp_path)
    traceback = (res.exception is not None and not isinstance(res.exception, SystemExit)) or \
        "Traceback" in res.output or "Traceback" in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    TALLY["tried"] += 1
    TALLY["tracebacks"] += int(traceback)
    TALLY["silent"] += int(res.exit_code == 0)
    ok = (res.exit_code == row.code and not traceback and 1 <= len(errors) <= row.max_lines
          and row.fragment in res.stderr and after == before)
    TALLY["refused"] += int(ok)
    assert not traceback, res.exception
    assert res.exit_code == row.code, res.stderr
    assert row.fragment in res.stderr, res.stderr
    assert 1 <= len(errors) <= row.max_lines, res.stderr
    assert after == before, sorted(after ^ before)
    assert "cardbench-sub-" not in res.stderr  # never a path into the deleted extraction folder


def test_zz_tally():
    """Printed last (pytest -s shows it): every row tried was refused with one line."""
    line = (f"{TALLY['tried']} tried, {TALLY['refused']} refused with one line, {TALLY['tracebacks']} tracebacks, "
            f"{TALLY['silent']} scored silently")
    print("\n" + line)
    assert TALLY["tried"] and TALLY["refused"] == TALLY["tried"], line
    assert TALLY["tracebacks"] == 0 and TALLY["silent"] == 0, line
