"""Surface distances (HD, HD95, ASSD, MASD): hand-computed cases, edge cases, and cross-checks
against MONAI and MedPy on real masks (Sunnybrook sample, Kaggle manual masks)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cardbench.benchmark.surface import (
    DISTANCE_METRICS, SurfaceDistances, boundary, directed_distances, fov_diagonal_mm,
    label_surface_distances, surface_distances,
)


def values(sd: SurfaceDistances) -> list[float]:
    return [sd.hd, sd.hd95, sd.assd, sd.masd]


# ------------------------------------------------------------------------------------------------
# hand-computed cases


def test_single_voxels_3d_anisotropic():
    # one voxel each, 3 voxels apart along axis 1 whose spacing is 2 mm: every distance is 6 mm
    ref = np.zeros((5, 8, 4), bool)
    pred = np.zeros((5, 8, 4), bool)
    ref[2, 2, 1] = True
    pred[2, 5, 1] = True
    sd = surface_distances(ref, pred, (1.0, 2.0, 3.0))
    assert sd.status == "ok" and sd.n_ref == 1 and sd.n_pred == 1
    assert values(sd) == pytest.approx([6.0, 6.0, 6.0, 6.0], abs=1e-12)
    # a diagonal offset (1, 1, 1) voxels: sqrt(1^2 + 2^2 + 3^2) mm
    pred[:] = False
    pred[3, 3, 2] = True
    assert values(surface_distances(ref, pred, (1.0, 2.0, 3.0))) == pytest.approx([math.sqrt(14.0)] * 4)


def test_two_squares_2d_anisotropic():
    """4 x 4 squares, the prediction 2 rows lower; spacing 1.5 mm per row, 1.0 mm per column.

    Boundary of each square: its 12 edge pixels. Directed distances of the prediction's edge
    pixels to the reference's (by hand, row r / column c):
      row 4: c=2 and c=5 lie on the reference's side columns -> 0, 0; c=3, c=4 -> 1 column = 1.0
      rows 5, 6 at c=2, 5: row 5 lies on the reference's bottom row -> 0, 0; row 6 -> 1 row = 1.5
      row 7: 2 rows below the reference's bottom row -> 3.0 (x4)
    so d(P->R) = {0 x4, 1.0 x2, 1.5 x2, 3.0 x4}; by symmetry d(R->P) is the same multiset.
    HD = 3; p95 of 12 sorted values: index 0.95 * 11 = 10.45 between 3.0 and 3.0 -> 3;
    ASSD = MASD = (2 * 1.0 + 2 * 1.5 + 4 * 3.0) / 12 = 17 / 12.
    """
    ref = np.zeros((10, 8), np.uint8)
    pred = np.zeros((10, 8), np.uint8)
    ref[2:6, 2:6] = 1
    pred[4:8, 2:6] = 1
    assert boundary(ref).sum() == 12
    d = np.sort(directed_distances(pred, ref, (1.5, 1.0)))
    assert d.tolist() == pytest.approx([0, 0, 0, 0, 1.0, 1.0, 1.5, 1.5, 3.0, 3.0, 3.0, 3.0])
    sd = surface_distances(ref, pred, (1.5, 1.0))
    assert values(sd) == pytest.approx([3.0, 3.0, 17 / 12, 17 / 12], abs=1e-12)
    # the same squares on a grid with the axes' spacing swapped: the shift is now 2 x 1.0 mm
    sd2 = surface_distances(ref, pred, (1.0, 1.5))
    assert sd2.hd == pytest.approx(2.0)


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
    """Reference: one pixel at (0, 0). Prediction: (0, 0) and (0, 10). Spacing 1 mm.

    d(P->R) = [0, 10], d(R->P) = [0].
    HD = 10. Directed 95th percentiles (linear): P->R: 0 + 0.95 * (10 - 0) = 9.5; R->P: 0 -> HD95 9.5.
    (MedPy's pooled percentile of [0, 0, 10] would be 0.9 * 10 = 9.0.)
    ASSD = (0 + 10 + 0) / 3 = 10 / 3; MASD = ((0 + 10) / 2 + 0) / 2 = 2.5.
    """
    ref = np.zeros((3, 12), bool)
    pred = np.zeros((3, 12), bool)
    ref[0, 0] = True
    pred[0, 0] = pred[0, 10] = True
    sd = surface_distances(ref, pred, (1.0, 1.0))
    assert values(sd) == pytest.approx([10.0, 9.5, 10 / 3, 2.5], abs=1e-12)


def test_boundary_counts_the_array_edge_as_background():
    m = np.ones((3, 4, 2), bool)  # every voxel touches the edge of the array
    assert boundary(m).all()
    m = np.ones((5, 5), bool)
    b = boundary(m)
    assert b.sum() == 16 and not b[1:4, 1:4].any()
    # face neighbours only: the centre of a plus-shaped region is interior, its arms are boundary
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    assert boundary(plus).sum() == 4 and not boundary(plus)[2, 2]


def test_same_shape_on_two_slice_spacings_gives_the_same_mm():
    """The same physical objects sampled with 2 mm and with 6 mm slices.

    Plates one voxel (1.5 mm) thick along x, 3 voxels apart along x and 36 mm tall: every voxel is
    on the boundary and lies 3 x 1.5 = 4.5 mm from the other plate, whatever the slice spacing.
    Boxes 36 mm tall shifted by 12 mm along the slice axis: HD = 12 mm on both grids (the top face of
    the prediction lies 12 mm above the reference's top face, and no boundary point is farther).
    """
    for sz in (2.0, 6.0):
        nz = int(36 / sz)
        ref = np.zeros((8, 6, nz), bool)
        pred = np.zeros((8, 6, nz), bool)
        ref[2, 1:5, :] = True
        pred[5, 1:5, :] = True
        assert values(surface_distances(ref, pred, (1.5, 1.0, sz))) == pytest.approx([4.5] * 4, abs=1e-12)
        shift = int(12 / sz)
        ref = np.zeros((12, 12, int(60 / sz)), bool)
        pred = np.zeros_like(ref)
        ref[2:10, 2:10, 0:nz] = True
        pred[2:10, 2:10, shift:shift + nz] = True
        assert surface_distances(ref, pred, (1.5, 1.5, sz)).hd == pytest.approx(12.0, abs=1e-12)
        # without the spacing the value would be in voxels: a different number
        assert surface_distances(ref, pred, (1.0, 1.0, 1.0)).hd == pytest.approx(shift)


def test_block_shifted_by_one_slice_3d_and_per_image():
    # 2 x 2 x 1 blocks, the prediction one slice (5 mm) above: all voxels are boundary, all 5 mm apart
    ref = np.zeros((6, 6, 4), np.uint8)
    pred = np.zeros((6, 6, 4), np.uint8)
    ref[2:4, 2:4, 1] = 1
    pred[2:4, 2:4, 2] = 1
    out = label_surface_distances(ref, pred, (1.0, 1.0, 5.0), labels=[1])
    assert out["volume"][0].tolist() == pytest.approx([5.0] * 4)
    assert out["volume_status"][0] == "ok"
    # per image: slice 1 has only the reference, slice 2 only the prediction, slices 0 and 3 neither
    assert out["images_status"][0].tolist() == ["both_empty", "pred_empty", "ref_empty", "both_empty"]
    assert np.isnan(out["images"][0]).all()  # the caller applies its worst-case policy


def test_empty_sides_status_and_worst_case():
    ref = np.zeros((4, 5, 3), bool)
    pred = np.zeros((4, 5, 3), bool)
    sd = surface_distances(ref, pred, (1.0, 2.0, 3.0))
    assert sd.status == "both_empty" and all(math.isnan(v) for v in values(sd))
    ref[1, 1, 1] = True
    diag = math.sqrt((4 * 1.0) ** 2 + (5 * 2.0) ** 2 + (3 * 3.0) ** 2)  # field-of-view diagonal
    assert fov_diagonal_mm((4, 5, 3), (1.0, 2.0, 3.0)) == pytest.approx(diag)
    sd = surface_distances(ref, pred, (1.0, 2.0, 3.0))
    assert sd.status == "pred_empty" and values(sd) == pytest.approx([diag] * 4)
    sd = surface_distances(pred, ref, (1.0, 2.0, 3.0))
    assert sd.status == "ref_empty" and values(sd) == pytest.approx([diag] * 4)
    assert surface_distances(pred, ref, (1.0, 2.0, 3.0), worst=99.0).hd == 99.0


def test_bad_input_is_refused():
    a = np.zeros((4, 4, 2), bool)
    with pytest.raises(ValueError, match="shape mismatch"):
        surface_distances(a, np.zeros((4, 4, 3), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="one voxel size in mm per array axis"):
        surface_distances(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="finite and positive"):
        surface_distances(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="up to 4 distinct"):
        label_surface_distances(a, a, (1, 1, 1), labels=[1, 1])


def test_far_blob_is_exact_beyond_the_search_radius():
    """A 1-voxel prediction blob 120 voxels away (beyond the neighbour search radius) is answered
    exactly: the distance from the blob to the reference square is 120 x 1.4 mm minus nothing."""
    ref = np.zeros((200, 20, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[10:14, 5:9, 1] = 1
    pred[10:14, 5:9, 1] = 1
    pred[133, 6, 1] = 1  # 120 rows below the reference's last row (13)
    out = label_surface_distances(ref, pred, (1.4, 1.4, 8.0), labels=[1])
    assert out["volume"][0, 0] == pytest.approx(120 * 1.4)  # HD
    assert out["images"][0, 1, 0] == pytest.approx(120 * 1.4)
    # 12 + 1 prediction boundary voxels in 2D, 16 + 1 in 3D (the 1-slice square is all boundary)
    d = directed_distances(pred[..., 1], ref[..., 1], (1.4, 1.4))
    assert sorted(d)[-1] == pytest.approx(168.0) and (np.asarray(sorted(d)[:-1]) == 0).all()


def test_engine_matches_plain_reference_implementation_on_random_masks():
    """The vectorised search against the plain k-d-tree implementation, random blobs and spacings."""
    rng = np.random.default_rng(5)
    from scipy import ndimage

    for trial in range(12):
        shape = (int(rng.integers(8, 40)), int(rng.integers(8, 40)), int(rng.integers(1, 6)))
        sp = tuple(float(x) for x in rng.uniform(0.4, 9.0, 3))
        ref = ndimage.binary_opening(rng.random(shape) < 0.45, iterations=1)
        pred = ndimage.binary_opening(rng.random(shape) < 0.45, iterations=1)
        if not ref.any() or not pred.any():
            continue
        got = surface_distances(ref, pred, sp)
        d1 = directed_distances(pred, ref, sp)
        d2 = directed_distances(ref, pred, sp)
        want = [max(d1.max(), d2.max()), max(np.percentile(d1, 95), np.percentile(d2, 95)),
                (d1.sum() + d2.sum()) / (d1.size + d2.size), (d1.mean() + d2.mean()) / 2]
        assert values(got) == pytest.approx(want, abs=1e-9), (trial, shape, sp)
        per = label_surface_distances(ref.astype(np.uint8), pred.astype(np.uint8), sp, labels=[1])
        for s in range(shape[2]):
            if per["images_status"][0, s] == "ok":
                e1 = directed_distances(pred[..., s], ref[..., s], sp[:2])
                e2 = directed_distances(ref[..., s], pred[..., s], sp[:2])
                want = [max(e1.max(), e2.max()), max(np.percentile(e1, 95), np.percentile(e2, 95)),
                        (e1.sum() + e2.sum()) / (e1.size + e2.size), (e1.mean() + e2.mean()) / 2]
                assert per["images"][0, s].tolist() == pytest.approx(want, abs=1e-9)


# ------------------------------------------------------------------------------------------------
# real masks, against MONAI and MedPy


def _perturb(lab: np.ndarray, seed: int) -> np.ndarray:
    """A realistic wrong prediction of a label volume (x, y, slice): LV shifted by one pixel, MY grown
    by one pixel into the background, the last labelled slice lost, a spurious LV blob."""
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


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_prepared) -> Path:
    """The Sunnybrook sample prepared from the raw DICOM and contours shipped in cardbench (once per run)."""
    return sunnybrook_prepared


def _sunnybrook_volumes(root: Path):
    from cardbench.datasets.io import read_nifti_mask

    out = []
    for p in sorted((root / "labels").rglob("*.nii.gz")):
        img = read_nifti_mask(p)
        out.append((p.name, img.array.astype(np.uint8), img.spacing))
    return out


def _kaggle_volumes(shared: Path, n_patients: int = 3):
    """Kaggle manual masks (PNG, rows x cols, labels 0/1/2) stacked per frame, spacing from
    patient_dimensions.tsv (pixelSpacingY for rows, pixelSpacingX for columns, sliceSpacing)."""
    import pandas as pd
    from PIL import Image

    dims = pd.read_csv(shared / "cmr-seg-tl/analysis/kaggle/patient_dimensions.tsv", sep="\t", dtype={"pid": str})
    dims = dims.set_index("pid")
    root = shared / "cmr-seg-tl/data/kaggle/manual/own_masks"
    out = []
    for pdir in sorted(root.iterdir())[:n_patients]:
        frames: dict[int, list] = {}
        for f in sorted(pdir.glob("*.png")):
            _, fr, sl = f.stem.split("-")
            frames.setdefault(int(fr[5:]), []).append((int(sl[5:]), np.array(Image.open(f))))
        d = dims.loc[pdir.name]
        sp = (float(d["pixelSpacingY"]), float(d["pixelSpacingX"]), float(d["sliceSpacing"]))
        fr = sorted(frames)[0]
        stack = np.stack([a for _, a in sorted(frames[fr], key=lambda t: t[0])], axis=-1).astype(np.uint8)
        out.append((f"{pdir.name}-frame{fr}", stack, sp))
    return out


def _monai(ref, pred, sp, n_classes):
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    import warnings

    from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric

    torch.set_num_threads(1)
    oh = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a.astype(np.int64)), n_classes + 1).movedim(-1, 0)[None]  # noqa: E731
    y, yp = oh(ref), oh(pred)
    sp = [float(s) for s in sp]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = HausdorffDistanceMetric(include_background=False, reduction="none")(yp, y, spacing=sp).numpy()[0]
        hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            yp, y, spacing=sp).numpy()[0]
        assd = SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(
            yp, y, spacing=sp).numpy()[0]
    return hd, hd95, assd


def _check_against_monai(cases, n_classes):
    checked = 0
    for name, ref, sp in cases:
        pred = _perturb(ref, checked)
        labels = list(range(1, n_classes + 1))
        ours = label_surface_distances(ref, pred, sp, labels=labels)
        hd, hd95, assd = _monai(ref, pred, sp, n_classes)
        for ci in range(n_classes):
            if ours["volume_status"][ci] != "ok":
                continue
            # MONAI returns float32 distances
            assert ours["volume"][ci, 0] == pytest.approx(hd[ci], abs=1e-4), name
            assert ours["volume"][ci, 1] == pytest.approx(hd95[ci], abs=1e-4), name
            assert ours["volume"][ci, 2] == pytest.approx(assd[ci], abs=1e-4), name
            checked += 1
        # per image: MONAI on each 2D plane with the in-plane spacing
        for s in range(ref.shape[2]):
            if not (ours["images_status"][:, s] == "ok").any():
                continue
            hd, hd95, assd = _monai(ref[..., s], pred[..., s], sp[:2], n_classes)
            for ci in range(n_classes):
                if ours["images_status"][ci, s] == "ok":
                    assert ours["images"][ci, s, :3].tolist() == pytest.approx([hd[ci], hd95[ci], assd[ci]], abs=1e-4)
                    checked += 1
    return checked


@pytest.mark.slow
def test_matches_monai_on_sunnybrook_volumes(sunnybrook):
    """Real NIfTI label volumes (1.29-1.37 mm pixels, 8-10 mm slices) against perturbed copies."""
    cases = _sunnybrook_volumes(sunnybrook)
    assert len(cases) == 10
    assert _check_against_monai(cases, 2) > 50


@pytest.mark.slow
def test_matches_monai_on_kaggle_manual_masks(shared_data):
    assert _check_against_monai(_kaggle_volumes(shared_data), 2) >= 30


@pytest.mark.slow
def test_medpy_agrees_where_definitions_coincide(shared_data):
    """MedPy: HD and ASSD (pooled mean, MedPy >= 0.5) coincide; its hd95 pools both directions, so
    it may differ from HD95 but never exceeds HD."""
    mb = pytest.importorskip("medpy.metric.binary")
    for name, ref, sp in _kaggle_volumes(shared_data, 2):
        pred = _perturb(ref, 1)
        ours = label_surface_distances(ref, pred, sp, labels=[1, 2])
        for ci, k in enumerate((1, 2)):
            a, b = pred == k, ref == k
            assert ours["volume"][ci, 0] == pytest.approx(mb.hd(a, b, voxelspacing=sp), abs=1e-9)
            assert ours["volume"][ci, 2] == pytest.approx(mb.assd(a, b, voxelspacing=sp), abs=1e-9)
            pooled = mb.hd95(a, b, voxelspacing=sp)
            d1 = directed_distances(a, b, sp)
            d2 = directed_distances(b, a, sp)
            assert pooled == pytest.approx(np.percentile(np.concatenate([d1, d2]), 95))
            assert ours["volume"][ci, 1] >= pooled - 1e-9


def test_distance_metric_names():
    assert DISTANCE_METRICS == ("hd", "hd95", "assd", "masd")
