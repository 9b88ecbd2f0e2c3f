"""NSD (normalized surface Dice): hand-computed cases, edge cases, MONAI on real masks, end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cardbench.benchmark.surface import label_surface_distances, surface_distances
from helpers import erode_lv_boundary, save_nifti


def _squares(spacing):
    ref = np.zeros((10, 10), bool)
    pred = np.zeros((10, 10), bool)
    ref[2:6, 2:6] = True
    pred[2:6, 3:7] = True
    return ref, pred


def test_two_squares_by_hand():
    # 4x4 squares, the prediction one column to the right; each boundary has 12 pixels.
    # isotropic 1 mm: per direction 6 distances are 0 (shared top/bottom rows and corners) and 6 are 1 mm
    ref, pred = _squares((1.0, 1.0))
    assert surface_distances(ref, pred, (1.0, 1.0), nsd_tolerance_mm=0.5).nsd == pytest.approx(12 / 24)
    assert surface_distances(ref, pred, (1.0, 1.0), nsd_tolerance_mm=1.0).nsd == pytest.approx(1.0)
    # rows 1 mm, columns 2 mm: per direction 6 distances of 0, 2 of 1 mm (to the neighbouring row), 4 of 2 mm
    sd = surface_distances(ref, pred, (1.0, 2.0), nsd_tolerance_mm=1.5)
    assert sd.nsd == pytest.approx((6 + 2) * 2 / 24) and sd.nsd_tolerance_mm == 1.5
    assert surface_distances(ref, pred, (1.0, 2.0), nsd_tolerance_mm=0.9).nsd == pytest.approx(12 / 24)
    assert surface_distances(ref, pred, (1.0, 2.0), nsd_tolerance_mm=2.5).nsd == pytest.approx(1.0)
    # the other distances do not change when NSD is asked for
    a, b = surface_distances(ref, pred, (1.0, 2.0)), sd
    assert (a.hd, a.hd95, a.assd, a.masd) == (b.hd, b.hd95, b.assd, b.masd)


def test_distance_equal_to_tau_counts_as_within():
    # single voxels 3 voxels apart along the 2 mm axis: the only distance is 6 mm in both directions
    ref = np.zeros((5, 8, 4), bool)
    pred = np.zeros((5, 8, 4), bool)
    ref[2, 2, 1] = True
    pred[2, 5, 1] = True
    assert surface_distances(ref, pred, (1.0, 2.0, 3.0), nsd_tolerance_mm=5.99).nsd == 0.0
    assert surface_distances(ref, pred, (1.0, 2.0, 3.0), nsd_tolerance_mm=6.0).nsd == 1.0


def test_edge_cases_both_empty_nan_one_side_zero():
    empty = np.zeros((6, 6), bool)
    blob = empty.copy()
    blob[2:4, 2:4] = True
    assert np.isnan(surface_distances(empty, empty, (1.0, 1.0), nsd_tolerance_mm=2.0).nsd)
    sd = surface_distances(blob, empty, (1.0, 1.0), nsd_tolerance_mm=2.0)
    assert sd.status == "pred_empty" and sd.nsd == 0.0
    assert surface_distances(empty, blob, (1.0, 1.0), nsd_tolerance_mm=2.0).nsd == 0.0


def test_per_class_tolerance_and_bad_tolerance():
    ref, pred = _squares((1.0, 1.0))
    lab_r = ref.astype(np.uint8) + 0
    lab_p = pred.astype(np.uint8)
    lab_r2 = np.where(np.roll(ref, 4, axis=0), 2, lab_r).astype(np.uint8)
    lab_p2 = np.where(np.roll(pred, 4, axis=0), 2, lab_p).astype(np.uint8)
    res = label_surface_distances(lab_r2, lab_p2, (1.0, 1.0), labels=[1, 2], metrics=("nsd",),
                                  params={"nsd": {"tolerance_mm": [0.5, 1.0]}})
    # each class at its own tolerance equals the binary function of that class at that tolerance;
    # class 1 (the squares of the hand case) at 0.5 mm is the coincident half
    assert res["images"][0, 0, 0] == pytest.approx(0.5)
    for ci, (lab, tau) in enumerate(((1, 0.5), (2, 1.0))):
        want = surface_distances(lab_r2 == lab, lab_p2 == lab, (1.0, 1.0), nsd_tolerance_mm=tau)
        assert res["images"][ci, 0, 0] == pytest.approx(want.nsd)
    same = label_surface_distances(lab_r2, lab_p2, (1.0, 1.0), labels=[1, 2], metrics=("nsd",),
                                   params={"nsd": {"tolerance_mm": 1.0}})
    assert same["images"][0, 0, 0] == pytest.approx(1.0)
    for bad in (0.0, -1.0, [1.0], float("nan")):
        with pytest.raises(ValueError, match="tolerance"):
            label_surface_distances(lab_r2, lab_p2, (1.0, 1.0), labels=[1, 2], metrics=("nsd",),
                                    params={"nsd": {"tolerance_mm": bad}})


# ------------------------------------------------------------------------------------------------
# MONAI SurfaceDiceMetric(use_subvoxels=False) on real masks


def _perturb(lab: np.ndarray, seed: int) -> np.ndarray:
    """A realistic wrong prediction (x, y, slice): LV shifted by one to two pixels, MY grown by one
    pixel into the background, the last labelled slice lost, a spurious LV blob."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = lab.copy()
    lv = np.roll(lab == 1, shift=(int(rng.integers(-2, 3)), 1), axis=(0, 1))
    out[lab == 1] = 0
    my = ndimage.binary_dilation(lab == 2, structure=ndimage.generate_binary_structure(3, 1)[..., 1:2]) & (out == 0)
    out[my] = 2
    out[lv] = 1
    labelled = np.flatnonzero(out.any(axis=(0, 1)))
    if labelled.size > 2:
        out[:, :, labelled[-1]] = 0
    out[5:8, 5:8, labelled[0]] = 1
    return out


