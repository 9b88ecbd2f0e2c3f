"""Every dashboard page through Streamlit's AppTest: renders without exceptions and shows the
expected numbers for the pre-filled published entries, computed here independently with pandas
from the published confusion tables (tests/lbexpect.py)."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")
from streamlit.testing.v1 import AppTest  # noqa: E402

import lbexpect as X  # noqa: E402
from cardbench.benchmark import leaderboard as L  # noqa: E402
from cardbench.dashboard.images import ALLOW_ENV  # noqa: E402
from conftest import find_shared_data  # noqa: E402
from helpers import erode_lv_boundary  # noqa: E402

SHARED = find_shared_data()
APP = str(Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "app.py")
B_PAPER = "cmr-7t__test__ankenbrand2021"
B_V1 = "cmr-7t__test__cardbench-v1"


@pytest.fixture()
def board(prefilled_dir, tmp_path, monkeypatch) -> Path:
    """A private copy of the pre-filled leaderboard, the one the app opens."""
    dst = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, dst)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(dst))
    return dst


def run_page(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at: AppTest, *cols: str) -> pd.DataFrame:
    """The first dataframe on the page holding all ``cols``."""
    for d in at.dataframe:
        v = d.value
        names = list(v.columns) + list(v.index.names or [])
        if all(c in names for c in cols):
            return v
    raise AssertionError(f"no table with columns {cols}: {[list(d.value.columns) for d in at.dataframe]}")


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def values(arr) -> np.ndarray:
    """Plotly 7 stores numeric arrays as base64 ``bdata``."""
    if isinstance(arr, dict) and "bdata" in arr:
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr, dtype=float)


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


PAPER_LV = {e: X.paper_protocol(X.seven_t(e, SHARED), "LV") for e in X.TABLES}


# ---------------------------------------------------------------------------------------------


def test_fresh_install_shows_the_papers_numbers(tmp_path, monkeypatch):
    """An empty folder is pre-filled on first use; the first page is the paper's 7T table."""
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(tmp_path / "fresh"))
    at = run_page()
    assert at.title[0].value == "Leaderboard"
    t = frame_with(at, "entry", "dice_LV", "paper_dice_LV")
    assert t["entry"].tolist() == sorted(PAPER_LV, key=lambda e: -PAPER_LV[e])
    np.testing.assert_allclose(t["dice_LV"].to_numpy(float), [PAPER_LV[e] for e in t["entry"]], atol=1e-9)
    assert dict(zip(t["entry"], t["paper_dice_LV"])) == {e: X.PAPER[e][0] for e in X.TABLES}
    # the bar chart holds the same numbers (best at the top of a horizontal bar chart = last trace point)
    bar = plotly_specs(at)[0]["data"][0]
    np.testing.assert_allclose(values(bar["x"])[::-1], t["dice_LV"].to_numpy(float), atol=1e-9)
    assert "Protocol ankenbrand2021 v1.0" in texts(at, "info")


def test_leaderboard_cardbench_v1_with_cis_and_phase(board):
    at = run_page(benchmark=B_V1)
    t = frame_with(at, "entry", "dice_LV", "dice_LV_ci_low", "dice_LV_ci_high")
    for _, r in t.iterrows():
        mean, sm = X.subject_level(X.seven_t(r["entry"], SHARED), "LV")
        assert r["dice_LV"] == pytest.approx(mean, abs=1e-9)
        assert sm.min() - 1e-12 <= r["dice_LV_ci_low"] <= r["dice_LV_ci_high"] <= sm.max() + 1e-12
    bar = plotly_specs(at)[0]["data"][0]
    assert bar["error_x"]["visible"] is True
    # rank by MY at ES
    at.selectbox(key="lb_class").select("MY").run()
    at.selectbox(key="lb_group").select("ES").run()
    assert not at.exception
    t = frame_with(at, "entry", "dice_MY")
    esed = X.read_table("cmr-seg-tl/analysis/7T/esed_frames.tsv", SHARED)
    es = dict(zip(esed["Id"].astype(str), esed["es"]))
    exp = {}
    for e in X.TABLES:
        v = X.volume_dice(X.seven_t(e, SHARED), "MY")
        v = v[[es.get(s) == f for s, f in zip(v["subject"], v["frame"])]]
        exp[e] = v.groupby("subject")["dice"].mean().mean()
    assert t["entry"].tolist() == sorted(exp, key=lambda e: -exp[e])
    np.testing.assert_allclose(t["dice_MY"].to_numpy(float), [exp[e] for e in t["entry"]], atol=1e-9)


