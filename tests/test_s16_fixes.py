"""Small defects a fresh-user trial found (session 16): each test fails on the code before its fix."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardbench.cli import app

B_KAGGLE = "kaggle-dsb-manual-masks__all__cardbench-v1"  # one entry: ukbb_cardiac-labels
B_7T = "cmr-7t__test__cardbench-v1"


def _board(prefilled_dir, tmp_path) -> Path:
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    return lb


def _corrupt_dice(entry: Path, value: str) -> Path:
    """Edit the first Dice aggregate of an entry's summary.json to ``value`` (JSON text)."""
    f = entry / "summary.json"
    d = json.loads(f.read_text(encoding="utf-8"))
    next(r for r in d["results"] if r["metric"] == "dice")["mean"] = "@@V@@"
    f.write_text(json.dumps(d).replace('"@@V@@"', value), encoding="utf-8")
    return f


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning:")]


# ---- 1. a corrupt entry with a filtered show and with export


def test_filtered_show_skips_a_corrupt_entry_with_its_warning(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    bad = _corrupt_dice(lb / B_7T / "entries" / "plain", "1.5")
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "json"])
    assert r.exit_code == 0, r.output
    names = [e["entry"] for e in json.loads(r.stdout)["entries"]]
    assert "plain" not in names and "base" in names and len(names) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(bad) in w[0] and "outside [0, 1]" in w[0] and "remove it and add it again" in w[0]


def test_filtered_show_of_a_benchmark_left_without_entry_says_so(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    bad = _corrupt_dice(lb / B_KAGGLE / "entries" / "ukbb_cardiac-labels", '"abc"')
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_KAGGLE])
    assert r.exit_code == 2, r.output
    assert "no aggregate for group" not in r.stderr  # the old message hid the warning
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(bad) in w[0] and "not a number" in w[0]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no valid entry" in errors[0] and B_KAGGLE in errors[0]
    # unfiltered: one line for the benchmark, the others are shown
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-f", "json"])
    assert r.exit_code == 0, r.output
    assert B_KAGGLE not in {b["benchmark"] for b in json.loads(r.stdout)}
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith(f"skipped {B_KAGGLE}")]
    assert len(skipped) == 1 and "no valid entry" in skipped[0], r.stderr


def test_ranks_skip_a_corrupt_entry_with_its_warning(prefilled_dir, tmp_path):
    """--ranks ranks the entries the table ranks: a corrupt entry (whose per-subject values are
    intact) is left out with its warning, as in the ranked table."""
    lb = _board(prefilled_dir, tmp_path)
    bad = _corrupt_dice(lb / B_7T / "entries" / "plain", "1.5")
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "--ranks", "--resamples", "20",
                                 "-f", "json"])
    assert r.exit_code == 0, r.output
    names = [e["entry"] for e in json.loads(r.stdout)["entries"]]
    assert "plain" not in names and len(names) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(bad) in w[0]
    _corrupt_dice(lb / B_KAGGLE / "entries" / "ukbb_cardiac-labels", "1.5")
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_KAGGLE, "--ranks"])
    assert r.exit_code == 2 and len(_warnings(r.stderr)) == 1 and "no valid entry" in r.stderr, r.output


def test_export_skips_a_corrupt_entry_and_an_emptied_benchmark(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    bad = _corrupt_dice(lb / B_KAGGLE / "entries" / "ukbb_cardiac-labels", "1.5")
    bad7 = _corrupt_dice(lb / B_7T / "entries" / "plain", "Infinity")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(lb), "--with-entries"])
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in out.iterdir())
    assert f"{B_KAGGLE}.csv" not in files and f"{B_7T}.csv" in files
    assert "plain" not in json.dumps(json.loads((out / f"{B_7T}.json").read_text())["entries"])
    assert not (out / "leaderboard" / B_7T / "entries" / "plain").exists()  # a corrupt entry is never copied
    w = _warnings(r.stderr)
    assert len(w) == 2 and any(str(bad) in x for x in w) and any(str(bad7) in x for x in w)
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith(f"skipped {B_KAGGLE}")]) == 1
    # the public export too: the corrupt entry is in no file of it
    pub = tmp_path / "public"
    r = CliRunner().invoke(app, ["leaderboard", "export", "--public", str(pub), "-L", str(lb)])
    assert r.exit_code == 0, r.output
    assert not (pub / B_KAGGLE).exists() and (pub / B_7T / "ranked.csv").is_file()
    import yaml

    subs = yaml.safe_load((pub / B_7T / "submissions.yaml").read_text())
    assert "plain" not in subs and "base" in subs and len(subs) == 6


