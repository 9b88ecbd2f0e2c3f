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

import json

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


def _link_outside(tmp):
    pred = _predictions(tmp)
    outside = tmp / "elsewhere.nii.gz"  # a file outside the submission (e.g. another user's data)
    (pred / "s1_frame01.nii.gz").rename(outside)
    (pred / "s1_frame01.nii.gz").symlink_to(outside)
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

    def fake(p="."):  # os.scandir also takes a file descriptor (tempfile's cleanup passes one)
        if isinstance(p, (str, bytes, os.PathLike)) and Path(os.fsdecode(p)).name == "sub":
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
        patch=_unreadable_folder),
    Row("300_junk_files", _junk, 2, "... and 250 more problems", max_lines=50),
    Row("symlink_outside_submission", _link_outside, 2, "symbolic link to a file outside the submission",
        max_lines=2),
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
    Row("leaderboard_windows_name_from_yaml",
        lambda t: _with_yaml("name: nul\n")(t) + ["--leaderboard", str(t / "lb")], 2,
        "reserved as a file name on Windows"),
    # errors that used to be tracebacks
    Row("disk_full_result", lambda t: _score(t, _predictions(t)), 1, "no space left on the disk",
        patch=_disk_full),
    Row("out_of_memory", lambda t: _score(t, _predictions(t)), 1, "out of memory", patch=_out_of_memory),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_refused_with_one_line(row: Row, tmp_path, monkeypatch):
    _try_row(row, tmp_path, monkeypatch)


def _try_row(row: Row, tmp_path, monkeypatch) -> None:
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


# ---------------------------------------------------------------------------------------------
# inputs that must work (not refusals): long names, markup in user text, umask, precision


def test_300_character_submission_name_without_out(tmp_path, monkeypatch):
    """A 300-character name in submission.yaml (no --out): the default result folder gets a short name
    (file systems allow 255 bytes per name) and the full name stays in summary.json."""
    import json

    pred = _predictions(tmp_path)
    name = "n" * 300
    (pred / "submission.yaml").write_text(f"name: {name}\n")
    ref = _reference(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["score", str(pred), "--reference", str(ref)])
    assert res.exit_code == 0, res.stderr
    (out,) = (tmp_path / "cardbench-results").iterdir()
    assert len(out.name) <= 255 and out.name.endswith("__cardbench-v1")
    assert json.loads((out / "summary.json").read_text())["submission"]["name"] == name


