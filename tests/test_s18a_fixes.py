"""Hostile-input gaps closed in session 18: a per_subject.csv (or per_case.csv) edited within range
used to rank the entries otherwise than the plain table; the dashboard's Submission page read an
entry's files unchecked; the volume-track pixel table was read whole and decompressed without a
bound. Each test fails on the code before its fix."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from helpers import copy_board, refusal_and_peak, warning_lines

B_7T = "cmr-7t__test__cardbench-v1"  # seven pre-filled entries, each with per_subject.csv


_board, _warnings = copy_board, warning_lines


def _rows(f: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"))))


def _write_rows(f: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write_text(buf.getvalue(), encoding="utf-8")


def _ranks(lb: Path, *extra: str):
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "--ranks", "--resamples", "20",
                                 "-f", "json", *extra])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    return r


def _dice_lv_all(summary: Path) -> dict:
    d = json.loads(summary.read_text(encoding="utf-8"))
    return next(r for r in d["results"] if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")


# ---- 1. per-subject values are checked against the entry's summary.json


def test_in_range_per_subject_edit_is_not_ranked(prefilled_dir, tmp_path):
    """Every Dice of plain's per_subject.csv set to 0.999 (in range, above every entry's Dice LV): the
    ranking would put plain first although the plain table ranks it below; the table no longer gives
    summary.json's mean (the mean of 0.999 over its 3 subjects is 0.999, summary.json holds about
    0.92), so plain is skipped with one warning naming the file."""
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_subject.csv"
    rows = _rows(f)
    im, ic = rows[0].index("mean"), rows[0].index("metric")
    for row in rows[1:]:
        if row[ic] == "dice":
            row[im] = "0.999"
    _write_rows(f, rows)
    rec = _dice_lv_all(f.parent / "summary.json")
    assert rec["n_subjects"] == 3 and rec["mean"] < 0.99
    r = _ranks(lb)
    assert r.exit_code == 0, r.output
    names = [e["entry"] for e in json.loads(r.stdout)["entries"]]
    assert "plain" not in names and len(names) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(f) in w[0] and "summary.json" in w[0] and "mean" in w[0], r.stderr


def test_swapped_subject_keeps_the_entry(prefilled_dir, tmp_path):
    """The check binds the ranked values to the shown figures; rows merely reordered (same values) are
    still the entry's table: no warning, all seven entries ranked."""
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_subject.csv"
    rows = _rows(f)
    _write_rows(f, [rows[0]] + rows[1:][::-1])
    r = _ranks(lb)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["entries"]) == 7 and not _warnings(r.stderr), r.stderr


def test_edited_per_case_is_not_ranked_by_phase(prefilled_dir, tmp_path):
    """--group ED ranks from per_case.csv (no per-subject table per phase): one ED Dice LV of plain
    raised from its value to 1.0 (in range) changes that subject's mean and so the ED mean of
    summary.json's phase/ED record: plain is skipped, named by per_case.csv."""
    from cardbench.benchmark.leaderboard import Leaderboard
    from cardbench.benchmark.ranking import subject_values

    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_case.csv"
    rows = _rows(f)
    head = rows[0]
    ip, ic, il, idc = head.index("phase"), head.index("class"), head.index("level"), head.index("dice")
    level = json.loads((lb / B_7T / "benchmark.json").read_text(encoding="utf-8"))["protocol"]["level"]
    row = next(x for x in rows[1:] if x[ip] == "ED" and x[ic] == "LV" and x[il] == level and float(x[idc]) < 0.99)
    row[idc] = "1.0"
    _write_rows(f, rows)
    board = Leaderboard(lb)
    values, _, _ = subject_values(board, B_7T, "dice_lv", group="ED")
    assert "plain" not in values.columns and len(values.columns) == 6
    assert str(f) in board.skipped[str(f.parent)]
    assert "(ED)" in board.skipped[str(f.parent)]
    values, _, _ = subject_values(Leaderboard(lb), B_7T, "dice_lv", group="all")  # per_subject.csv unchanged
    assert "plain" in values.columns