def _monai_nsd(ref, pred, sp, n_classes, tau):
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    import warnings

    from monai.metrics import SurfaceDiceMetric

    torch.set_num_threads(1)
    oh = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a.astype(np.int64)), n_classes + 1).movedim(-1, 0)[None]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = SurfaceDiceMetric(class_thresholds=[float(tau)] * n_classes, include_background=False,
                              reduction="none", use_subvoxels=False)
        return m(oh(pred), oh(ref), spacing=[float(s) for s in sp]).double().numpy()[0]


def _check(cases, n_classes, tau):
    checked = one_sided = 0
    for i, (name, ref, sp) in enumerate(cases):
        pred = _perturb(ref, i)
        ours = label_surface_distances(ref, pred, sp, labels=list(range(1, n_classes + 1)), metrics=("nsd",),
                                       params={"nsd": {"tolerance_mm": tau}})
        want = _monai_nsd(ref, pred, sp, n_classes, tau)
        for ci in range(n_classes):
            if ours["volume_status"][ci] == "ok":
                assert abs(ours["volume"][ci, 0] - want[ci]) <= 1e-6, (name, ci)
                checked += 1
        for s in range(ref.shape[2]):
            st = ours["images_status"][:, s]
            if (st == "both_empty").all():
                continue
            want = _monai_nsd(ref[..., s], pred[..., s], sp[:2], n_classes, tau)
            for ci in range(n_classes):
                if st[ci] == "ok":
                    assert abs(ours["images"][ci, s, 0] - want[ci]) <= 1e-6, (name, ci, s)
                    checked += 1
                elif st[ci] in ("ref_empty", "pred_empty"):
                    # MONAI: one side empty is 0, the value cardbench's policy gives it ("worst")
                    assert want[ci] == 0.0
                    one_sided += 1
    return checked, one_sided


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_prepared) -> Path:
    """The Sunnybrook sample prepared from the raw DICOM and contours shipped in cardbench (once per
    test run, conftest; read only)."""
    return sunnybrook_prepared


def _sunnybrook_volumes(root: Path, n: int | None = None):
    from cardbench.datasets.io import read_nifti_mask

    out = []
    for p in sorted((root / "labels").rglob("*.nii.gz"))[:n]:
        img = read_nifti_mask(p)
        out.append((p.name, img.array.astype(np.uint8), img.spacing))
    return out


@pytest.mark.parametrize("tau", [2.0, 1.0, 5.0])
def test_matches_monai_on_sunnybrook_volumes(sunnybrook, tau):
    """Real NIfTI label volumes (1.29-1.37 mm pixels, 8-10 mm slices) against perturbed copies."""
    checked, one_sided = _check(_sunnybrook_volumes(sunnybrook, 4), 2, tau)
    assert checked > 20 and one_sided > 0


