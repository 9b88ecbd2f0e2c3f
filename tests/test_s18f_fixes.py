"""Findings of a fresh-user trial of the command line (helper s18f), each test failing on the code before
its fix:

1. ``cardbench score --workdir`` is checked against ``--out``, the reference and the predictions before
   anything is created (``--workdir OUT/w --out OUT`` left OUT/w behind and then refused OUT; a workdir
   in the reference folder got the archive extracted into it);
2. SIGTERM ends a command the way Ctrl-C does: the ``cardbench-rows-*`` temporary folder is removed;
3. a file where a folder is needed (``--cache FILE``, ``$CARDBENCH_LEADERBOARD=FILE``, ``--workdir FILE``)
   is exit 2 with one line naming the option or variable, not "File exists. Fix: check the path";
4. ``cardbench compare``: an unknown ``--split`` names the splits that exist; a missing per_subject.csv
   is named; ``.../summary.json`` given for the folder says to give the folder; a corrupt result folder
   is to be scored again (not "remove it and add it again", the leaderboard's fix);
5. ``cardbench data path`` and its help agree on a damaged cache; ``volumes score`` bounds
   ``--training-confidence`` and names the missing ``--data`` folder;
6. a one-column ``subjects.csv`` is read (csv.Sniffer guessed 'u' as the delimiter of ``subject``);
7. a raw NIfTI named ``.nii.gz``: the message says what the content is and how to fix it, without
   contradicting itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.cli import app


def _cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.strip()]


def _mask(path: Path, value: int) -> None:
    """An 8 x 8 x 2 label map (x, y, z), 1 mm voxels, with a 4 x 4 square of ``value`` in each slice."""
    a = np.zeros((8, 8, 2), np.uint8)
    a[2:6, 2:6, :] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(path))


@pytest.fixture()
def pair(tmp_path):
    """(reference folder, predictions folder, predictions .zip): one subject, LV label 1 in both."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _mask(ref / "case1.nii.gz", 1)
    _mask(pred / "case1.nii.gz", 1)
    z = tmp_path / "pred.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(pred / "case1.nii.gz", "case1.nii.gz")
    return ref, pred, z


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- 1. --workdir checked first

def test_workdir_inside_out_is_refused_before_anything_is_created(pair, tmp_path):
    ref, pred, z = pair
    out = tmp_path / "OUT"
    r = _cli("score", z, "--reference", ref, "--workdir", out / "w", "--out", out)
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "--workdir" in _lines(r)[0] and "--out" in _lines(r)[0], r.output
    assert not out.exists()  # neither OUT/w nor OUT was left behind


@pytest.mark.parametrize("where", ["ref", "ref/sub", "pred/sub"])
def test_workdir_in_the_reference_or_the_predictions_is_refused(pair, tmp_path, where):
    ref, pred, z = pair
    before = {"ref": _tree(ref), "pred": _tree(pred)}
    r = _cli("score", z if where.startswith("ref") else pred, "--reference", ref, "--workdir", tmp_path / where,
             "--no-save")
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "--workdir" in _lines(r)[0] and ("reference" if where.startswith("ref") else "predictions") in _lines(r)[0]
    assert {"ref": _tree(ref), "pred": _tree(pred)} == before  # nothing extracted into them


def test_workdir_outside_them_still_scores(pair, tmp_path):
    ref, _, z = pair
    r = _cli("score", z, "--reference", ref, "--workdir", tmp_path / "w", "--out", tmp_path / "res")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "res" / "summary.json").is_file()
    assert _tree(tmp_path / "w") == []  # the extracted archive was removed


# ---------------------------------------------------------------- 2. SIGTERM cleans up