def test_submission_name_made_safe_for_the_leaderboard_still_works(tmp_path):
    """The early name check mirrors the entry name the leaderboard makes ("my unet" -> "my_unet")."""
    from cardbench.benchmark import leaderboard as L

    lb = tmp_path / "lb"
    lb.mkdir()
    (lb / L.MARKER).write_text('{"format": %d, "prefilled": {%s}}' % (
        L.FORMAT_VERSION, ", ".join(f'"{k}": {{}}' for k in L.PREFILL_SOURCES)))
    args = _with_yaml("name: my unet\n")(tmp_path) + ["--leaderboard", str(lb)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    assert list(lb.glob("*/entries/my_unet/summary.json"))


def test_rich_markup_in_user_text_is_printed_as_is(tmp_path):
    """`[/red]` in --out and in the submission name: printed literally, no MarkupError after writing."""
    pred = _predictions(tmp_path)
    (pred / "submission.yaml").write_text("name: 'evil [/red] [bold]name'\n")
    out = tmp_path / "res [/red]"
    res = CliRunner().invoke(app, ["score", str(pred), "--reference", str(_reference(tmp_path)), "--out", str(out)])
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert "evil [/red] [bold]name" in res.stdout
    assert "res [/red]" in res.stdout.replace("\n", "")
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_result_files_follow_the_umask(tmp_path, mask):
    """Result and leaderboard files are created like any other file (0666 / 0777 less the umask), so a
    leaderboard in a group folder is readable by colleagues (mkstemp/mkdtemp alone give 0600/0700)."""
    from cardbench.benchmark import score
    from cardbench.benchmark.leaderboard import add_entry

    res = score(_predictions(tmp_path), _reference(tmp_path), progress=False)
    old = os.umask(mask)
    try:
        out = res.write(tmp_path / "out")
        entry = add_entry(res, tmp_path / "lb", "mine", prefill=False)
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~mask
    assert ((out / "summary.json").stat().st_mode & 0o777) == 0o666 & ~mask
    assert (entry.path.stat().st_mode & 0o777) == 0o777 & ~mask
    for f in ("summary.json", "per_case.csv", "submission.yaml"):
        assert ((entry.path / f).stat().st_mode & 0o777) == 0o666 & ~mask, f
    idx = entry.path.parents[1] / "index.json"
    if idx.exists():
        assert (idx.stat().st_mode & 0o777) == 0o666 & ~mask


def test_float_mask_value_shown_at_full_precision(tmp_path):
    pred = _predictions(tmp_path)
    arr = _mask().astype(np.float32)
    arr[0, 0, 0] = 0.99999
    save_nifti(pred / "s0_frame01.nii.gz", arr, dtype=np.float32)
    res = CliRunner().invoke(app, _score(tmp_path, pred))
    assert res.exit_code == 2
    assert "0.99999" in res.stderr and "e.g. 1)" not in res.stderr


def test_partial_annotation_warns_naming_annotations_csv(tmp_path):
    """LV drawn in both frames of a subject, MY only in frame 1 (frame 2 has LV but no MY): a warning
    naming annotations.csv; declaring the frames there silences it."""
    full = _mask()
    lv_only = full.copy()
    lv_only[lv_only == 2] = 0
    for f, arr in ((1, full), (2, lv_only)):
        save_nifti(tmp_path / "ref" / "labels" / "s0" / f"s0_frame{f:02d}.nii.gz", arr)
        save_nifti(tmp_path / "pred" / f"s0_frame{f:02d}.nii.gz", arr)
    args = ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"), "--no-save", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "subject s0: MY is drawn in frame(s) [1] but absent from frame(s) [2]" in warn[0]
    assert str(tmp_path / "ref" / "annotations.csv") in warn[0]
    (tmp_path / "ref" / "annotations.csv").write_text("subject,frame,classes\ns0,1,LV MY\ns0,2,LV\n")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "partial" not in res.stderr, res.stderr


def test_annotations_csv_without_rows_for_most_volumes_warns(tmp_path):
    """annotations.csv lists 1 of 3 reference volumes: the 2 others are scored as not annotated, as
    documented, and a warning names annotations.csv, the count and the fix; listing all 3 silences it."""
    for f in (1, 2, 3):
        save_nifti(tmp_path / "ref" / "labels" / "s0" / f"s0_frame{f:02d}.nii.gz", _mask())
        save_nifti(tmp_path / "pred" / f"s0_frame{f:02d}.nii.gz", _mask())
    (tmp_path / "ref" / "annotations.csv").write_text("subject,frame,classes\ns0,1,LV MY\n")
    args = ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"), "--no-save", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:") and "no row for" in ln]
    assert len(warn) == 1 and "no row for 2 of 3 reference volume(s) (s0 frame 2, s0 frame 3)" in warn[0]
    assert str(tmp_path / "ref" / "annotations.csv") in warn[0] and "Fix:" in warn[0]
    summary = json.loads(res.stdout)
    vol = summary["counts"]["status"]["volume"]["LV"]
    assert vol.get("not_annotated") == 2  # the two unlisted volumes, as documented
    (tmp_path / "ref" / "annotations.csv").write_text("subject,frame,classes\ns0,1,LV MY\ns0,2,LV MY\ns0,3,\n")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "no row for" not in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------
# units behind the rows: a header that lies, errors that escaped a command, the write paths


def test_archive_entry_larger_than_its_header_is_stopped_while_copying(tmp_path):
    from cardbench.benchmark.submission import SubmissionError, _copy_limited
    from cardbench.limits import Limits

    src = io.BytesIO(b"x" * 5000)  # the header declared 100 bytes
    with pytest.raises(SubmissionError, match="more data than its header declares"):
        _copy_limited(src, tmp_path / "f", 100, [10_000], tmp_path / "a.zip", "f", Limits())
    with pytest.raises(SubmissionError, match="exceeds the limit"):
        _copy_limited(io.BytesIO(b"x" * 5000), tmp_path / "g", 5000, [1000], tmp_path / "a.zip", "g",
                      Limits(max_archive_bytes=1000))


