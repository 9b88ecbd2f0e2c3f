"""Slice position: base / mid / apex thirds of the LV slices, as groups of the aggregates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark.casetable import position_sizes, slice_positions
from helpers import erode_lv_boundary, save_nifti


def test_thirds_rule_written_out():
    # n = 3k + r: r = 1 gives the middle slice to mid; r = 2 gives one more slice to each end
    assert [position_sizes(n) for n in range(1, 9)] == [
        (0, 1, 0), (1, 0, 1), (1, 1, 1), (1, 2, 1), (2, 1, 2), (2, 2, 2), (2, 3, 2), (3, 2, 3)]


def _counts(areas, subject="s1", frame=1):
    rows = []
    for s, a in enumerate(areas):
        c = {f"c{r}{p}": 0 for r in range(4) for p in range(4)}
        c["c11"] = a
        c["c00"] = 100 - a
        rows.append({"subject": subject, "frame": frame, "slice": s, "missing": False, **c})
    return pd.DataFrame(rows)


def test_base_is_the_end_with_the_larger_lv_area():
    # slices 1..5 hold LV (areas 50, 40, 30, 20, 10): 5 = 3 + 2 -> (2, 1, 2), the large end is the base
    pos = slice_positions(_counts([0, 50, 40, 30, 20, 10, 0]))
    assert pos.tolist() == ["", "base", "base", "mid", "apex", "apex", ""]
    # the same heart stored apex first
    pos = slice_positions(_counts([0, 10, 20, 30, 40, 50, 0]))
    assert pos.tolist() == ["", "apex", "apex", "mid", "base", "base", ""]
    # each volume (subject, frame) on its own; row order of the table does not matter
    both = pd.concat([_counts([5, 9, 7], frame=1), _counts([3, 8, 9, 9], frame=2)]).iloc[::-1]
    pos = dict(zip(zip(both["frame"], both["slice"]), slice_positions(both)))
    assert [pos[(1, s)] for s in range(3)] == ["apex", "mid", "base"]   # 5 < 7: slice 2 is the base
    assert [pos[(2, s)] for s in range(4)] == ["apex", "mid", "mid", "base"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, sunnybrook_prepared):
    """Real Sunnybrook volumes against LV-eroded predictions, scored under cardbench-v1."""
    import nibabel as nib

    from cardbench.benchmark import score
    from cardbench.datasets.io import read_nifti_mask

    root = tmp_path_factory.mktemp("pos")
    sb = sunnybrook_prepared  # prepared once per test run (conftest); read only
    refs = {}
    for p in sorted((sb / "labels").rglob("*.nii.gz"))[:4]:
        img = nib.load(p)
        lab = read_nifti_mask(p).array.astype(np.uint8)
        save_nifti(root / "ref" / p.name, lab, img.affine)
        save_nifti(root / "pred" / p.name, erode_lv_boundary(lab, 0), img.affine)
        refs[p.name[:-len(".nii.gz")]] = lab
    return score(root / "pred", root / "ref", classes=["LV"], progress=False), refs


def test_positions_on_real_volumes_and_their_aggregates(scored):
    res, refs = scored
    pc = res.per_case
    img = pc[pc["level"] == "image"]
    expected = {}
    for name, lab in refs.items():
        subj, fr = name.rsplit("_frame", 1)
        area = (lab == 1).sum(axis=(0, 1))
        idx = np.flatnonzero(area)
        nb, nm, na = position_sizes(idx.size)
        lab_of = ["base"] * nb + ["mid"] * nm + ["apex"] * na
        if area[idx[idx.size - na:]].sum() > area[idx[:nb]].sum():
            lab_of = lab_of[::-1]
        for s, p in zip(idx, lab_of):
            expected[(subj, int(fr), int(s))] = p
    got = {(r.subject, int(r.frame), int(r.slice)): r.position for r in img.itertuples() if r.position}
    assert got == expected and len(got) > 6
    assert (pc.loc[pc["level"] == "volume", "position"] == "").all()
    agg = res.aggregates
    pos = agg[(agg["grouping"] == "position") & (agg["metric"] == "dice")]
    assert pos["group"].tolist() == ["base", "mid", "apex"]
    # per-image Dice of each position, mean per subject first, then over subjects (cardbench-v1)
    for p in ("base", "mid", "apex"):
        rows = img[img["position"] == p]
        want = rows.groupby("subject")["dice"].mean().mean()
        r = pos[pos["group"] == p].iloc[0]
        assert r["mean"] == pytest.approx(want) and r["n_values"] == rows["dice"].notna().sum()
    # the whole-volume figures are untouched by the new grouping
    a = agg[(agg["grouping"] == "all") & (agg["metric"] == "dice")].iloc[0]
    vol = pc[pc["level"] == "volume"]
    assert a["mean"] == pytest.approx(vol.groupby("subject")["dice"].mean().mean())


def test_positions_in_the_printed_report_and_leaderboard_ranking(scored):
    from rich.console import Console

    from cardbench.benchmark.leaderboard import parse_metric, rank_table
    from cardbench.benchmark.report import summary_table

    res, _ = scored
    con = Console(width=250, record=True)
    con.print(summary_table(res))
    text = con.export_text()
    assert "position=base" in text and "position=apex" in text
    assert parse_metric("dice_lv_apex") == ("dice", "LV", "apex")
    agg = res.aggregates.assign(entry="a")
    entries = pd.DataFrame({"entry": ["a"]})
    ranked = rank_table(agg, entries, "dice_lv_apex")
    want = agg[(agg["grouping"] == "position") & (agg["group"] == "apex") & (agg["metric"] == "dice")]["mean"].iloc[0]
    assert ranked["dice_LV"].iloc[0] == pytest.approx(want)
