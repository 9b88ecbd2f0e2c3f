"""`cardbench score` on broken submissions: one line per problem, exit code 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from helpers import SPACING, affine, save_nifti, save_png

runner = CliRunner()


def _ref(tmp_path, n=2, shape=(6, 6, 2)):
    arr = np.zeros(shape, np.uint8)
    arr[1:3, 1:3, :] = 1
    arr[3, 1:3, :] = 2
    for i in range(n):
        save_nifti(tmp_path / "ref" / "labels" / f"s{i}" / f"s{i}_frame01.nii.gz", arr)
    return arr


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"),
                              "--out", str(out), *extra])
    return res, out


def _problem_lines(res):
    return [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]


def test_valid_submission_scores(tmp_path):
    arr = _ref(tmp_path)
    for i in range(2):
        save_nifti(tmp_path / "pred" / f"s{i}_frame01.nii.gz", arr)
    res, out = _run(tmp_path, "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    lv = [r for r in summary["results"] if r["grouping"] == "all" and r["class"] == "LV" and r["metric"] == "dice"]
    assert lv[0]["mean"] == 1.0
    assert (out / "summary.json").exists()


@pytest.mark.parametrize("case", ["missing", "extra", "duplicate", "shape", "spacing", "labels_255",
                                  "float", "truncated", "bad_name", "flipped"])
def test_each_problem_exits_2_and_writes_nothing(tmp_path, case):
    arr = _ref(tmp_path)
    pred = tmp_path / "pred"
    save_nifti(pred / "s0_frame01.nii.gz", arr)
    save_nifti(pred / "s1_frame01.nii.gz", arr)
    expect = case
    if case == "missing":
        (pred / "s1_frame01.nii.gz").unlink()
    elif case == "extra":
        save_nifti(pred / "s9_frame01.nii.gz", arr)
    elif case == "duplicate":
        save_nifti(pred / "s1_frame01.nii", arr)
    elif case == "shape":
        save_nifti(pred / "s1_frame01.nii.gz", arr[:, :, :1])
    elif case == "spacing":
        a = affine((1.5, 1.5, 8.0))
        save_nifti(pred / "s1_frame01.nii.gz", arr, a)
    elif case == "labels_255":
        save_nifti(pred / "s1_frame01.nii.gz", arr * 255 // max(1, arr.max()) * (arr > 0))
        expect = "labels"
    elif case == "float":
        save_nifti(pred / "s1_frame01.nii.gz", arr * 0.5, dtype=np.float32)
        expect = "non-integral"
    elif case == "truncated":
        p = pred / "s1_frame01.nii.gz"
        p.write_bytes(p.read_bytes()[:100])
        expect = "truncated"
    elif case == "bad_name":
        save_png(pred / "whatever.png", np.zeros((2, 2)))
        expect = "not recognised"
    elif case == "flipped":
        a = affine()
        a[1, 1] = -SPACING[1]
        save_nifti(pred / "s1_frame01.nii.gz", arr, a)
        expect = "orientation"
    res, out = _run(tmp_path)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = _problem_lines(res)
    assert len(lines) == 1, res.stderr
    assert expect in lines[0]
    assert "Fix:" in lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))


def test_several_problems_one_line_each(tmp_path):
    arr = _ref(tmp_path, n=3)
    pred = tmp_path / "pred"
    save_nifti(pred / "s0_frame01.nii.gz", arr * 255 // 2)           # labels outside the map
    save_nifti(pred / "s1_frame01.nii.gz", arr[:, :, :1])           # shape
    save_nifti(pred / "s7_frame01.nii.gz", arr)                      # extra; s2 missing
    res, out = _run(tmp_path)
    assert res.exit_code == 2
    lines = _problem_lines(res)
    assert len(lines) == 4, res.stderr
    assert not out.exists()


def test_png_0_255_rejected_with_hint(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[1:3, 1:3] = 1
    save_png(tmp_path / "ref" / "p_slice000_frame000-mask.png", m)
    save_png(tmp_path / "pred" / "p_slice000_frame000-mask.png", m * 255)
    res, out = _run(tmp_path)
    assert res.exit_code == 2
    lines = _problem_lines(res)
    assert len(lines) == 1 and "0/255" in lines[0]


def test_acdc_flag_and_submission_yaml_label_map(tmp_path):
    arr = _ref(tmp_path, n=1)
    acdc = np.where(arr == 1, 3, arr).astype(np.uint8)  # LV as 3 (ACDC)
    save_nifti(tmp_path / "pred" / "s0_frame01.nii.gz", acdc)
    res, _ = _run(tmp_path, "--labels", "acdc", "--json")
    assert res.exit_code == 0, res.stderr
    (tmp_path / "pred" / "submission.yaml").write_text("name: acdc-model\nlabel_map: acdc\n")
    res, _ = _run(tmp_path, "--json")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["submission"]["name"] == "acdc-model" and s["label_map"]["name"] == "acdc"
    lv = [r for r in s["results"] if r["grouping"] == "all" and r["class"] == "LV" and r["metric"] == "dice"]
    assert lv[0]["mean"] == 1.0


def test_missing_reference_is_a_clear_error(tmp_path):
    (tmp_path / "pred").mkdir()
    res = runner.invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "reference folder not found" in res.stderr


def test_every_subcommand_has_help():
    import typer.main

    cmd = typer.main.get_command(app)
    paths = [[]]
    for name, sub in cmd.commands.items():
        paths.append([name])
        for subname in getattr(sub, "commands", {}) or {}:
            paths.append([name, subname])
    for p in paths:
        res = runner.invoke(app, [*p, "--help"])
        assert res.exit_code == 0, (p, res.stdout, res.stderr)
        assert "Usage" in res.stdout


def test_empty_folder_is_one_problem(tmp_path):
    _ref(tmp_path, n=3)
    (tmp_path / "pred").mkdir()
    res, out = _run(tmp_path)
    lines = _problem_lines(res)
    assert res.exit_code == 2 and len(lines) == 1 and "no prediction files" in lines[0]


def test_one_split_submitted_without_split_flag_gets_one_hint(tmp_path):
    arr = _ref(tmp_path, n=3)
    (tmp_path / "ref" / "subjects.csv").write_text("subject,split\ns0,train\ns1,train\ns2,test\n")
    save_nifti(tmp_path / "pred" / "s2_frame01.nii.gz", arr)
    res, out = _run(tmp_path)
    lines = _problem_lines(res)
    assert res.exit_code == 2 and len(lines) == 1 and "--split test" in lines[0]
    res, out = _run(tmp_path, "--split", "test")
    assert res.exit_code == 0, res.stderr


def test_missing_case_names_the_reference_layout(tmp_path):
    arr = _ref(tmp_path, n=2)
    save_nifti(tmp_path / "pred" / "s0_frame01.nii.gz", arr)
    res, _ = _run(tmp_path)
    (line,) = _problem_lines(res)
    assert "s1/s1_frame01.nii.gz" in line


def test_labels_flag_conflicting_with_submission_yaml(tmp_path):
    arr = _ref(tmp_path, n=1)
    save_nifti(tmp_path / "pred" / "s0_frame01.nii.gz", arr)
    (tmp_path / "pred" / "submission.yaml").write_text("label_map: acdc\n")
    res, _ = _run(tmp_path, "--labels", "cardbench")
    lines = _problem_lines(res)
    assert res.exit_code == 2 and len(lines) == 1 and "declares label_map" in lines[0]


def test_yaml_error_is_one_line(tmp_path):
    arr = _ref(tmp_path, n=1)
    save_nifti(tmp_path / "pred" / "s0_frame01.nii.gz", arr)
    (tmp_path / "pred" / "submission.yaml").write_text("name: [unclosed\nteam: x\n")
    res, _ = _run(tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 2 and "not valid YAML at line" in lines[0]


def test_classes_are_case_insensitive_and_missing_table_is_named(tmp_path):
    arr = _ref(tmp_path, n=1)
    save_nifti(tmp_path / "pred" / "s0_frame01.nii.gz", arr)
    res, _ = _run(tmp_path, "--classes", "lv,my", "--json")
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(app, ["score", str(tmp_path / "nothere.tsv")])
    assert res.exit_code == 2 and "not found" in res.stderr


def test_installed_command_help_has_no_bool_placeholders():
    import subprocess
    import sys

    for args in (["score", "--help"], ["data", "fetch", "-h"], ["-h"]):
        out = subprocess.run([sys.executable, "-c", "from cardbench.cli import main; main()", *args],
                             capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "200"})
        assert out.returncode == 0, out.stderr
        assert "<bool>" not in out.stdout and "-h" in out.stdout
