"""Defects found by a second fresh-user trial: submission.yaml's label_map opened any file of the machine,
a linked folder reported as missing predictions, a JSON NaN Dice accepted by the leaderboard, an unknown
export metric accepted, a scored class the reference does not annotate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.benchmark import ValidationError, score
from cardbench.cli import app

SECRET = "root-secret-7f3a9c"


def _copy_labels(ref: Path, dst: Path) -> list[Path]:
    dst.mkdir()
    files = sorted((ref / "labels").rglob("*.nii.gz"))
    for f in files:
        shutil.copyfile(f, dst / f.name)
    return files


def _label_map_problems(pred: Path, ref: Path) -> list[str]:
    with pytest.raises(ValidationError) as ei:
        score(pred, ref, progress=False)
    return [str(p) for p in ei.value.problems]


@pytest.mark.parametrize("where", ["absolute", "dotdot", "link", "device"])
def test_label_map_outside_the_submission_is_never_read(sunnybrook_prepared, tmp_path, where):
    ref = sunnybrook_prepared
    pred = tmp_path / "pred"
    _copy_labels(ref, pred)
    secret = tmp_path / "secret.yaml"
    secret.write_text(f"labels: {{{SECRET}: 1}}\n")
    spec = {"absolute": str(secret), "dotdot": "../secret.yaml", "link": "lm.yaml", "device": "/dev/zero"}[where]
    if where == "link":
        os.symlink(secret, pred / "lm.yaml")
    (pred / "submission.yaml").write_text(f"name: x\nlabel_map: {spec}\n")
    probs = _label_map_problems(pred, ref)
    lm = [p for p in probs if "label_map '" in p]
    assert len(lm) == 1 and "not read" in lm[0], probs
    assert len(probs) == (2 if where == "link" else 1)  # a link is also refused as a link
    assert not any(SECRET in p for p in probs)
    r = CliRunner().invoke(app, ["score", str(pred), "--reference", str(ref), "--no-save"])
    assert r.exit_code == 2 and SECRET not in r.output
    assert "Traceback" not in r.output


def test_label_map_file_inside_the_submission_is_used(sunnybrook_prepared, tmp_path):
    """Predictions coded MY = 1, LV = 2 with a map file in the submission score as the reference itself."""
    ref = sunnybrook_prepared
    pred = tmp_path / "pred"
    for f in _copy_labels(ref, pred):
        img = nib.load(str(pred / f.name))
        a = np.asarray(img.dataobj)
        b = np.where(a == 1, 2, np.where(a == 2, 1, a)).astype(np.uint8)
        nib.save(nib.Nifti1Image(b, img.affine, img.header), str(pred / f.name))
    (pred / "maps").mkdir()
    (pred / "maps" / "swapped.yaml").write_text("labels: {background: 0, MY: 1, LV: 2}\n")
    (pred / "submission.yaml").write_text("name: swapped\nlabel_map: maps/swapped.yaml\n")
    r = score(pred, ref, protocol="ankenbrand2021", progress=False)
    assert r.headline()["LV"] == 1.0 and r.headline()["MY"] == 1.0


def test_big_label_map_file_is_refused(sunnybrook_prepared, tmp_path):
    ref = sunnybrook_prepared
    pred = tmp_path / "pred"
    _copy_labels(ref, pred)
    (pred / "lm.yaml").write_text("labels: {background: 0, LV: 1}\n" + "# pad\n" * 200_000)
    (pred / "submission.yaml").write_text("label_map: lm.yaml\n")
    probs = _label_map_problems(pred, ref)
    assert len(probs) == 1 and "exceed the limit" in probs[0]


def test_linked_folder_is_named_not_reported_as_missing_files(sunnybrook_prepared, tmp_path):
    ref = sunnybrook_prepared
    pred = tmp_path / "pred"
    files = _copy_labels(ref, pred)
    subject = files[0].name.split("_frame")[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    mine = [f for f in files if f.name.startswith(subject + "_")]
    for f in mine:
        shutil.move(str(pred / f.name), outside / f.name)
    os.symlink(outside, pred / subject)
    probs = _label_map_problems(pred, ref)
    linked = [p for p in probs if "symbolic link to a folder outside the submission" in p]
    assert len(linked) == 1 and subject in linked[0], probs
    assert len(probs) == 1, probs  # its files are not also reported as missing predictions


def test_export_with_an_unknown_metric_is_refused(prefilled_dir, tmp_path):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    out = tmp_path / "ex"
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(lb), "-m", "nonsense"])
    assert r.exit_code == 2 and "no metric 'nonsense' in any benchmark" in r.output and "dice" in r.output, r.output
    assert not out.exists()  # nothing written
    bench = "cmr-7t__test__ankenbrand2021"
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(lb), "-b", bench, "-m", "dice_rv"])
    assert r.exit_code == 2 and not out.exists(), r.output  # that benchmark has no RV: no silent fallback
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(lb), "-m", "iou_my"])
    assert r.exit_code == 0, r.output
    rows = (out / f"{bench}.csv").read_text().splitlines()
    assert "iou_MY" in rows[0]


def test_a_class_the_reference_annotates_nowhere_is_refused(sunnybrook_prepared):
    """The Sunnybrook sample annotates LV and MY (its card): --classes RV would exclude every value."""
    ref = sunnybrook_prepared
    r = CliRunner().invoke(app, ["score", str(ref / "labels"), "--reference", str(ref), "--classes", "RV",
                                 "--no-save"])
    assert r.exit_code == 2 and "--classes RV" in r.output and "LV, MY" in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_a_class_left_out_on_purpose_gives_no_mix_up_warning(sunnybrook_prepared):
    """--classes LV: the predictions' MY is in the reference too, so it is no label-map mix-up."""
    ref = sunnybrook_prepared
    r = score(ref / "labels", ref, classes=["LV"], progress=False)
    assert not any("MY" in w for w in r.summary.get("warnings", [])), r.summary.get("warnings")
    assert set(r.per_case["class"]) == {"LV"}


def test_export_ranks_a_benchmark_without_the_metric_by_its_first(prefilled_dir, sunnybrook_prepared, tmp_path):
    """hd95 is in the Sunnybrook benchmark (masks), not in the pre-filled ones (confusion tables: Dice,
    IoU): exporting by hd95_lv ranks the latter by Dice; asked for with -b, one of them is refused."""
    from cardbench.benchmark.leaderboard import add_entry

    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    ref = sunnybrook_prepared
    add_entry(score(ref / "labels", ref, progress=False), lb, "self")
    out = tmp_path / "ex"
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(lb), "-m", "hd95_lv"])
    assert r.exit_code == 0, r.output
    sb = next(out.glob("sunnybrook-sample__*__cardbench-v1.csv"))
    assert "hd95_LV" in sb.read_text().splitlines()[0]
    assert "dice_LV" in (out / "cmr-7t__test__ankenbrand2021.csv").read_text().splitlines()[0]
    r = CliRunner().invoke(app, ["leaderboard", "export", str(tmp_path / "ex2"), "-L", str(lb), "-b",
                                 "cmr-7t__test__ankenbrand2021", "-m", "hd95_lv"])
    assert r.exit_code == 2 and not (tmp_path / "ex2").exists(), r.output