def test_failed_export_leaves_no_half_written_folder(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    _corrupt_dice(lb / B_KAGGLE / "entries" / "ukbb_cardiac-labels", "1.5")
    work = tmp_path / "work"
    work.mkdir()
    # the export fails (no valid entry): neither OUT nor a temporary folder may stay
    r = CliRunner().invoke(app, ["leaderboard", "export", str(work / "new"), "-L", str(lb), "-b", B_KAGGLE])
    assert r.exit_code == 2 and "no valid entry" in r.stderr, r.output
    assert list(work.iterdir()) == []  # no OUT, no temporary folder next to it
    # an existing OUT stays as it was when a folder in it may not be replaced (checked before any move)
    out = work / "old"
    (out / B_7T).mkdir(parents=True)
    (out / B_7T / "thesis.txt").write_text("mine")
    (out / f"{B_7T}.csv").write_text("earlier export")
    r = CliRunner().invoke(app, ["leaderboard", "export", "--public", str(out), "-L", str(lb), "-b", B_7T])
    assert r.exit_code == 2 and "not written by cardbench" in r.stderr, r.output
    assert sorted(p.name for p in work.iterdir()) == ["old"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        [f"{B_7T}", f"{B_7T}.csv", f"{B_7T}/thesis.txt"]
    assert (out / f"{B_7T}.csv").read_text() == "earlier export"


# ---- 2. refused entry folder names and linked files are named, links never opened


def test_entry_folder_with_a_refused_name_is_named(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    evil = lb / B_7T / "entries" / "..evil"
    shutil.copytree(lb / B_7T / "entries" / "plain", evil)
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "json"])
    assert r.exit_code == 0, r.output
    assert "..evil" not in {e["entry"] for e in json.loads(r.stdout)["entries"]}
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(evil) in w[0] and "invalid entry name" in w[0] and "ignored" in w[0], r.stderr


def test_linked_summary_is_refused_as_a_link_never_opened(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    entry = lb / B_7T / "entries" / "plain"
    real = tmp_path / "elsewhere.json"
    os.replace(entry / "summary.json", real)
    (entry / "summary.json").symlink_to(real)
    real.chmod(0)  # opening it would fail as "not readable": the warning must be about the link
    try:
        r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "json"])
    finally:
        real.chmod(0o644)
    assert r.exit_code == 0, r.output
    assert "plain" not in {e["entry"] for e in json.loads(r.stdout)["entries"]}
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(entry / "summary.json") in w[0] and "symbolic link" in w[0], r.stderr
    assert "not readable" not in w[0] and "not opened" in w[0]


# ---- 3. messages: raw pixdim, no nibabel line, wording


def _nifti(path: Path, pixdim=(1.5, 1.5, 8.0), sform=None) -> Path:
    import nibabel as nib
    import numpy as np

    img = nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.diag([1.5, 1.5, 8.0, 1.0]) if sform is None else sform)
    img.header["pixdim"][1:4] = pixdim
    nib.save(img, path)
    return path


def test_zero_pixdim_message_shows_the_header_values_and_nibabel_stays_quiet(tmp_path, capfd):
    from cardbench.datasets.formats.base import MaskReadError
    from cardbench.datasets.io import read_mask

    p = _nifti(tmp_path / "a_frame01.nii", pixdim=(1.5, 0.0, 8.0))  # the sform says 1.5 x 1.5 x 8 mm
    with pytest.raises(MaskReadError) as ei:
        read_mask(p)
    msg = str(ei.value)
    assert "(1.5, 0.0, 8.0) mm" in msg and "(1.5, 1.0, 8.0)" not in msg  # not nibabel's repaired 0 -> 1
    assert "(1.5, 1.5, 8.0) mm" in msg  # the sform's voxel size
    err = capfd.readouterr().err
    assert "should be non-zero" not in err and err == ""


def test_problem_lines_read_well(tmp_path):
    import numpy as np

    from cardbench.benchmark.scoring import _read

    bad = np.diag([1.5, 1.5, 8.0, 1.0])
    bad[0, 3] = np.nan
    cases = {_nifti(tmp_path / "nan_frame01.nii", sform=bad): "prediction sform transform (the affine) holds NaN",
             tmp_path / "short_frame01.nii": "prediction too short to be NIfTI (100 header bytes: a truncated file?)",
             tmp_path / "x.png": "(no IHDR chunk: a truncated file?)"}
    (tmp_path / "short_frame01.nii").write_bytes(b"\0" * 100)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    for path, want in cases.items():
        problems = []
        assert _read(path, None, "prediction", problems) == (None, None)
        line = str(problems[0])
        assert want in line, line
        assert "prediction the " not in line and "?." not in line and "?. Fix" not in line


# ---- 4. `data prepare NAME DIR`: the usage error suggests --out