@pytest.mark.parametrize("exc, code, fragment", [
    (RecursionError(), 2, "nested too deeply"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300), 2, "file name too long"),
    (OSError(errno.ENOSPC, "No space left on device", "lb/entry"), 1, "no space left on the disk"),
    (PermissionError(errno.EACCES, "Permission denied", "lb"), 1, "lb: permission denied"),
])
def test_errors_escaping_a_command_are_one_line(exc, code, fragment, tmp_path, monkeypatch):
    from cardbench.cli import leaderboard as cli_lb

    def boom(*a, **k):
        raise exc
    monkeypatch.setattr(cli_lb, "_open", boom)
    res = CliRunner().invoke(app, ["leaderboard", "show", str(tmp_path)])
    assert res.exit_code == code and not isinstance(res.exception, type(exc))
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error:")] and fragment in res.stderr
    assert "Traceback" not in res.stderr


def test_disk_full_while_adding_an_entry_keeps_nothing_half_written(tmp_path, monkeypatch):
    import pandas as pd

    from cardbench.benchmark import score

    res = score(_predictions(tmp_path), _reference(tmp_path), progress=False)
    from cardbench.benchmark.leaderboard import FORMAT_VERSION, MARKER, PREFILL_SOURCES

    lb = tmp_path / "lb"
    lb.mkdir()
    # every published source marked as done: no pre-fill runs, the disk fills while "mine" is written
    (lb / MARKER).write_text(json.dumps({"format": FORMAT_VERSION, "prefilled": {k: {} for k in PREFILL_SOURCES}}))

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    from cardbench.cli.leaderboard import add_to_leaderboard

    with pytest.raises(OSError) as ei:
        add_to_leaderboard(res, lb, "mine")
    where = [e.name for e in ei.traceback]
    assert "_write_entry" in where and "prefill" not in where, where  # while writing "mine", not a pre-fill
    left = [p for p in lb.rglob("*") if "mine" in p.name]
    assert left == []


def test_atomic_write_on_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch):
    from cardbench._util import atomic_write_text

    f = tmp_path / "index.json"
    f.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic_write_text(f, "new")
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["index.json"]


# ---------------------------------------------------------------------------------------------
# leaderboard store: a corrupt entry is skipped and named, the rest stays readable


def _corrupt(entry: Path, how: str) -> None:
    import pandas as pd

    if how == "summary_truncated":
        (entry / "summary.json").write_text((entry / "summary.json").read_text()[:100])
    elif how == "summary_not_object":
        (entry / "summary.json").write_text("[1, 2]")
    elif how == "per_case_empty":
        (entry / "per_case.csv").write_text("")
    elif how == "per_case_missing_columns":
        (entry / "per_case.csv").write_text("a,b\n1,2\n")
    elif how == "per_case_text_in_metric":
        d = pd.read_csv(entry / "per_case.csv")
        d["dice"] = d["dice"].astype(object)
        d.loc[0, "dice"] = "abc"
        d.to_csv(entry / "per_case.csv", index=False)


def _csv(text: str):
    import pandas as pd

    return pd.read_csv(io.StringIO(text), dtype=str)


CORRUPTIONS = ["summary_truncated", "summary_not_object", "per_case_empty", "per_case_missing_columns",
               "per_case_text_in_metric"]
B_PAPER = "cmr-7t__test__ankenbrand2021"


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_leaderboard_show_skips_and_names_a_corrupt_entry(how, prefilled_dir, tmp_path):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    _corrupt(lb / B_PAPER / "entries" / "base", how)
    res = CliRunner().invoke(app, ["leaderboard", "show", str(lb), "-b", B_PAPER, "-f", "csv"])
    assert res.exit_code == 0, res.stderr
    shown = set(_csv(res.stdout)["entry"])
    assert "base" not in shown and {"double_tl", "plain", "imagenet_tl"} <= shown  # the others stay
    assert f"skipped {lb / B_PAPER / 'entries' / 'base'}" in res.stderr
    assert "Traceback" not in res.stderr


