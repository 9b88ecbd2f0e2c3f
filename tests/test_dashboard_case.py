"""Dashboard, case and clinical views on real images (the Sunnybrook sample with the LV eroded by one
pixel, the lost rim labelled MY): the URL's &frame=/&slice=, the error overlay, the contour order at
ED, Bland-Altman labels inside the plot, the root URL opening the Leaderboard page."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")
from streamlit.testing.v1 import AppTest  # noqa: E402

from cardbench.benchmark import leaderboard as L  # noqa: E402
from helpers import erode_lv_boundary  # noqa: E402

from pathlib import Path  # noqa: E402

APP = str(Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def board(sunnybrook_prepared, tmp_path_factory):
    from cardbench.benchmark import score

    tmp = tmp_path_factory.mktemp("sbcase")
    pred = tmp / "pred"
    pred.mkdir()
    for f in sorted((sunnybrook_prepared / "labels").rglob("*.nii.gz")):
        img = nib.load(f)
        nib.save(nib.Nifti1Image(erode_lv_boundary(np.asarray(img.dataobj).astype(np.uint8), to=2), img.affine,
                                 img.header), pred / f.name)
    root = tmp / "leaderboard"
    root.mkdir()
    (root / L.MARKER).write_text(json.dumps({"format": L.FORMAT_VERSION,
                                             "prefilled": {k: {} for k in L.PREFILL_SOURCES}}))
    e = L.add_entry(score(pred, sunnybrook_prepared, protocol="cardbench-v1", progress=False), root, "lv-eroded")
    return sunnybrook_prepared, pred, root, e.benchmark


def run(page, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def specs(at):
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def test_case_page_honours_frame_and_slice_in_the_url_and_marks_errors(board, monkeypatch):
    ref, pred, root, bench = board
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    monkeypatch.setenv("CARDBENCH_DASHBOARD_ALLOW", os.pathsep.join([str(ref), str(pred)]))  # --allow-root
    subj = pd.read_csv(ref / "subjects.csv", dtype={"subject": str}).set_index("subject")
    ed = int(subj.loc["SCD0000101", "ed_frame"])
    es = int(subj.loc["SCD0000101", "es_frame"])
    assert sorted([ed, es])[0] == es  # the slider starts at the first frame (ES): the URL must move it
    at = run("case", benchmark=bench, entry="lv-eroded", subject="SCD0000101", frame=str(ed), slice="3")
    assert at.select_slider(key="case_frame").value == ed and at.select_slider(key="case_slice").value == 3
    assert any(f"frame {ed}" in h.value and "slice 3" in h.value for h in at.subheader)
    # the selection stays in the URL
    assert str(at.query_params["frame"]) == str(ed) and str(at.query_params["slice"]) == "3"
    # the error pixels of the prediction panel, counted here from the files
    name = f"SCD0000101_frame{ed:02d}.nii.gz"
    r = np.asarray(nib.load(ref / "labels" / "SCD0000101" / name).dataobj)[:, :, 3]
    p = np.asarray(nib.load(pred / name).dataobj)[:, :, 3]
    fp = int(((p > 0) & (p != r)).sum())
    fn = int(((r > 0) & (p != r)).sum())
    assert fp == fn > 0  # the eroded LV rim: FN of LV and FP of MY on the same pixels
    pred_spec = next(s for s in specs(at) if s["layout"]["title"]["text"].startswith("prediction"))
    names = [t.get("name", "") for t in pred_spec["data"]]
    assert f"false positive ({fp} px)" in names and f"false negative ({fn} px)" in names
    # a frame or slice that does not exist falls back to the defaults
    at = run("case", benchmark=bench, entry="lv-eroded", subject="SCD0000101", frame="99", slice="x")
    assert at.select_slider(key="case_frame").value in (ed, es)


def test_reference_lv_contour_drawn_over_my_at_ed(board, monkeypatch):
    ref, pred, root, bench = board
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    subj = pd.read_csv(ref / "subjects.csv", dtype={"subject": str}).set_index("subject")
    ed = int(subj.loc["SCD0000101", "ed_frame"])
    at = run("case", benchmark=bench, entry="lv-eroded", subject="SCD0000101", frame=str(ed), slice="4")
    ref_spec = next(s for s in specs(at) if s["layout"]["title"]["text"] == "reference")
    names = [t.get("name") for t in ref_spec["data"]]
    assert "LV" in names and "MY" in names
    last = max(i for i, n in enumerate(names) if n == "LV")
    assert last > max(i for i, n in enumerate(names) if n == "MY")  # LV drawn last, on top


def test_bland_altman_labels_inside_the_plot(board, monkeypatch):
    ref, pred, root, bench = board
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    at = run("submission", benchmark=bench, entry="lv-eroded")
    ba = next(s for s in specs(at) if s["layout"]["title"]["text"].startswith("Bland-Altman"))
    notes = ba["layout"]["annotations"]
    assert len(notes) == 3
    for a in notes:
        assert a["xref"].endswith("domain") and a["x"] <= 1 and a.get("xanchor") == "right", a


def test_interval_of_one_subject_shows_a_dash_and_why(board, monkeypatch, tmp_path):
    """The Sunnybrook test split has one subject with MY annotated (SCD0000401 at ED): no interval."""
    import shutil

    from cardbench.benchmark import score

    ref, pred, root, _ = board
    lb = tmp_path / "lb"
    shutil.copytree(root, lb)
    e = L.add_entry(score(pred, ref, protocol="cardbench-v1", split="test", progress=False), lb, "lv-eroded-test")
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(lb))
    at = run("submission", benchmark=e.benchmark, entry="lv-eroded-test")
    el = next(d for d in at.dataframe if "phase" in d.value.columns and "ci_low" in d.value.columns)
    v = el.value
    one = v[v["n_subjects"] == 1]
    assert len(one) and one["ci_low"].isna().all()  # the values stay numbers (NaN), only the display changes
    import pyarrow as pa

    shown = pa.ipc.open_stream(el.proto.arrow_data.styler.display_values).read_pandas()  # what the browser shows
    rows = shown[v["n_subjects"].to_numpy() == 1]
    assert (rows["ci_low"] == "–").all() and (rows["ci_high"] == "–").all()
    assert "None" not in shown.astype(str).to_numpy().ravel().tolist()
    assert any("fewer than 2 subjects" in c.value for c in at.caption)