def test_sigterm_while_scoring_removes_the_temporary_folder(pair, tmp_path, monkeypatch):
    """The SIGTERM arrives while the cases are scored, inside the ``cardbench-rows-*`` folder's with-block."""
    import cardbench.benchmark.scoring as scoring
    from cardbench import cli

    ref, pred, _ = pair
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    seen = []

    def slow(tasks, **kw):  # a generator, as the real one: its body runs inside the with-block
        seen.append(sorted(p.name for p in tmp.iterdir()))
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200):  # the handler runs between two of these
            time.sleep(0.005)
        yield from ()

    def not_handled(signum, frame):  # on the code before the fix, instead of ending pytest
        raise RuntimeError("SIGTERM not handled by cardbench")

    monkeypatch.setattr(scoring, "iter_task_results", slow)
    monkeypatch.setattr(sys, "argv", ["cardbench", "score", str(pred), "--reference", str(ref), "--no-save"])
    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        with pytest.raises(SystemExit) as e:
            cli.main()
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.code == 128 + 15
    assert after is not_handled  # main() put the caller's handler back
    assert any(n.startswith("cardbench-rows-") for n in seen[0]), seen  # the folder existed when it came
    assert list(tmp.iterdir()) == []  # and was removed


# ---------------------------------------------------------------- 3. a file where a folder is needed

@pytest.mark.parametrize("below", ["", "sub"])
def test_fetch_cache_that_is_a_file(tmp_path, below):
    f = tmp_path / "a-file"
    f.write_text("x")
    r = _cli("data", "fetch", "cmr-7t", "--cache", f / below if below else f)
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    line = _lines(r)[0]
    assert line.startswith(f"error: {f} (given as --cache)") and "folder is needed" in line, line
    assert f.read_text() == "x"


def test_leaderboard_env_variable_that_is_a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    r = _cli("leaderboard", "show", env={"CARDBENCH_LEADERBOARD": str(f)})
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "$CARDBENCH_LEADERBOARD" in _lines(r)[0] and "folder" in _lines(r)[0], r.output


def test_workdir_that_is_a_file(pair, tmp_path):
    ref, _, z = pair
    f = tmp_path / "a-file"
    f.write_text("x")
    r = _cli("score", z, "--reference", ref, "--workdir", f, "--no-save")
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "--workdir" in _lines(r)[0] and "folder" in _lines(r)[0], r.output
    assert f.read_text() == "x"


# ---------------------------------------------------------------- 4. compare

@pytest.fixture(scope="module")
def result(tmp_path_factory) -> Path:
    """A result folder of two subjects, A of split train and B of split test (a reference in the standard
    layout scored against itself)."""
    from cardbench.benchmark import score

    root = tmp_path_factory.mktemp("s18f-cmp")
    ref = root / "ref"
    for s in ("A", "B"):
        _mask(ref / "labels" / s / f"{s}_frame01.nii.gz", 1)
        _mask(ref / "labels" / s / f"{s}_frame02.nii.gz", 1)
    (ref / "subjects.csv").write_text("subject,split,ed_frame,es_frame\nA,train,1,2\nB,test,1,2\n")
    out = root / "a"
    score(ref / "labels", ref, progress=False).write(out)
    return out


def test_compare_unknown_split_names_the_splits(result):
    r = _cli("compare", result, result, "--split", "nope")
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "nope" in _lines(r)[0] and "test, train" in _lines(r)[0], r.output


def test_compare_known_split_still_works(result):
    r = _cli("compare", result, result, "--split", "test")
    assert r.exit_code == 0, r.output
    assert "1 subjects" in r.stdout


