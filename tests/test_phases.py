"""ED/ES frames and volumes from label maps (values worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from cardbench.datasets.phases import (PhaseError, class_volume_ml, ed_es_frames, ed_es_from_volumes,
                                       ejection_fraction, voxel_volume_ml)


def test_voxel_and_class_volume():
    aff = np.diag([1.25, 1.25, 8.0, 1.0])
    assert voxel_volume_ml(aff) == pytest.approx(1.25 * 1.25 * 8 / 1000)
    # an oblique affine with the same voxel size: rotation does not change the volume
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert voxel_volume_ml(rot @ aff) == pytest.approx(0.0125)
    lab = np.zeros((4, 4, 2), np.uint8)
    lab[:2, :2, 0] = 1          # 4 LV voxels
    lab[2:, 2:, 1] = 2          # 4 MY voxels
    assert class_volume_ml(lab, aff) == pytest.approx(4 * 0.0125)
    assert class_volume_ml(lab, aff, "MY") == pytest.approx(4 * 0.0125)


def test_ed_es_from_curve_and_given():
    assert ed_es_from_volumes({1: 150.0, 2: 160.0, 3: 90.0, 4: 100.0}) == (2, 3)
    assert ed_es_from_volumes({1: 5.0, 2: 5.0, 3: 1.0}) == (1, 3)  # tie: earliest frame
    with pytest.raises(PhaseError):
        ed_es_from_volumes({1: 3.0})
    with pytest.raises(PhaseError, match="same LV volume"):
        ed_es_from_volumes({1: 3.0, 2: 3.0})
    aff = np.eye(4)
    labs = {f: (np.pad(np.ones((n, 1, 1), np.uint8), ((0, 5 - n), (0, 0), (0, 0))), aff)
            for f, n in {1: 3, 2: 5, 3: 1}.items()}
    assert ed_es_frames(label_volumes=labs, n_frames=3) == (2, 3, "lv-volume-curve")
    assert ed_es_frames(given=(7, 2), label_volumes=labs) == (7, 2, "dataset")
    with pytest.raises(PhaseError, match="every frame"):
        ed_es_frames(label_volumes=labs, n_frames=20)


def test_ejection_fraction():
    assert ejection_fraction(200.0, 150.0) == pytest.approx(25.0)
    with pytest.raises(PhaseError):
        ejection_fraction(0.0, 0.0)
