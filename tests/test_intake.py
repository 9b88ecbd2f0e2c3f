"""Submission intake (cardbench.evaluate.intake) and the dashboard's Submit page: a valid prediction
archive of the real Sunnybrook test set is queued, scored exactly as ``cardbench score`` scores it, and
added; invalid uploads are refused with one-line reasons; size and per-day limits; private benchmarks
take models only. AppTest, and a real upload in headless Chromium (Playwright)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cardbench.benchmark import score
from cardbench.benchmark.leaderboard import Leaderboard, add_entry
from cardbench.benchmark.private import set_private
from cardbench.evaluate.intake import IntakeError, IntakeLimits, process_queue, status, submit

BENCH = "sunnybrook-sample__test__ankenbrand2021"


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_prepared):
    return sunnybrook_prepared  # prepared once per test run (conftest); read only


def _predictions(sunnybrook: Path, dest: Path, erode: int) -> Path:
    """The test-split reference labels with the LV eroded by ``erode`` voxels in-plane (a real-looking,
    imperfect prediction)."""
    import pandas as pd

    subjects = pd.read_csv(sunnybrook / "subjects.csv", dtype={"subject": str})
    for s in subjects.loc[subjects["split"] == "test", "subject"]:
        for f in sorted((sunnybrook / "labels" / s).glob("*.nii.gz")):
            img = nib.load(str(f))
            a = np.asarray(img.dataobj).astype(np.uint8)
            if erode:
                lv = ndimage.binary_erosion(a == 1, structure=np.ones((3, 3, 1)), iterations=erode)
                a = np.where((a == 1) & ~lv, 0, a).astype(np.uint8)
            (dest / s).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(a, img.affine, img.header), str(dest / s / f.name))
    return dest


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


@pytest.fixture()
def board(prefilled_dir, sunnybrook, tmp_path) -> Path:
    """The pre-filled leaderboard plus a Sunnybrook benchmark (the reference copy scored), so the
    benchmark has a reference folder on this machine."""
    root = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, root)
    ref_copy = _predictions(sunnybrook, tmp_path / "refcopy", erode=0)
    add_entry(score(ref_copy, sunnybrook, protocol="ankenbrand2021", split="test", progress=False), root,
              "reference-copy")
    return root


@pytest.fixture(scope="module")
def archives(sunnybrook, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("arch")
    pred = _predictions(sunnybrook, d / "pred", erode=2)
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("SCD0000401/SCD0000401_frame07.nii.gz", b"not a nifti file")
    want = score(pred, sunnybrook, protocol="ankenbrand2021", split="test", progress=False)  # `cardbench score`
    return {"good": _zip(pred), "bad": bad.getvalue(), "want": want.headline()}


def test_queue_scores_like_cardbench_score(board, archives):
    lb = Leaderboard(board)
    sid = submit(lb, BENCH, "eroded-lv", {"pred.zip": archives["good"]})
    assert status(board, sid)["status"] == "queued"
    assert process_queue(lb) == [sid]
    s = status(board, sid)
    assert s["status"] == "done", s
    r = lb.ranked(BENCH, "dice_lv")
    got = dict(zip(r["entry"], r["dice_LV"]))["eroded-lv"]
    assert got == pytest.approx(archives["want"]["LV"], abs=1e-12) and 0.5 < got < 1.0
    assert s["rank"] == 2 and s["of"] == 2  # behind the reference copy (Dice 1)
    assert lb.entry(BENCH, "eroded-lv").meta["source"] == "dashboard submission"


def test_invalid_uploads_are_refused_with_reasons(board, archives):
    lb = Leaderboard(board)
    sid = submit(lb, BENCH, "broken", {"pred.zip": archives["bad"]})
    process_queue(lb)
    s = status(board, sid)
    assert s["status"] == "refused" and s["problems"]
    assert all("\n" not in p for p in s["problems"])
    assert "broken" not in lb.entry_names(BENCH)
    for files, msg in (({"a.onnx": b"x", "model.yaml": b"y"}, "upload one prediction archive"),
                       ({"../../evil.zip": b"x"}, "not a plain file name")):
        with pytest.raises(IntakeError, match=msg):
            submit(lb, BENCH, "x", files)
    with pytest.raises(IntakeError, match="invalid entry name"):
        submit(lb, BENCH, "../x", {"p.zip": b"x"})
    with pytest.raises(IntakeError, match="over the limit of 0 MiB"):
        submit(lb, BENCH, "big", {"p.zip": b"x" * 100}, IntakeLimits(max_upload_bytes=10))
    with pytest.raises(IntakeError, match="already exists"):
        submit(lb, BENCH, "reference-copy", {"p.zip": b"x"})


def test_per_name_per_day_limit_counts_refused_ones(board, archives):
    lb = Leaderboard(board)
    lim = IntakeLimits(per_name_per_day=2)
    for _ in range(2):
        submit(lb, BENCH, "eager", {"p.zip": archives["bad"]}, lim)
        process_queue(lb, lim)
    with pytest.raises(IntakeError, match="2 submissions today"):
        submit(lb, BENCH, "eager", {"p.zip": archives["good"]}, lim)
    submit(lb, BENCH, "patient", {"p.zip": archives["good"]}, lim)  # another name is not limited


def test_private_benchmarks_take_models_only(board, archives):
    lb = Leaderboard(board)
    set_private(board, BENCH)
    with pytest.raises(IntakeError, match="private .* upload one .onnx model and its model.yaml"):
        submit(lb, BENCH, "x", {"pred.zip": archives["good"]})
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # a model whose declared input does not fit its card: refused at scoring time with one line
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 64, 64])
    m = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    card = {"format": "onnx", "input": {"channels": 1, "size": [64, 64]},
            "output": {"kind": "logits", "labels": ["background", "LV", "MY"]}}
    import yaml

    sid = submit(lb, BENCH, "model-x", {"m.onnx": m.SerializeToString(), "model.yaml": yaml.safe_dump(card).encode()})
    process_queue(lb)
    s = status(board, sid)
    assert s["status"] == "refused" and "input 'x' has shape" in s["message"] and "\n" not in s["message"]


def test_submit_page_in_apptest(board, archives, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from cardbench.benchmark import leaderboard as L

    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(board))
    monkeypatch.setenv("CARDBENCH_ALLOW_SUBMISSIONS", "1")
    app_py = str(Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "app.py")
    at = AppTest.from_file(app_py, default_timeout=180)
    at.query_params["benchmark"] = BENCH
    at.run()
    at.switch_page("views/submit.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="submit_name").set_value("apptest-eroded")
    at.file_uploader(key="submit_archive").set_value(("pred.zip", archives["good"], "application/zip"))
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("scored and added as 'apptest-eroded'" in s.value for s in at.success), [e.value for e in at.error]
    r = Leaderboard(board).ranked(BENCH, "dice_lv")
    assert dict(zip(r["entry"], r["dice_LV"]))["apptest-eroded"] == pytest.approx(archives["want"]["LV"], abs=1e-12)
    # an invalid archive: the page shows the refusal
    at.text_input(key="submit_name").set_value("apptest-broken")
    at.file_uploader(key="submit_archive").set_value(("bad.zip", archives["bad"], "application/zip"))
    at.button[0].click()
    at.run()
    assert any("refused" in e.value for e in at.error)
    # off by default: no Submit page
    monkeypatch.delenv("CARDBENCH_ALLOW_SUBMISSIONS")
    at2 = AppTest.from_file(app_py, default_timeout=180)
    at2.run()
    with pytest.raises(Exception):
        at2.switch_page("views/submit.py")
        at2.run()
        assert not at2.exception


@pytest.mark.browser
def test_real_upload_in_chromium(board, archives, monkeypatch, tmp_path):
    pytest.importorskip("streamlit")
    pw = pytest.importorskip("playwright.sync_api")
    from cardbench.dashboard.serve import chromium, server

    exe = chromium()
    if exe is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    monkeypatch.setenv("CARDBENCH_ALLOW_SUBMISSIONS", "1")
    good = tmp_path / "pred.zip"
    good.write_bytes(archives["good"])
    bad = tmp_path / "bad.zip"
    bad.write_bytes(archives["bad"])
    with server(board, log=tmp_path / "server.log") as url, pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{url}/submit?benchmark={BENCH}")
        page.get_by_label("Entry name", exact=True).and_(page.get_by_test_id("stTextInputField")).fill("browser-eroded", timeout=120000)
        page.locator("input[type=file]").set_input_files(str(good))
        page.get_by_text("pred.zip").wait_for(timeout=60000)
        page.get_by_role("button", name="Submit").click()
        page.get_by_text("scored and added as 'browser-eroded'").wait_for(timeout=180000)
        page.get_by_label("Entry name", exact=True).and_(page.get_by_test_id("stTextInputField")).fill("browser-broken")
        page.locator("input[type=file]").set_input_files(str(bad))
        page.get_by_text("bad.zip").wait_for(timeout=60000)
        page.get_by_role("button", name="Submit").click()
        page.get_by_text("refused").first.wait_for(timeout=180000)
        browser.close()
    r = Leaderboard(board).ranked(BENCH, "dice_lv")
    assert dict(zip(r["entry"], r["dice_LV"]))["browser-eroded"] == pytest.approx(archives["want"]["LV"], abs=1e-12)
    assert "browser-broken" not in set(r["entry"])
    done = [json.loads(f.read_text()) for f in (board / ".intake" / "done").glob("*.json")]
    assert {d["status"] for d in done} == {"done", "refused"}
