"""Label maps own their classes: a 5-class map (LA = 4) declared in YAML is scored end to end, and
regions (unions of classes such as LV+MY, the epicardial region) are scored as one structure when the
map or --classes asks for them."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.benchmark.scoring import score
from cardbench.cli import app
from cardbench.labelmaps import get_label_map
from helpers import erode_lv_boundary, save_nifti

runner = CliRunner()

MAP5 = """name: cardbench-la
source: test map with the left atrium
labels: {background: 0, LV: 1, MY: 2, RV: 3, LA: 4}
classes: {LA: left atrium}
regions: {LV+MY: [LV, MY]}
"""


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _five_class_case(tmp_path):
    """Reference and prediction (12, 12, 3) with all four structures; the prediction's LA is shifted
    by one voxel along x, its LV loses one column to MY."""
    ref = np.zeros((12, 12, 3), np.uint8)
    ref[2:6, 2:6, :] = 2
    ref[3:5, 3:5, :] = 1
    ref[7:11, 2:6, :] = 3
    ref[2:6, 7:11, :] = 4
    pred = ref.copy()
    pred[2:6, 7:11, :] = 0
    pred[3:7, 7:11, :] = 4
    pred[3, 3:5, :] = 2
    for s in ("a", "b"):
        save_nifti(tmp_path / "ref" / "labels" / s / f"{s}_frame01.nii.gz", ref)
        save_nifti(tmp_path / "pred" / f"{s}_frame01.nii.gz", pred)
    (tmp_path / "map5.yaml").write_text(MAP5)
    return ref, pred


def test_map_declares_classes_and_regions(tmp_path):
    (tmp_path / "m.yaml").write_text(MAP5)
    lm = get_label_map(tmp_path / "m.yaml")
    assert lm.classes == ("LV", "MY", "RV", "LA") and lm.structures[-1] == "LV+MY"
    assert lm.structure_values("LV+MY") == (1, 2) and lm.structure_values("LA") == (4,)
    # an undeclared further class is still refused (a typo never becomes a structure)
    (tmp_path / "typo.yaml").write_text("labels: {background: 0, LV: 1, LA: 4}\n")
    with pytest.raises(ValueError, match=r"unknown class names \['LA'\].*classes:"):
        get_label_map(tmp_path / "typo.yaml")
    (tmp_path / "r.yaml").write_text("labels: {background: 0, LV: 1}\nregions: {LV+MY: [LV, MY]}\n")
    with pytest.raises(ValueError, match="region 'LV\\+MY' must list two or more classes of the map"):
        get_label_map(tmp_path / "r.yaml")


def test_five_class_map_scores_all_classes_end_to_end(tmp_path):
    ref, pred = _five_class_case(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"),
                              "--reference-labels", str(tmp_path / "map5.yaml"),
                              "--labels", str(tmp_path / "map5.yaml"), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["classes"] == ["LV", "MY", "RV", "LA", "LV+MY"]
    import pandas as pd

    pc = pd.read_csv(out / "per_case.csv")
    vol = pc[pc["level"] == "volume"].set_index(["subject", "class"])
    for cls, vals in {"LV": (1,), "MY": (2,), "RV": (3,), "LA": (4,), "LV+MY": (1, 2)}.items():
        expect = _dice(np.isin(ref, vals), np.isin(pred, vals))
        assert vol.loc[("a", cls), "dice"] == pytest.approx(expect, abs=1e-9), cls
    # by hand: LA 4x4x3 shifted by one voxel -> TP 36, FP 12, FN 12 -> Dice 72/96
    assert vol.loc[("a", "LA"), "dice"] == pytest.approx(72 / 96)
    # LV+MY: the LV column relabelled MY stays inside the union -> Dice 1
    assert vol.loc[("a", "LV+MY"), "dice"] == 1.0
    agg = pd.read_csv(out / "aggregates.csv")
    assert {"LA", "LV+MY"} <= set(agg["class"])
    # the LA surface distances equal those of the same masks scored as LV with the 4-class map
    la_ref = (ref == 4).astype(np.uint8)
    la_pred = (pred == 4).astype(np.uint8)
    for s in ("a", "b"):
        save_nifti(tmp_path / "ref1" / f"{s}_frame01.nii.gz", la_ref)
        save_nifti(tmp_path / "pred1" / f"{s}_frame01.nii.gz", la_pred)
    one = score(tmp_path / "pred1", tmp_path / "ref1", classes=["LV"], progress=False).per_case
    one = one[one["level"] == "volume"].set_index("subject")
    for m in ("hd", "hd95", "assd", "dice"):
        assert vol.loc[("a", "LA"), m] == pytest.approx(one.loc["a", m], abs=1e-9), m


def test_five_class_map_inline_in_card_yaml(tmp_path):
    import yaml

    ref, pred = _five_class_case(tmp_path)
    card = {"name": "la-test", "version": "1.0.0", "label_map": yaml.safe_load(MAP5), "classes": ["LV", "LA"]}
    (tmp_path / "ref" / "card.yaml").write_text(yaml.safe_dump(card))
    r = score(tmp_path / "pred", tmp_path / "ref", labels=tmp_path / "map5.yaml", progress=False)
    assert r.summary["classes"] == ["LV", "LA"]
    la = r.per_case[(r.per_case["class"] == "LA") & (r.per_case["level"] == "volume")]
    assert la["dice"].tolist() == pytest.approx([72 / 96, 72 / 96])


def test_four_class_default_has_no_region_rows(tmp_path):
    ref, pred = _five_class_case(tmp_path)
    for s in ("a", "b"):  # drop LA: a plain cardbench map
        save_nifti(tmp_path / "ref" / "labels" / s / f"{s}_frame01.nii.gz", np.where(ref == 4, 0, ref))
        save_nifti(tmp_path / "pred" / f"{s}_frame01.nii.gz", np.where(pred == 4, 0, pred))
    r = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert r.summary["classes"] == ["LV", "MY", "RV"]
    assert set(r.per_case["class"]) == {"LV", "MY", "RV"}


@pytest.fixture(scope="module")
def sunnybrook(tmp_path_factory, sunnybrook_prepared):
    root = tmp_path_factory.mktemp("sbreg")
    ref = sunnybrook_prepared  # prepared once per test run (conftest); read only
    arrays = {}
    for p in sorted((ref / "labels").rglob("*.nii.gz")):
        img = nib.load(str(p))
        lab = np.asanyarray(img.dataobj).astype(np.uint8)
        pred = erode_lv_boundary(lab, to=0)
        out = root / "pred" / p.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(out))
        arrays[p.name[: -len(".nii.gz")]] = (lab, pred)
    return root, ref, arrays


def test_region_on_real_sunnybrook_via_classes(sunnybrook):
    """LV+MY on the real Sunnybrook sample: Dice of the union masks at ED; not annotated at ES, where
    the sample has no epicardial contour (MY not annotated)."""
    root, ref, arrays = sunnybrook
    r = score(root / "pred", ref, classes=["LV", "MY", "lv+my"], progress=False)
    pc = r.per_case[r.per_case["level"] == "volume"]
    reg = pc[pc["class"] == "LV+MY"]
    assert len(reg) == len(pc[pc["class"] == "LV"]) > 0
    es = reg[reg["phase"] == "ES"]
    assert len(es) and (es["status"] == "not_annotated").all()
    ed = reg[reg["status"] == "ok"]
    assert len(ed) >= 4
    for _, row in ed.iterrows():
        lab, pred = arrays[f"{row['subject']}_frame{int(row['frame']):02d}"]
        assert row["dice"] == pytest.approx(_dice(np.isin(lab, (1, 2)), np.isin(pred, (1, 2))), abs=1e-12)
    # the classes themselves are unchanged by asking for a region
    base = score(root / "pred", ref, classes=["LV", "MY"], progress=False).per_case
    cols = ["level", "subject", "frame", "slice", "class", "status", "dice", "hd95", "assd"]
    import pandas as pd

    pd.testing.assert_frame_equal(base[cols].reset_index(drop=True),
                                  r.per_case[r.per_case["class"] != "LV+MY"][cols].reset_index(drop=True))
