"""The Parquet spool of counts records gives back exactly ``pandas.DataFrame.from_records``."""

from __future__ import annotations

import pandas as pd
import pytest

from cardbench.benchmark.casetable import COUNT_COLUMNS
from cardbench.benchmark.scoring import RowSpool


def _rec(i, frame):
    r = {"subject": f"s{i // 3}", "frame": frame, "slice": i % 3, "missing": i % 4 == 0,
         "ref_file": f"/r/s{i}.nii.gz", "pred_file": "" if i % 4 == 0 else f"/p/s{i}.nii.gz",
         "voxel_ml": 0.0125 if i % 5 else float("nan"), "fov_diag_mm": 362.0, "volume_fov_diag_mm": 400.5}
    r.update({c: (i * 7 + k) % 11 for k, c in enumerate(COUNT_COLUMNS)})
    return r


@pytest.mark.parametrize("frames", ["ints", "none", "mixed"])
def test_spool_equals_from_records(tmp_path, frames):
    recs = [_rec(i, {"ints": 1 + i % 2, "none": None, "mixed": None if i == 4 else 10}[frames]) for i in range(13)]
    spool = RowSpool(tmp_path, batch_rows=4)  # several row groups
    for a in range(0, 13, 3):
        spool.extend(recs[a:a + 3])
    got = spool.to_frame()
    assert spool.path.exists() and spool.n_rows == 13
    spool.close()
    assert not spool.path.exists()
    pd.testing.assert_frame_equal(got, pd.DataFrame.from_records(recs))


def test_empty_spool(tmp_path):
    spool = RowSpool(tmp_path)
    assert spool.to_frame().empty
    spool.close()


def _dist(i, failed):
    vol = i % 4 == 3
    return {"level": "volume" if vol else "image", "subject": f"s{i // 4}", "frame": 1, "slice": None if vol else i % 4,
            "class": "LV", "hd": float("nan") if failed else 1.5 * i, "hd95": 1.0, "assd": 0.5, "masd": 0.4,
            "distance_status": "failed" if failed else None}


@pytest.mark.parametrize("failed", [set(), {2, 7}, set(range(9))])
def test_distance_spool_equals_from_records(tmp_path, failed):
    recs = [_dist(i, i in failed) for i in range(9)]
    spool = RowSpool(tmp_path, "distances", RowSpool.DISTANCE_TYPES, batch_rows=2)
    for r in recs:
        spool.extend([r])
    assert len(spool) == 9
    got = spool.to_frame()
    spool.close()
    pd.testing.assert_frame_equal(got, pd.DataFrame.from_records(recs))