def test_leaderboard_filter_and_download(board):
    at = run_page()
    at.text_input(key="lb_filter").input("transfer").run()
    t = frame_with(at, "entry", "dice_LV")
    assert set(t["entry"]) == {"imagenet_tl", "double_tl"}
    assert any(b.label == "Download CSV" for b in at.get("download_button"))
    at.text_input(key="lb_filter").input("no such model").run()
    assert not at.exception and "No entry matches" in texts(at, "info")


def test_new_entry_appears_after_reload(board):
    at = run_page()
    assert "my-unet" not in set(frame_with(at, "entry", "dice_LV")["entry"])
    lb = L.Leaderboard(board)
    res = lb.entry(B_PAPER, "plain").result()
    L.add_entry(res, board, "my-unet", meta={"label": "my U-Net"})
    at.run()
    t = frame_with(at, "entry", "dice_LV")
    assert "my-unet" in set(t["entry"])
    assert t.set_index("entry").loc["my-unet", "dice_LV"] == pytest.approx(PAPER_LV["plain"], abs=1e-9)


def test_submission_page(board):
    at = run_page("submission", benchmark=B_V1, entry="double_tl")
    df = X.seven_t("double_tl", SHARED)
    lv, sm_lv = X.subject_level(df, "LV")
    my, _ = X.subject_level(df, "MY")
    m = {e.label: e.value for e in at.metric}
    assert m["dice LV"] == f"{lv:.3f}" and m["dice MY"] == f"{my:.3f}"
    head = frame_with(at, "class", "mean", "ci_low")
    assert head.set_index("class").loc["LV", "mean"] == pytest.approx(lv, abs=1e-9)
    # worst cases first: the lowest volume Dice of either class
    worst = frame_with(at, "subject", "frame", "class", "status", "dice")
    vols = pd.concat([X.volume_dice(df, c).assign(cls=c) for c in ("LV", "MY")])
    assert worst["dice"].iloc[0] == pytest.approx(vols["dice"].min(), abs=1e-6)
    assert worst["dice"].is_monotonic_increasing
    # per subject
    subj = frame_with(at, "LV", "MY")
    np.testing.assert_allclose(subj["LV"].to_numpy(float), sm_lv.sort_index().to_numpy(), atol=1e-9)
    # distribution: one box per class with every volume
    box = [d for d in plotly_specs(at)[0]["data"] if d["type"] == "box"]
    assert [b["name"] for b in box] == ["LV", "MY"]
    assert sorted(values(box[0]["y"])) == pytest.approx(sorted(X.volume_dice(df, "LV")["dice"]), abs=1e-9)
    # 7T entries come from counts without voxel sizes: the clinical block says so
    assert "Clinical indices not available" in texts(at, "info") or "No clinical indices" in texts(at, "info")


def test_case_page_without_images(board):
    at = run_page("case", benchmark=B_PAPER, entry="base", subject="27")
    assert "not public" in texts(at, "info")
    vol = frame_with(at, "class", "status", "ref_voxels", "dice")
    df = X.seven_t("base", SHARED)
    frame = int(at.select_slider(key="case_frame").value)
    v = X.volume_dice(df[df["subject"] == "27"], "LV")
    exp = v.loc[v["frame"] == frame, "dice"].iloc[0]
    assert vol.set_index("class").loc["LV", "dice"] == pytest.approx(exp, abs=1e-9)
    frames = sorted(df.loc[df["subject"] == "27", "frame"].unique())
    at.select_slider(key="case_frame").set_value(frames[-1]).run()
    assert not at.exception
    vol = frame_with(at, "class", "status", "ref_voxels", "dice")
    exp = v.loc[v["frame"] == frames[-1], "dice"].iloc[0]
    assert vol.set_index("class").loc["LV", "dice"] == pytest.approx(exp, abs=1e-9)
    # image-level Dice of each slice of that frame (the paper's rule: both empty -> 1)
    slices = frame_with(at, "dice LV", "dice MY")
    rows = df[(df["subject"] == "27") & (df["frame"] == frames[-1])].sort_values("slice")
    np.testing.assert_allclose(slices["dice LV"].to_numpy(float), X.image_dice(rows, "LV"), atol=1e-9)