def test_compare_without_per_subject_csv_names_the_file(result, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(result, b)
    (b / "per_subject.csv").unlink()
    r = _cli("compare", result, b)
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert str(b / "per_subject.csv") in _lines(r)[0] and "missing" in _lines(r)[0], r.output


def test_compare_summary_json_given_for_the_folder(result):
    r = _cli("compare", result, result / "summary.json")
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "give the result folder" in _lines(r)[0] and "(no summary.json)" not in r.output, r.output


def test_compare_corrupt_result_folder_says_score_it_again(result, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(result, b)
    (b / "per_subject.csv").write_text("subject,split\n")
    r = _cli("compare", result, b)
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    assert "score the submission again" in _lines(r)[0] and "add it again" not in r.output, r.output


# ---------------------------------------------------------------- 5. data path, volumes score

@pytest.fixture()
def cmr7t_cache(tmp_path) -> Path:
    """A cache holding every cmr-7t file at its registry size (zeros: the content is wrong on purpose)."""
    from cardbench.datasets.cards import load_card

    cache = tmp_path / "cache"
    for e in load_card("cmr-7t").files:
        p = cache / e.local_path
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as fh:
            fh.truncate(e.bytes)  # sparse: nothing is written
    return cache


def test_data_path_checks_sizes_not_sha256_as_its_help_says(cmr7t_cache):
    r = _cli("data", "path", "cmr-7t", "--cache", cmr7t_cache)
    assert r.exit_code == 0, r.output  # right sizes: the cheap check passes (verify re-hashes)
    h = " ".join(_cli("data", "path", "--help").stdout.split())
    assert "size" in h and "cardbench data verify" in h and "exits 1" in h, h


def test_data_path_exits_1_on_a_file_of_the_wrong_size(cmr7t_cache):
    from cardbench.datasets.cards import load_card

    e = load_card("cmr-7t").files[3]
    with open(cmr7t_cache / e.local_path, "r+b") as fh:
        fh.truncate(e.bytes - 1)  # a download cut short
    r = _cli("data", "path", "cmr-7t", "--cache", cmr7t_cache)
    assert r.exit_code == 1 and len(_lines(r)) == 1, r.output
    assert e.local_path in _lines(r)[0] and "wrong size" in _lines(r)[0] and "cardbench data fetch cmr-7t" in r.stderr
    assert r.stdout.strip()  # the path is still printed


def _pixel_table(tmp_path) -> Path:
    t = tmp_path / "counts.tsv"
    t.write_text("file\tlv_pixels\tmy_pixels\nimages/7/7-frame000-slice000.png\t10\t5\n")
    return t


@pytest.mark.parametrize("value", ["-1", "0", "101"])
def test_volumes_score_training_confidence_is_a_percentage(tmp_path, value, monkeypatch, capsys):
    from cardbench.cli import main

    monkeypatch.setattr(sys, "argv", ["cardbench", "volumes", "score", str(_pixel_table(tmp_path)),
                                      "--training-confidence", value, "--data", str(tmp_path / "no")])
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as ei:  # through main(): a usage error is one line there
        main()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert ei.value.code == 2 and len(err) == 1, err
    assert "--training-confidence" in err[0] and "1" in err[0], err


def test_volumes_score_missing_data_folder(tmp_path):
    r = _cli("volumes", "score", _pixel_table(tmp_path), "--data", tmp_path / "nonexistent")
    assert r.exit_code == 2 and len(_lines(r)) == 1, r.output
    line = _lines(r)[0]
    assert f"--data {tmp_path / 'nonexistent'}: no such folder" in line, line
    assert "cardbench data fetch ankenbrand2021-derived" in line, line


# ---------------------------------------------------------------- 7. raw NIfTI named .nii.gz

def test_raw_nifti_named_nii_gz_says_what_it_is(tmp_path):
    from cardbench.datasets.formats import MaskReadError, read_mask

    ok = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), str(ok))
    p = tmp_path / "case1.nii.gz"
    shutil.copy(ok, p)
    with pytest.raises(MaskReadError) as ei:
        read_mask(p)
    msg = str(ei.value)
    assert "(the content is an uncompressed NIfTI)" in msg and "unknown binary data" not in msg, msg
    assert "rename it to .nii, or gzip it" in msg


def test_one_column_subjects_csv_is_not_split_at_a_letter(tmp_path):
    """csv.Sniffer took 'u' for the delimiter of `subject\\nSCD0000101\\n` (columns 's', 'bject'):
    only a comma, semicolon or tab is a delimiter."""
    from cardbench.datasets.reference import read_subjects

    for text, subjects, cols in (("subject\nSCD0000101\nSCD0000201\n", ["SCD0000101", "SCD0000201"], []),
                                 ("subject;split\nSCD0000101;test\n", ["SCD0000101"], ["split"]),
                                 ("subject\tsplit\nSCD0000101\ttest\n", ["SCD0000101"], ["split"]),
                                 ("subject,split\nSCD0000101,test\n", ["SCD0000101"], ["split"])):
        f = tmp_path / "subjects.csv"
        f.write_text(text)
        df = read_subjects(f)
        assert df.index.name == "subject" and list(df.index) == subjects and list(df.columns) == cols, text