def test_older_summary_is_checked_by_its_mean(prefilled_dir, tmp_path):
    """An entry of an older format (summary.json records without median, std, n_subjects, n_values):
    checked by the figure it has (the mean); a sound table is ranked, an in-range edit still refused
    (one subject's Dice LV 0.999 moves the mean of 3 subjects)."""
    lb = _board(prefilled_dir, tmp_path)
    s = lb / B_7T / "entries" / "plain" / "summary.json"
    d = json.loads(s.read_text(encoding="utf-8"))
    for rec in d["results"]:
        for k in ("median", "std", "n_subjects", "n_values"):
            rec.pop(k, None)
    s.write_text(json.dumps(d), encoding="utf-8")
    r = _ranks(lb)
    assert r.exit_code == 0 and len(json.loads(r.stdout)["entries"]) == 7 and not _warnings(r.stderr), r.output
    f = s.parent / "per_subject.csv"
    rows = _rows(f)
    im, ic, icl = rows[0].index("mean"), rows[0].index("metric"), rows[0].index("class")
    row = next(x for x in rows[1:] if x[ic] == "dice" and x[icl] == "LV")
    row[im] = "0.999"
    _write_rows(f, rows)
    r = _ranks(lb)
    assert r.exit_code == 0, r.output
    assert "plain" not in [e["entry"] for e in json.loads(r.stdout)["entries"]]
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(f) in w[0] and "a mean of" in w[0], r.stderr


def _recs(mean, median, std, n_subjects, n_values):
    return [{"grouping": "all", "group": "all", "class": "LV", "metric": "dice", "mean": mean, "median": median,
             "std": std, "n_subjects": n_subjects, "n_values": n_values}]


def test_check_subject_means_by_hand():
    """Subject means 0.8, 0.9, 1.0 from 2, 1 and 1 values: under subject aggregation mean 0.9, median
    0.9, std (ddof 1) sqrt((0.01 + 0 + 0.01) / 2) = 0.1, n_values 4; pooled: (0.8*2 + 0.9 + 1.0) / 4
    = 0.875."""
    from cardbench.benchmark.results import ResultFolderError, check_subject_means

    m = pd.Series([0.8, 0.9, 1.0], index=["a", "b", "c"])
    n = pd.Series([2, 1, 1], index=m.index)
    kw = dict(cls="LV", metric="dice", where="t.csv")
    check_subject_means(m, n, _recs(0.9, 0.9, 0.1, 3, 4), "subject", **kw)
    check_subject_means(m, n, _recs(0.875, None, None, None, 4), "pooled", **kw)
    check_subject_means(m, n, _recs(0.9 + 1e-11, 0.9, 0.1, 3, 4), "subject", **kw)  # 10 significant digits
    for recs, agg, says in [
        (_recs(0.91, 0.9, 0.1, 3, 4), "subject", "mean of 0.9"),
        (_recs(0.9, 0.85, 0.1, 3, 4), "subject", "median of 0.9"),
        (_recs(0.9, 0.9, 0.2, 3, 4), "subject", "std of 0.1"),
        (_recs(0.9, 0.9, 0.1, 4, 4), "subject", "n_subjects of 3"),
        (_recs(0.9, 0.9, 0.1, 3, 5), "subject", "n_values of 4"),
        (_recs(0.9, None, None, None, 4), "pooled", "mean of 0.875"),
        ([], "subject", "no figure"),
    ]:
        with pytest.raises(ResultFolderError, match=says):
            check_subject_means(m, n, recs, agg, **kw)
    check_subject_means(pd.Series([float("nan")]), pd.Series([0]), [], "subject", **kw)  # no value, no figure


