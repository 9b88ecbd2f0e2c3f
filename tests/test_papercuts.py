"""Papercuts a new user hit: help text, dry runs, ambiguous prefixes, the list of files written."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from cardbench.cli import app

runner = CliRunner()


def test_demo_help_keeps_the_extra_name():
    res = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "the [baselines] extra" in " ".join(res.stdout.split())


def test_results_written_lists_every_file(sunnybrook_prepared, tmp_path):
    res = runner.invoke(app, ["score", str(sunnybrook_prepared / "labels"), "--reference", str(sunnybrook_prepared),
                              "--out", str(tmp_path / "r")], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("results written to"))
    on_disk = sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_file() and not p.name.startswith("."))
    assert {"clinical.csv", "clinical_agreement.csv", "summary.json"} <= set(on_disk)
    assert all(name in line for name in on_disk), (line, on_disk)


def test_dry_run_needs_no_weights_and_counts_the_dataset(sunnybrook_prepared, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(app, ["baseline", "train", "--dry-run", "--init", "imagenet", "--dataset",
                              str(sunnybrook_prepared)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.stderr
    assert "ImageNet weights" not in res.stderr and "depends on the number" not in res.stdout
    # 3 training patients, ED and ES, every labelled slice: 9 + 9 + 10 slices x 2 frames
    assert "schedule for 56 training images" in res.stdout


def test_ambiguous_benchmark_prefix_is_named(prefilled_dir, tmp_path):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    res = runner.invoke(app, ["leaderboard", "show", str(lb), "-b", "cmr-7t"], env={"COLUMNS": "300"})
    assert res.exit_code == 2
    msg = " ".join(res.stderr.split())
    assert "ambiguous" in msg and "cmr-7t__test__ankenbrand2021" in msg and "cmr-7t__test__cardbench-v1" in msg
    res = runner.invoke(app, ["leaderboard", "show", str(lb), "-b", "nothing-like-it"])
    assert res.exit_code == 2 and "no benchmark 'nothing-like-it'" in res.stderr


def test_per_case_csv_has_a_case_id_and_whole_slice_numbers(tmp_path, sunnybrook_prepared):
    """per_case.csv names each row's case as the reference's files do and writes slice numbers as
    integers (``3``, not ``3.0``); the ids are built here from the subject, frame and slice columns."""
    import csv

    from cardbench.benchmark import score

    res = score(sunnybrook_prepared / "labels", sunnybrook_prepared, progress=False)
    res.write(tmp_path / "out")
    with open(tmp_path / "out" / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0])[:3] == ["level", "subject", "case"]
    for r in rows:
        assert "." not in r["slice"] and "." not in r["frame"]
        want = f"{r['subject']}_frame{int(r['frame']):02d}"
        if r["level"] == "image":
            want += f"_slice{int(r['slice']):03d}"
        else:
            assert r["slice"] == ""
        assert r["case"] == want
    # the in-memory table has the same rows and the same columns (the case id included)
    assert len(rows) == len(res.per_case) and list(rows[0]) == list(res.per_case.columns)