def test_corrupt_benchmark_json_is_named(prefilled_dir, tmp_path):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    (lb / B_PAPER / "benchmark.json").write_text("{bad")
    res = CliRunner().invoke(app, ["leaderboard", "show", str(lb), "-f", "csv"])
    assert res.exit_code == 0, res.stderr
    assert f"{lb / B_PAPER / 'benchmark.json'}: corrupt" in res.stderr
    assert "cmr-7t__test__cardbench-v1" in res.stdout


def test_corrupt_prefill_marker_does_not_bring_back_removed_entries(prefilled_dir, tmp_path):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    r = CliRunner().invoke(app, ["leaderboard", "remove", "plain", str(lb), "-b", B_PAPER])
    assert r.exit_code == 0, r.stderr
    (lb / ".cardbench-leaderboard.json").write_text("{not json")
    res = CliRunner().invoke(app, ["leaderboard", "show", str(lb), "-b", B_PAPER, "-f", "csv"])
    assert res.exit_code == 0, res.stderr
    assert not (lb / B_PAPER / "entries" / "plain").exists()
    assert "plain" not in set(_csv(res.stdout)["entry"]) and "base" in set(_csv(res.stdout)["entry"])
    assert ".cardbench-leaderboard.json: corrupt" in res.stderr


# ---------------------------------------------------------------------------------------------
# dashboard: corrupt entries named on every page; the drill-down reads only allowed roots


def _app():
    pytest.importorskip("streamlit")
    pytest.importorskip("plotly")
    from streamlit.testing.v1 import AppTest

    from cardbench.benchmark import leaderboard as L

    return AppTest, str(Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "app.py")


def _page(page: str | None = None, **query):
    AppTest, path = _app()
    at = AppTest.from_file(path, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("page", [None, "submission", "case", "compare", "dataset"])
def test_every_dashboard_page_names_a_corrupt_entry(page, prefilled_dir, tmp_path, monkeypatch):
    _app()
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    _corrupt(lb / B_PAPER / "entries" / "base", "summary_truncated")
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(lb))
    at = _page(page, benchmark=B_PAPER)
    warn = "\n".join(str(w.value) for w in at.warning)
    assert f"skipped {lb / B_PAPER / 'entries' / 'base'}" in warn


def _crafted_board(tmp_path: Path) -> tuple[Path, str]:
    """A leaderboard with one NIfTI entry scored from tmp_path/ref and tmp_path/pred."""
    from cardbench.benchmark import score
    from cardbench.benchmark import leaderboard as L

    res = score(_predictions(tmp_path), _reference(tmp_path), progress=False)
    root = tmp_path / "lb"
    e = L.add_entry(res, root, "crafted", prefill=False)
    (root / L.MARKER).write_text('{"format": %d, "prefilled": {%s}}' % (
        L.FORMAT_VERSION, ", ".join(f'"{k}": {{}}' for k in L.PREFILL_SOURCES)))
    return root, e.benchmark


def test_case_drilldown_reads_only_allowed_roots(tmp_path, monkeypatch):
    """The entry's reference folder lies outside the allowed roots: the page shows the same words as for a
    folder that does not exist, and no picture; allowed with --allow-root, the pictures come."""
    import json

    from cardbench.dashboard.images import ALLOW_ENV

    _app()
    root, bench = _crafted_board(tmp_path)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    monkeypatch.delenv(ALLOW_ENV, raising=False)

    def info_and_charts(board: Path):
        monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(board))
        at = _page("case", benchmark=bench, entry="crafted", subject="s0")
        return "\n".join(str(i.value) for i in at.info), len(at.get("plotly_chart"))

    not_allowed = info_and_charts(root)
    # the same entry, but its recorded folders do not exist
    gone = tmp_path / "lb-gone"
    shutil.copytree(root, gone)
    entry = gone / bench / "entries" / "crafted"
    s = json.loads((entry / "summary.json").read_text())
    s["dataset"]["path"] = s["dataset"]["path"] + "-missing"
    (entry / "summary.json").write_text(json.dumps(s))
    missing = info_and_charts(gone)
    assert not_allowed[1] == 0 and missing[1] == 0
    assert "is not on this machine" in not_allowed[0]
    assert not_allowed[0] == missing[0].replace("-missing", "")
    # the operator allows the folder: the drill-down shows the case
    monkeypatch.setenv(ALLOW_ENV, str(tmp_path))
    allowed = _page("case", benchmark=bench, entry="crafted", subject="s0")
    assert allowed.get("plotly_chart")