def test_matches_monai_on_kaggle_manual_masks(shared_data):
    """The seed's manual Kaggle masks (PNG, spacing from patient_dimensions.tsv), stacked per frame."""
    import pandas as pd
    from PIL import Image

    dims = pd.read_csv(shared_data / "cmr-seg-tl/analysis/kaggle/patient_dimensions.tsv", sep="\t",
                       dtype={"pid": str}).set_index("pid")
    root = shared_data / "cmr-seg-tl/data/kaggle/manual/own_masks"
    cases = []
    for pdir in sorted(root.iterdir())[:2]:
        frames: dict[int, list] = {}
        for f in sorted(pdir.glob("*.png")):
            _, fr, sl = f.stem.split("-")
            frames.setdefault(int(fr[5:]), []).append((int(sl[5:]), np.array(Image.open(f))))
        d = dims.loc[pdir.name]
        sp = (float(d["pixelSpacingY"]), float(d["pixelSpacingX"]), float(d["sliceSpacing"]))
        fr = sorted(frames)[0]
        stack = np.stack([a for _, a in sorted(frames[fr], key=lambda t: t[0])], axis=-1).astype(np.uint8)
        cases.append((f"{pdir.name}-frame{fr}", stack, sp))
    checked, _ = _check(cases, 2, 2.0)
    assert checked >= 15


# ------------------------------------------------------------------------------------------------
# end to end: cardbench score


def _write_pair(sunnybrook: Path, tmp: Path, n: int = 4):
    """Sunnybrook reference volumes and predictions whose LV boundary pixels became MY."""
    from cardbench.datasets.io import read_nifti_mask
    import nibabel as nib

    ref_dir, pred_dir = tmp / "ref", tmp / "pred"
    arrays = {}
    for p in sorted((sunnybrook / "labels").rglob("*.nii.gz"))[:n]:
        img = nib.load(p)
        lab = read_nifti_mask(p).array.astype(np.uint8)
        pred = erode_lv_boundary(lab, 2)
        save_nifti(ref_dir / p.name, lab, img.affine)
        save_nifti(pred_dir / p.name, pred, img.affine)
        arrays[p.name] = (lab, pred, img.header.get_zooms()[:3])
    return ref_dir, pred_dir, arrays


def test_score_writes_nsd_per_image_and_volume_equal_to_monai(sunnybrook, tmp_path):
    from cardbench.benchmark import score

    ref_dir, pred_dir, arrays = _write_pair(sunnybrook, tmp_path)
    res = score(pred_dir, ref_dir, classes=["LV", "MY"], progress=False)
    pc = res.per_case
    assert "nsd" in pc.columns and set(pc["level"]) == {"image", "volume"}
    assert res.summary["protocol"]["nsd_tolerance_mm"] == 2.0
    agg = res.aggregates
    assert not agg[(agg["metric"] == "nsd") & (agg["grouping"] == "all")].empty
    checked = 0
    for name, (lab, pred, sp) in arrays.items():
        subj, fr = name[:-len(".nii.gz")].rsplit("_frame", 1)
        want = _monai_nsd(lab, pred, sp, 2, 2.0)
        for ci, cls in enumerate(("LV", "MY")):
            r = pc[(pc["level"] == "volume") & (pc["class"] == cls) & (pc["subject"] == subj) & (pc["frame"] == int(fr))]
            if r["status"].iloc[0] == "ok":
                assert abs(r["nsd"].iloc[0] - want[ci]) <= 1e-6
                checked += 1
    assert checked >= 4
    # a wider tolerance changes the values and is recorded
    res3 = score(pred_dir, ref_dir, classes=["LV", "MY"], progress=False, nsd_tolerance=0.5)
    assert res3.summary["protocol"]["nsd_tolerance_mm"] == 0.5
    v2 = pc[pc["level"] == "volume"]["nsd"].to_numpy()
    v3 = res3.per_case[res3.per_case["level"] == "volume"]["nsd"].to_numpy()
    assert np.nanmean(v3) < np.nanmean(v2)


def test_adding_nsd_changes_no_other_value(sunnybrook, tmp_path):
    """NSD is an addition to cardbench-v1: every other per-case value and aggregate is identical to
    the protocol without it."""
    from cardbench.benchmark import score
    from cardbench.benchmark.protocols import CARDBENCH_V1

    ref_dir, pred_dir, _ = _write_pair(sunnybrook, tmp_path, n=3)
    policy = {m: dict(r) for m, r in CARDBENCH_V1.policy.items() if m != "nsd"}
    v10 = dataclasses.replace(CARDBENCH_V1, added_metrics=(), policy=policy, parameters={})
    new = score(pred_dir, ref_dir, classes=["LV", "MY"], progress=False)
    old = score(pred_dir, ref_dir, classes=["LV", "MY"], progress=False, protocol=v10)
    assert "nsd" not in old.per_case.columns
    cols = [c for c in old.per_case.columns]
    assert new.per_case[cols].equals(old.per_case)
    a_new = new.aggregates[new.aggregates["metric"] != "nsd"].reset_index(drop=True)
    assert a_new.equals(old.aggregates.reset_index(drop=True))
