"""The one home of the clinical formulas (values worked out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardbench import formulas
from cardbench.benchmark import clinical
from cardbench.datasets import phases


def test_voxel_volume_from_spacing_and_affine_agree():
    # 1.25 x 1.25 x 8 mm = 12.5 mm^3 = 0.0125 mL
    assert formulas.voxel_volume_ml((1.25, 1.25, 8.0)) == pytest.approx(0.0125)
    assert formulas.voxel_volume_ml(affine=np.diag([1.25, -1.25, 8.0, 1.0])) == pytest.approx(0.0125)
    # a shear keeps the determinant: [[1, 0.5], [0, 1]] has det 1
    sheared = np.array([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    assert formulas.voxel_volume_ml(affine=sheared) == pytest.approx(0.002)
    for bad in ({}, {"spacing": (1, 1, 1), "affine": np.eye(4)}):
        with pytest.raises(ValueError, match="exactly one"):
            formulas.voxel_volume_ml(**bad)
    with pytest.raises(ValueError, match="singular"):
        formulas.voxel_volume_ml(affine=np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        formulas.voxel_volume_ml(affine=np.diag([1.0, np.nan, 1.0, 1.0]))


def test_every_part_uses_the_same_definitions():
    # benchmark and datasets re-export, never redefine
    assert clinical.ejection_fraction is formulas.ejection_fraction
    assert clinical.voxel_volume_ml is formulas.voxel_volume_ml
    # the density is one object re-exported (a redefinition with the same value would be another
    # object and fail here), and its value is the literature's 1.05 g/mL
    assert clinical.MYOCARDIAL_DENSITY_G_PER_ML is formulas.MYOCARDIAL_DENSITY_G_PER_ML
    assert phases.MYOCARDIUM_DENSITY is formulas.MYOCARDIAL_DENSITY_G_PER_ML
    assert formulas.MYOCARDIAL_DENSITY_G_PER_ML == 1.05
    # the converters' strict EF agrees with the formula where both are defined: (120 - 48) / 120 = 60 %
    assert phases.ejection_fraction(120.0, 48.0) == pytest.approx(60.0)
    assert float(formulas.ejection_fraction(120.0, 48.0)) == pytest.approx(60.0)
    assert math.isnan(float(formulas.ejection_fraction(-1.0, 0.0)))
    with pytest.raises(phases.PhaseError):
        phases.ejection_fraction(-1.0, 0.0)
    # LV mass: 100 mL x 1.05 g/mL = 105 g
    assert float(formulas.lv_mass(100.0)) == pytest.approx(105.0)