@pytest.mark.parametrize("ref_file", ["../ref/labels/s0/s0_frame01.nii.gz", "{ref}/labels/s0/s0_frame01.nii.gz"])
def test_case_drilldown_refuses_dotdot_and_absolute_file_names(ref_file, tmp_path, monkeypatch):
    """A per-case table whose ref_file climbs out with '..' or is absolute (both point at a real file in an
    allowed root): refused with the words used for a missing file."""
    import pandas as pd

    from cardbench.dashboard.images import ALLOW_ENV

    _app()
    root, bench = _crafted_board(tmp_path)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    monkeypatch.setenv(ALLOW_ENV, str(tmp_path))
    pc = root / bench / "entries" / "crafted" / "per_case.csv"
    d = pd.read_csv(pc, dtype=str)
    name = ref_file.format(ref=tmp_path / "ref")
    d["ref_file"] = name
    d.to_csv(pc, index=False)
    at = _page("case", benchmark=bench, entry="crafted", subject="s0")
    assert f"Reference labels {name} not found" in "\n".join(str(i.value) for i in at.info)
    assert not at.get("plotly_chart")


def test_zz_tally(tmp_path, monkeypatch):
    """Printed last (pytest -s shows it): every row tried was refused with one line. Under pytest-xdist
    the rows may have run in another worker process, whose tally this one cannot see: then they are
    tried here."""
    if TALLY["tried"] == 0:
        for row in ROWS:
            (tmp_path / row.id).mkdir()
            with monkeypatch.context() as m:
                try:
                    _try_row(row, tmp_path / row.id, m)
                except AssertionError:
                    pass  # counted in TALLY; the assertions below report it
    line = (f"{TALLY['tried']} tried, {TALLY['refused']} refused with one line, {TALLY['tracebacks']} tracebacks, "
            f"{TALLY['silent']} scored silently")
    print("\n" + line)
    assert TALLY["tried"] and TALLY["refused"] == TALLY["tried"], line
    assert TALLY["tracebacks"] == 0 and TALLY["silent"] == 0, line


@pytest.mark.parametrize("name", ["con", "CON.txt", "nul.", "LPT1.tar.gz"])
def test_the_name_suggested_for_a_windows_reserved_name_is_valid(name):
    """The fix a refusal suggests must itself be accepted (it once suggested CON.txt_1, refused again)."""
    import re as _re

    from cardbench.benchmark.leaderboard import LeaderboardError, check_name

    with pytest.raises(LeaderboardError) as e:
        check_name(name)
    suggested = _re.search(r"e\.g\. '([^']+)'", str(e.value)).group(1)
    assert check_name(suggested) == suggested and suggested != name


@pytest.mark.parametrize("text", ["name: [unclosed\nversion: 1\n", "- a list\n- not a card\n"])
def test_malformed_reference_card_is_one_line(tmp_path, text):
    """A reference's card.yaml that is not valid YAML, or not a mapping: one line naming the file, exit 2."""
    save_nifti(tmp_path / "ref" / "labels" / "s0" / "s0_frame01.nii.gz", _mask())
    save_nifti(tmp_path / "pred" / "s0_frame01.nii.gz", _mask())
    (tmp_path / "ref" / "card.yaml").write_text(text)
    res = CliRunner().invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"),
                                   "--no-save"])
    assert res.exit_code == 2, res.output
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "card.yaml" in err[0] and "Traceback" not in res.stderr, res.stderr