def test_compare_page(board):
    at = run_page("compare", benchmark=B_PAPER, a="base", b="double_tl")
    a, b = X.seven_t("base", SHARED), X.seven_t("double_tl", SHARED)
    m = a[["image"]].assign(a=X.image_dice(a, "LV")).merge(b[["image"]].assign(b=X.image_dice(b, "LV")), on="image")
    wtl = frame_with(at, "class", "A better", "tie", "B better").set_index("class")
    assert wtl.loc["LV", "cases"] == len(m) == 955
    assert wtl.loc["LV", "A better"] == int((m["a"] > m["b"]).sum())
    assert wtl.loc["LV", "B better"] == int((m["b"] > m["a"]).sum())
    assert wtl.loc["LV", "tie"] == int((m["a"] == m["b"]).sum())
    # A - B everywhere, as `cardbench compare` (was B - A in this table)
    assert wtl.loc["LV", "mean diff (A - B)"] == pytest.approx((m["a"] - m["b"]).mean(), abs=1e-9)
    # double TL is better on average, so the flips are the cases base wins
    flips = frame_with(at, "class", "a", "b", "overall")
    assert int((flips["class"] == "LV").sum()) == int((m["a"] > m["b"]).sum())
    # the tie tolerance moves cases into ties
    at.number_input(key="cmp_tol").set_value(0.01).run()
    wtl = frame_with(at, "class", "A better", "tie", "B better").set_index("class")
    assert wtl.loc["LV", "tie"] == int(((m["b"] - m["a"]).abs() <= 0.01).sum())
    sd = frame_with(at, "class", "subjects", "mean diff (A - B)", "ci_low").set_index("class")
    exp = (m.assign(subject=m["image"].str.split("_").str[0]).assign(d=lambda x: x["a"] - x["b"])
           .groupby("subject")["d"].mean().mean())
    assert sd.loc["LV", "mean diff (A - B)"] == pytest.approx(exp, abs=1e-9)
    # every table and chart of the page says A - B, none B - A
    assert not [d for d in at.dataframe if any("B-A" in str(c) or "B - A" in str(c) for c in d.value.columns)]
    assert all("B - A" not in json.dumps(s) for s in plotly_specs(at))
    # subject-level Wilcoxon: with every subject favouring one side, the exact two-sided p is 2 / 2^n
    subj = m.assign(subject=m["image"].str.split("_").str[0]).groupby("subject")[["a", "b"]].mean()
    w = frame_with(at, "class", "subjects", "p-value").set_index("class")
    assert w.loc["LV", "B better"] == int((subj["b"] > subj["a"]).sum())
    assert w.loc["LV", "A better"] == int((subj["a"] > subj["b"]).sum())
    assert (subj["b"] > subj["a"]).all()  # double TL beats base in each of the 3 test volunteers
    assert w.loc["LV", "p-value"] == pytest.approx(2 / 2 ** len(subj))


def test_dataset_page(board):
    at = run_page("dataset", benchmark=B_PAPER)
    sizes = frame_with(at, "split", "subjects", "volumes", "images").set_index("split")
    df = X.seven_t("base", SHARED)
    assert sizes.loc["test", "subjects"] == df["subject"].nunique() == 3
    assert sizes.loc["test", "images"] == len(df) == 955
    assert sizes.loc["test", "volumes"] == len(df[["subject", "frame"]].drop_duplicates())
    listed = [d.value for d in at.dataframe if "subject ids" in d.value.columns]
    scored = listed[-1].set_index("split")  # the card's split (when there is a card) comes first
    assert scored.loc["test", "subject ids"] == "26, 27, 28" and scored.loc["test", "subjects"] == 3
    card = frame_with(at, "field", "value").set_index("field")["value"]  # cardbench.datasets ships the card
    assert card["license"] == "MIT" and card["annotators"] == "expert"