def test_compare_refuses_an_entry_edited_within_range(prefilled_dir, tmp_path):
    """`cardbench compare` of two leaderboard entries: plain's Dice LV per-subject means all set to
    0.999 no longer give its summary.json: exit 2, one line naming the file."""
    lb = _board(prefilled_dir, tmp_path)
    a, b = lb / B_7T / "entries" / "base", lb / B_7T / "entries" / "plain"
    f = b / "per_subject.csv"
    rows = _rows(f)
    im, ic, icl = rows[0].index("mean"), rows[0].index("metric"), rows[0].index("class")
    for row in rows[1:]:
        if row[ic] == "dice" and row[icl] == "LV":
            row[im] = "0.999"
    _write_rows(f, rows)
    r = CliRunner().invoke(app, ["compare", str(a), str(b)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert str(f) in lines[0] and "summary.json" in lines[0], lines[0]


# ---- 3. the volume-track pixel table is bounded on disk and after decompression

_TABLE = b"file\tlv_pixels\tmy_pixels\n1/1-frame001-slice001.png\t10\t5\n"


def _volumes_score(table: Path):
    r = CliRunner().invoke(app, ["volumes", "score", str(table)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    return r, lines


@pytest.mark.parametrize("kind", ["xz", "gz"])
def test_pixel_table_bomb_stops_at_the_limit(tmp_path, monkeypatch, kind):
    """8 MiB of zeros compressed (about 1 kB as .xz, 8 kB as .gz) against a limit of 1 MiB set by the
    environment: refused in one line naming the file, the limit and the variable; decompression stops
    at the limit, so Python never holds much more than 1 MiB of output (tracemalloc peak < 3 MiB,
    against the 8 MiB a whole decompression holds)."""
    import gzip
    import lzma

    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import VolumeTrackError, read_pixel_counts

    zeros = bytes(8 << 20)
    packed = lzma.compress(zeros, preset=0) if kind == "xz" else gzip.compress(zeros, compresslevel=1)
    assert len(packed) < 64 << 10
    f = tmp_path / f"bomb.tsv.{kind}"
    f.write_bytes(packed)
    monkeypatch.setenv("CARDBENCH_MAX_TABLE_BYTES", str(1 << 20))
    msg, peak = refusal_and_peak(lambda: read_pixel_counts(f), VolumeTrackError)
    assert str(f) in msg and "1048576 bytes" in msg and "CARDBENCH_MAX_TABLE_BYTES" in msg and "\n" not in msg
    assert peak < 3 << 20, peak
    r, lines = _volumes_score(f)
    assert r.exit_code == 2 and len(lines) == 1 and "CARDBENCH_MAX_TABLE_BYTES" in lines[0], r.output


def test_pixel_table_within_the_limit_reads_the_same(tmp_path, monkeypatch):
    """A table of 200 images (LV 10, MY 5 pixels each; 6,225 bytes) under a limit of exactly its size
    reads, plain, as .xz of two concatenated streams and as .gz of two members with zero padding (as
    lzma/gzip.decompress read them); one byte less is refused: the plain file by its size on disk,
    the compressed ones (under 1 kB) while decompressing."""
    import gzip
    import lzma

    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import VolumeTrackError, read_pixel_counts

    table = b"file\tlv_pixels\tmy_pixels\n" + b"".join(b"1/1-frame001-slice%03d.png\t10\t5\n" % i
                                                       for i in range(1, 201))
    assert len(table) == 25 + 200 * 31  # header 4+1+9+1+9+1; a row 25+1+2+1+1+1
    half = table.index(b"1/1-frame001-slice101")
    plain = tmp_path / "t.tsv"
    plain.write_bytes(table)
    xz = tmp_path / "t.tsv.xz"
    xz.write_bytes(lzma.compress(table[:half]) + lzma.compress(table[half:]))
    gz = tmp_path / "t.tsv.gz"
    gz.write_bytes(gzip.compress(table[:half]) + b"\0" * 3 + gzip.compress(table[half:]) + b"\0" * 4)
    assert xz.stat().st_size < 1024 and gz.stat().st_size < 1024
    monkeypatch.setenv("CARDBENCH_MAX_TABLE_BYTES", str(len(table)))
    for f in (plain, xz, gz):
        df = read_pixel_counts(f)
        assert df["slice"].tolist() == list(range(1, 201))
        assert set(df["series"]) == {"1"} and set(df["frame"]) == {1}
        assert set(df["lv_pixels"]) == {10} and set(df["my_pixels"]) == {5}
    monkeypatch.setenv("CARDBENCH_MAX_TABLE_BYTES", str(len(table) - 1))
    for f, says in ((plain, "bytes on disk"), (xz, "decompresses to"), (gz, "decompresses to")):
        with pytest.raises(VolumeTrackError, match=f"{says}.*CARDBENCH_MAX_TABLE_BYTES"):
            read_pixel_counts(f)


def test_pixel_table_too_large_on_disk_is_not_read(tmp_path):
    """A sparse file of 300 MiB (above the 256 MiB default) is refused by its stat, not read."""
    f = tmp_path / "big.tsv"
    with open(f, "wb") as fh:
        fh.write(_TABLE)
        fh.truncate(300 << 20)
    r, lines = _volumes_score(f)
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert str(f) in lines[0] and "314572800 bytes on disk" in lines[0] and str(256 << 20) in lines[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pixel_table_pipe_and_device_are_not_regular_files(tmp_path):
    """A named pipe (fed a valid table by a thread, so the unbounded reader would read it rather than
    block) and a link to /dev/null are refused by their stat before they are opened."""
    import threading

    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import VolumeTrackError, read_pixel_counts

    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)

    def feed():
        fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens; unblocked below if none does
        try:
            os.write(fd, _TABLE)
        finally:
            os.close(fd)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        with pytest.raises(VolumeTrackError, match="not a regular file: a FIFO"):
            read_pixel_counts(fifo)
    finally:
        if t.is_alive():  # nobody read: open the reading end so the writer ends
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            t.join(5)
            os.close(fd)
    link = tmp_path / "null.tsv"
    link.symlink_to(os.devnull)
    with pytest.raises(VolumeTrackError, match="not a regular file: a symbolic link to a character device"):
        read_pixel_counts(link)


# ---- 2. the dashboard reads an entry's files through the checked readers


def _set_first_dice(f: Path, value: str) -> None:
    rows = _rows(f)
    col = rows[0].index("dice") if "dice" in rows[0] else rows[0].index("mean")
    rows[1][col] = value
    _write_rows(f, rows)


def test_submission_page_names_a_bad_entry_file(prefilled_dir, tmp_path, monkeypatch):
    """A Dice LV of 5.0 written into plain's per_subject.csv (not read by the index, so plain is still
    listed): the Submission page shows one st.error naming the file and the value, no traceback, and
    stops (no figures of plain are drawn). One AppTest run of the page itself."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    lb = _board(prefilled_dir, tmp_path)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(lb))
    f = lb / B_7T / "entries" / "plain" / "per_subject.csv"
    _set_first_dice(f, "5.0")
    page = Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "views" / "submission.py"
    at = AppTest.from_file(str(page), default_timeout=60)
    at.query_params["benchmark"] = B_7T
    at.query_params["entry"] = "plain"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and str(f) in errors[0] and "outside [0, 1]" in errors[0], errors
    assert "\n" not in errors[0]
    assert not at.metric  # the page stopped before the figures


def _entry(prefilled_dir, tmp_path) -> Path:
    return _board(prefilled_dir, tmp_path) / B_7T / "entries" / "plain"


@pytest.mark.parametrize("damage, file, says", [
    ("clinical_big", "clinical.csv", "CARDBENCH_MAX_ENTRY_FILE_BYTES"),
    ("clinical_text", "clinical.csv", "where a finite number belongs"),
    ("clinical_inf", "clinical.csv", "where a finite number belongs"),
    ("aggregates_cut", "aggregates.csv", "ends mid-row"),
    ("per_subject_range", "per_subject.csv", "outside [0, 1]"),
    ("per_subject_edit", "per_subject.csv", "summary.json says"),
    ("summary_big", "summary.json", "CARDBENCH_MAX_ENTRY_FILE_BYTES"),
    ("yaml_laughs", "submission.yaml", "YAML aliases"),
])
def test_read_entry_checks_every_file(prefilled_dir, tmp_path, monkeypatch, damage, file, says):
    """What the dashboard's pages read of an entry (Leaderboard.entry: submission.yaml; read_entry: the
    tables) refuses each damaged file in one line naming it: a clinical table above the limit, with
    text or inf where numbers belong, aggregates cut mid-row, a per-subject Dice of 5.0 or one that no
    longer gives summary.json (0.0 for one subject of 3), an oversize summary.json, and a "billion
    laughs" submission.yaml (10 x 10^8 = 10^9 values from a few hundred bytes)."""
    from cardbench.benchmark.leaderboard import Leaderboard, LeaderboardError, read_entry

    e = _entry(prefilled_dir, tmp_path)
    f = e / file
    table = "subject,index,unit,ref,pred,diff,status\n26,LVEF,%,{ref},55.0,1.0,ok\n"
    if damage == "clinical_big":  # the limit at the largest other file: only the clinical table is above it
        cap = max(p.stat().st_size for p in e.iterdir())
        monkeypatch.setenv("CARDBENCH_MAX_ENTRY_FILE_BYTES", str(cap))
        f.write_text(table.format(ref="54.0") + "#" * cap + "\n", encoding="utf-8")
    elif damage == "clinical_text":
        f.write_text(table.format(ref="lots"), encoding="utf-8")
    elif damage == "clinical_inf":
        f.write_text(table.format(ref="inf"), encoding="utf-8")
    elif damage == "aggregates_cut":
        f.write_text(f.read_text(encoding="utf-8")[:-5], encoding="utf-8")
    elif damage == "per_subject_range":
        _set_first_dice(f, "5.0")
    elif damage == "per_subject_edit":
        _set_first_dice(f, "0.0")
    elif damage == "summary_big":
        with open(f, "r+b") as fh:
            fh.truncate(300 << 20)  # sparse: above the 256 MiB default
    elif damage == "yaml_laughs":
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises((LeaderboardError, FileNotFoundError)) as ei:
        Leaderboard(e.parents[2]).entry(B_7T, "plain")  # submission.yaml, as the dashboard reads an entry
        read_entry(e)
    msg = str(ei.value)
    assert str(f) in msg and says in msg and "\n" not in msg, msg


def test_read_entry_of_a_sound_entry_reads_its_tables(prefilled_dir, tmp_path):
    """The checks do not refuse a sound entry: plain's per_subject.csv (3 subjects x LV, MY x dice, iou
    = 12 rows) and aggregates read as written."""
    from cardbench.benchmark.leaderboard import read_entry

    e = _entry(prefilled_dir, tmp_path)
    res = read_entry(e)
    assert len(res.per_subject) == 12 and set(res.per_subject["metric"]) == {"dice", "iou"}
    assert len(res.aggregates) == len(pd.read_csv(e / "aggregates.csv"))


def test_per_case_value_out_of_range_leaves_the_entry_out(prefilled_dir, tmp_path):
    """A per-case Dice of 5.0 in plain's per_case.csv: the entry is skipped by `leaderboard show`
    (one warning naming the file and the row) instead of being shown and charted."""
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_case.csv"
    _set_first_dice(f, "5.0")
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "csv"])
    assert r.exit_code == 0, r.output
    names = [row["entry"] for row in csv.DictReader(io.StringIO(r.stdout))]
    assert "plain" not in names and len(names) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(f) in w[0] and "row 2" in w[0] and "outside [0, 1]" in w[0], r.stderr