def test_extra_argument_suggests_out(monkeypatch, capsys, tmp_path):
    import sys

    from cardbench.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["cardbench", *args])
        with pytest.raises(SystemExit) as ei:
            main()
        return ei.value.code, capsys.readouterr().err.strip().splitlines()

    d = str(tmp_path / "prepared")
    code, lines = run("data", "prepare", "sunnybrook-sample", d)
    assert code == 2 and len(lines) == 1, lines
    assert f"did you mean --out {d}?" in lines[0] and "(see `cardbench data prepare --help`)" in lines[0]
    assert not (tmp_path / "prepared").exists()
    # no hint where it cannot be meant: two extra arguments, or --out given already
    for args in (("data", "prepare", "sunnybrook-sample", d, d), ("data", "prepare", "sunnybrook-sample", "-o", d, d)):
        code, lines = run(*args)
        assert code == 2 and len(lines) == 1 and "did you mean" not in lines[0], lines


# ---- 5. --nsd-tol out of range names the flag and the range


@pytest.mark.parametrize("value,cls", [("-1", ""), ("0", ""), ("1001", ""), ("LV=-2,default=2", "class LV: ")])
def test_nsd_tol_error_names_the_flag(tmp_path, value, cls):
    r = CliRunner().invoke(app, ["score", str(tmp_path), "-r", str(tmp_path), f"--nsd-tol={value}"])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: --nsd-tol {value}: {cls}bad value") and "> 0 (at most 1000)" in lines[0]
    assert "tolerance_mm" not in lines[0] and "parameters." not in lines[0]


# ---- 6. `data fetch` without network: one line, a short reason, no urllib3 reprs


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_fetch_refused_connection_is_one_short_line(tmp_path):
    port = _closed_port()
    mirror = f"http://127.0.0.1:{port}"
    r = CliRunner().invoke(app, ["data", "fetch", "ankenbrand2021-derived", "--mirror", mirror, "--retries", "0",
                                 "--jobs", "1"], env={"CARDBENCH_DATA": str(tmp_path / "c")})
    assert r.exit_code == 1, r.output  # a failure, not bad input
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert f"{mirror}/cmr-seg-tl/" in line and "(connection refused)" in line and "--mirror" in line
    for raw in ("HTTPConnectionPool", "NewConnectionError", "Max retries", "Errno", "object at 0x", "Caused by"):
        assert raw not in line, line


def test_download_reason_without_network(monkeypatch):
    """Name resolution failing (no network) as requests raises it, built the way requests wraps
    urllib3's error, and an HTTP error status."""
    import requests

    from cardbench.datasets.fetch import download_reason

    try:
        try:
            raise OSError(-3, "Temporary failure in name resolution")
        except OSError as inner:
            raise requests.exceptions.ConnectionError(
                "HTTPSConnectionPool(host='x.invalid', port=443): Max retries exceeded (Caused by "
                "NameResolutionError(\"<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve\"))"
            ) from inner
    except requests.exceptions.ConnectionError as e:
        assert download_reason(e) == "no network connection (name resolution failed)"
    resp = requests.Response()
    resp.status_code, resp.reason = 404, "Not Found"
    assert download_reason(requests.exceptions.HTTPError("404 Client Error", response=resp)) == "HTTP 404 Not Found"


# ---- 7. --scheduler local:N leaves nothing in $TMPDIR, also after an error


def test_local_cluster_scratch_space_is_removed(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import tempfile

    from cardbench.benchmark.distributed import dask_executor

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads $TMPDIR again
    with pytest.raises(RuntimeError, match="stopped"):
        with dask_executor("local:1") as ex:
            assert ex.submit(sum, [1, 2]).result() == 3  # the worker ran
            during = [p.name for p in tmp.iterdir()]
            raise RuntimeError("stopped")
    assert len(during) == 1 and during[0].startswith("cardbench-dask-")  # the workers' scratch space is ours
    assert list(tmp.iterdir()) == []  # and it is gone (no dask-scratch-space/)


# ---- 8. ScoreResult.per_case has the columns of per_case.csv (the case id included)


def test_per_case_has_the_case_column_of_the_csv(sunnybrook_prepared, tmp_path):
    import csv

    import pandas as pd

    from cardbench.benchmark import score
    from cardbench.benchmark.results import ScoreResult

    res = score(sunnybrook_prepared / "labels", sunnybrook_prepared, progress=False)
    res.write(tmp_path / "out")
    with open(tmp_path / "out" / "per_case.csv", newline="") as f:
        header = next(csv.reader(f))
    pc = res.per_case
    assert list(pc.columns) == header and header[:3] == ["level", "subject", "case"]
    # the id spelled by hand from subject, frame and slice (the reference's file naming)
    for r in pc.head(50).itertuples():
        want = f"{r.subject}_frame{int(r.frame):02d}" + ("" if pd.isna(r.slice) else f"_slice{int(r.slice):03d}")
        assert r.case == want
    # a table given as a DataFrame is not changed; the result shows it with the case column
    raw = pc.drop(columns="case")
    given = ScoreResult(res.summary, raw, res.per_subject, res.aggregates)
    assert "case" not in raw.columns and list(given.per_case.columns) == header