def test_pages_with_an_empty_folder(tmp_path, monkeypatch):
    """A folder with no benchmark (pre-fill already recorded, every entry removed) gives a message."""
    root = tmp_path / "empty"
    root.mkdir()
    (root / L.MARKER).write_text(json.dumps({"format": L.FORMAT_VERSION,
                                             "prefilled": {k: {} for k in L.PREFILL_SOURCES}}))
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    for page in (None, "submission", "case", "compare", "dataset"):
        at = run_page(page)
        assert "holds no benchmark yet" in texts(at, "warning")


# ---------------------------------------------------------------------------------------------
# a real-image benchmark: the Sunnybrook sample (CC0), with a prediction whose LV is eroded by one
# pixel on every slice (the lost rim labelled MY): clinical indices, overlays


@pytest.fixture(scope="module")
def sunnybrook(tmp_path_factory, sunnybrook_prepared, prefilled_dir):
    import nibabel as nib

    from cardbench.benchmark import score

    tmp = tmp_path_factory.mktemp("sb")
    ref = sunnybrook_prepared  # prepared once per test run (conftest); read only
    pred = tmp / "pred"
    for f in sorted((ref / "labels").rglob("*.nii.gz")):
        img = nib.load(f)
        a = np.asarray(img.dataobj).astype(np.uint8)
        p = erode_lv_boundary(a, to=2)
        pred.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(p, img.affine, img.header), pred / f.name)
    root = tmp / "leaderboard"
    shutil.copytree(prefilled_dir, root)  # the pre-filled leaderboard, built once per test run (conftest)
    res = score(pred, ref, protocol="cardbench-v1", progress=False)
    e = L.add_entry(res, root, "lv-eroded", meta={"label": "reference with the LV eroded by 1 pixel"})
    return ref, pred, root, e.benchmark


def _lv_ml(path) -> float:
    import nibabel as nib

    img = nib.load(path)
    return float((np.asarray(img.dataobj) == 1).sum() * np.prod(img.header.get_zooms()[:3]) / 1000.0)


def test_sunnybrook_submission_clinical(sunnybrook, monkeypatch):
    ref, pred, root, bench = sunnybrook
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    at = run_page("submission", benchmark=bench, entry="lv-eroded")
    subjects = pd.read_csv(ref / "subjects.csv", dtype={"subject": str})
    ref_edv, pred_edv = [], []
    for _, s in subjects.sort_values("subject").iterrows():
        name = f"{s['subject']}_frame{int(s['ed_frame']):02d}.nii.gz"
        ref_edv.append(_lv_ml(ref / "labels" / s["subject"] / name))
        pred_edv.append(_lv_ml(pred / name))
    ref_edv, pred_edv = np.array(ref_edv), np.array(pred_edv)
    assert at.selectbox(key="sub_index").value == "LVEDV"
    ba = next(s for s in plotly_specs(at) if s["layout"]["title"]["text"].startswith("Bland-Altman"))
    pts = ba["data"][0]
    np.testing.assert_allclose(np.sort(values(pts["y"])), np.sort(pred_edv - ref_edv), rtol=1e-6)
    np.testing.assert_allclose(np.sort(values(pts["x"])), np.sort((pred_edv + ref_edv) / 2), rtol=1e-6)
    agree = frame_with(at, "index", "bias", "mae").set_index("index")
    assert agree.loc["LVEDV", "bias"] == pytest.approx((pred_edv - ref_edv).mean(), rel=1e-6)
    # the Leaderboard page ranks by a clinical figure too
    at = run_page(benchmark=bench)
    at.selectbox(key="lb_metric").select("mae").run()
    at.selectbox(key="lb_class").select("LVEDV").run()
    t = frame_with(at, "entry", "mae_LVEDV")
    assert t.set_index("entry").loc["lv-eroded", "mae_LVEDV"] == pytest.approx(np.abs(pred_edv - ref_edv).mean(),
                                                                               rel=1e-6)


