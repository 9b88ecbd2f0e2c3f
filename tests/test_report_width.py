"""The score table reads at 80 and 120 columns: no group label, class, value or interval is cut.

Real data: the prepared Sunnybrook sample scored against its labels with the LV eroded by one pixel
(so values and intervals differ from 1 and 0), through `cardbench score` with COLUMNS set."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from cardbench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def eroded(sunnybrook_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("eroded")
    for p in sorted((sunnybrook_prepared / "labels").rglob("*.nii.gz")):
        img = nib.load(p)
        lab = np.asanyarray(img.dataobj)
        lv = lab == 1
        er = np.stack([ndimage.binary_erosion(lv[:, :, s]) for s in range(lv.shape[2])], axis=2)
        pred = lab.copy()
        pred[lv & ~er] = 2
        nib.save(nib.Nifti1Image(pred.astype(np.uint8), img.affine, img.header), out / p.name)
    return out


@pytest.mark.parametrize("columns", [80, 120])
def test_score_table_fits_the_terminal(eroded, sunnybrook_prepared, tmp_path, columns):
    res = runner.invoke(app, ["score", str(eroded), "--reference", str(sunnybrook_prepared),
                              "--out", str(tmp_path / "r")], env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= columns
    assert "…" not in out
    # ED and ES rows can be told apart, both splits named in full
    for label in ("phase=ED", "phase=ES", "split=train", "split=test"):
        assert re.search(rf"^\s*{label}\s+(LV|MY)\s", out, re.M), label
    # every aggregate row of summary.json appears with its mean and full interval on one line
    import pandas as pd

    agg = pd.read_csv(tmp_path / "r" / "aggregates.csv")
    row = agg[(agg.grouping == "phase") & (agg.group == "ED") & (agg["class"] == "LV") & (agg.metric == "dice")].iloc[0]
    want = f"{row['mean']:.3f}   [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    assert any(ln.lstrip().startswith("phase=ED") and " LV " in ln and want in ln for ln in lines), want
    # the clinical table: every interval closed on the line it opened
    for ln in lines:
        assert ln.count("[") == ln.count("]"), ln


def test_wide_terminal_keeps_one_table(eroded, sunnybrook_prepared, tmp_path):
    res = runner.invoke(app, ["score", str(eroded), "--reference", str(sunnybrook_prepared),
                              "--out", str(tmp_path / "r")], env={"COLUMNS": "250", "TERM": "dumb"})
    assert res.exit_code == 0, res.stderr
    header = [ln for ln in res.stdout.splitlines() if "dice [95% CI]" in ln]
    assert header and "hd95 [95% CI]" in header[0]  # one column per metric
    assert "…" not in res.stdout