def test_sunnybrook_case_overlays(sunnybrook, monkeypatch):
    import nibabel as nib

    ref, pred, root, bench = sunnybrook
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    monkeypatch.setenv(ALLOW_ENV, os.pathsep.join([str(ref), str(pred)]))  # `cardbench dashboard --allow-root` both
    at = run_page("case", benchmark=bench, entry="lv-eroded", subject="SCD0000101")
    assert not [i.value for i in at.info if "not" in str(i.value)]
    frames = at.select_slider(key="case_frame").options
    at.select_slider(key="case_frame").set_value(frames[-1]).run()
    at.select_slider(key="case_slice").set_value(4).run()
    assert not at.exception
    frame = int(str(at.select_slider(key="case_frame").value).split()[0])
    name = f"SCD0000101_frame{frame:02d}.nii.gz"
    r = np.asarray(nib.load(ref / "labels" / "SCD0000101" / name).dataobj)[:, :, 4]
    p = np.asarray(nib.load(pred / name).dataobj)[:, :, 4]
    specs = plotly_specs(at)
    assert [s["layout"]["title"]["text"] for s in specs] == ["reference", "prediction (dashed)"]
    # the image under the contours is the slice of the prepared image volume (transposed for display)
    img = np.asarray(nib.load(ref / "images" / "SCD0000101" / name).dataobj, dtype=np.float32)[:, :, 4]
    heat = specs[0]["data"][0]
    z = heat["z"]
    z = np.array([values(row) for row in z]) if isinstance(z, list) else values(z).reshape(img.T.shape)
    np.testing.assert_allclose(z, img.T)
    # one LV contour in the reference, drawn around the LV pixels
    lv = [t for t in specs[0]["data"] if t.get("name") == "LV"]
    assert lv and values(lv[0]["x"]).min() >= np.nonzero(r == 1)[0].min() - 1
    caption = texts(at, "caption")
    assert f"{int((r != p).sum())} pixels differ on this slice" in caption


def test_case_images_found_when_the_reference_moved(sunnybrook, tmp_path, monkeypatch):
    """The recorded reference folder is gone: the page uses the sample cardbench prepares itself
    (same dataset version) instead of failing; a dataset it cannot prepare gets a message."""
    ref, pred, root, bench = sunnybrook
    copy = tmp_path / "leaderboard"
    shutil.copytree(root, copy)
    summ = copy / bench / "entries" / "lv-eroded" / "summary.json"
    s = json.loads(summ.read_text())
    s["dataset"]["path"] = str(tmp_path / "moved-away")
    summ.write_text(json.dumps(s))
    sub_yaml = summ.parent / "submission.yaml"
    sub_yaml.write_text("\n".join(line for line in sub_yaml.read_text().splitlines()
                                   if not line.startswith("reference_path")) + "\n")
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(copy))
    monkeypatch.setenv("CARDBENCH_DATA", str(tmp_path / "data-cache"))
    monkeypatch.setenv(ALLOW_ENV, os.pathsep.join([str(ref), str(pred)]))  # `cardbench dashboard --allow-root`
    at = run_page("case", benchmark=bench, entry="lv-eroded", subject="SCD0000101")
    assert [s["layout"]["title"]["text"] for s in plotly_specs(at)] == ["reference", "prediction (dashed)"]
    s["dataset"]["name"] = "not-a-dataset"
    summ.write_text(json.dumps(s))
    at = run_page("case", benchmark=bench, entry="lv-eroded", subject="SCD0000101")
    assert "is not on this machine" in texts(at, "info") and not plotly_specs(at)


def test_case_images_with_relative_paths(sunnybrook, tmp_path, monkeypatch):
    """Scored with paths relative to one working directory, viewed from another."""
    from cardbench.benchmark import score

    ref, pred, _, bench = sunnybrook
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ref, work / "ref")
    shutil.copytree(pred, work / "pred")
    monkeypatch.chdir(work)
    res = score("pred", "ref", protocol="cardbench-v1", progress=False)
    assert res.summary["dataset"]["path"] == "ref"
    root = tmp_path / "lb"
    L.add_entry(res, root, "relative", prefill=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(root))
    monkeypatch.setenv(ALLOW_ENV, str(tmp_path))  # `cardbench dashboard --allow-root`
    (root / L.MARKER).write_text(json.dumps({"format": L.FORMAT_VERSION,
                                             "prefilled": {k: {} for k in L.PREFILL_SOURCES}}))
    at = run_page("case", benchmark=bench, entry="relative", subject="SCD0000401")
    assert [s["layout"]["title"]["text"] for s in plotly_specs(at)] == ["reference", "prediction (dashed)"]
