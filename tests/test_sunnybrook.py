"""The Sunnybrook sample prepared end to end, checked against values computed here from the raw files.

The raw files are read straight from the gzip copies shipped in the package (plain gzip + numpy +
pydicom, none of cardbench's converters), so these tests run on a fresh clone without the shared real-data folder.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from cardbench.datasets.prepare import prepare_dataset, prepared_path, sunnybrook_path

RAW = resources.files("cardbench.datasets") / "data" / "sunnybrook-sample" / "final_data"
SUBJECTS = ["SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401", "SCD0000501"]
# published group statistics of the Sunnybrook heart-failure-with-infarction group (data README)
EDV_MEAN, EDV_SD, ESV_MEAN, ESV_SD, EF_MEAN, EF_SD = 244.9, 86.0, 174.3, 90.6, 32.0, 12.3


def _raw(rel: str) -> bytes:
    return gzip.decompress((RAW / (rel + ".gz")).read_bytes())


def _link() -> dict[str, str]:
    return {r["patient_id"]: r["original_id"] for r in csv.DictReader(io.StringIO(_raw("link.csv").decode()))}


def _raw_patient(pid: str):
    """Independent reading of one patient: {(slice, frame): dataset}, {(slice, frame): endo points}, {..: epi}."""
    imgs, endo, epi = {}, {}, {}
    for f in (RAW / "dicoms" / pid).iterdir():
        n = int(f.name.split(".")[0])
        imgs[((n - 1) // 20 + 1, (n - 1) % 20 + 1)] = pydicom.dcmread(io.BytesIO(gzip.decompress(f.read_bytes())))
    oid = _link()[pid]
    for kind, target in (("i", endo), ("o", epi)):
        d = RAW / "contourfiles" / oid / f"{kind}-contours"
        if not d.is_dir():
            continue
        for f in d.iterdir():
            n = int(f.name.split("-")[2])
            target[((n - 1) // 20 + 1, (n - 1) % 20 + 1)] = np.loadtxt(io.BytesIO(gzip.decompress(f.read_bytes())))
    return imgs, endo, epi


def _shoelace(p):
    x, y = p[:, 0], p[:, 1]
    return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def _geometry(ds):
    iop = np.array(ds.ImageOrientationPatient, float)
    return np.array(ds.ImagePositionPatient, float), iop, np.cross(iop[:3], iop[3:]), [float(v) for v in ds.PixelSpacing]


@pytest.fixture(scope="module")
def prepared(sunnybrook_prepared) -> Path:
    return sunnybrook_prepared  # prepare_dataset("sunnybrook-sample", ...), once per test run (conftest)


def test_layout(prepared):
    subj = pd.read_csv(prepared / "subjects.csv", dtype={"subject": str})
    assert subj["subject"].tolist() == SUBJECTS
    assert subj.groupby("split").size().to_dict() == {"test": 2, "train": 3}
    for _, r in subj.iterrows():
        for f in (r["ed_frame"], r["es_frame"]):
            img = nib.load(prepared / "images" / r["subject"] / f"{r['subject']}_frame{f:02d}.nii.gz")
            lab = nib.load(prepared / "labels" / r["subject"] / f"{r['subject']}_frame{f:02d}.nii.gz")
            assert lab.get_data_dtype() == np.uint8 and img.get_data_dtype() == np.int16
            assert img.shape == lab.shape == (256, 256, r["n_slices"])
            np.testing.assert_array_equal(img.affine, lab.affine)
            vals = set(np.unique(np.asarray(lab.dataobj)).tolist())
            expect_my = f == r["ed_frame"] and r["subject"] != "SCD0000501"
            assert vals == ({0, 1, 2} if expect_my else {0, 1})
    assert (prepared / "card.yaml").is_file() and (prepared / "README.md").is_file()


def test_ed_es_frames_follow_the_data_readme(prepared):
    """ED = the contoured frame that also has epicardial contours (19 or 20); ES = frame 7 to 9; for SCD0000501
    (no epicardial contours) the two contoured frames are 9 and 19, so ED is 19."""
    subj = pd.read_csv(prepared / "subjects.csv", dtype={"subject": str}).set_index("subject")
    for pid in SUBJECTS:
        _, endo, epi = _raw_patient(pid)
        frames = sorted({f for _, f in endo})
        epi_frames = {f for _, f in epi}
        ed = epi_frames.pop() if epi_frames else max(frames)
        es = min(frames)
        assert (subj.at[pid, "ed_frame"], subj.at[pid, "es_frame"]) == (ed, es)
        assert ed in (19, 20) and es in (7, 8, 9)
    assert subj.at["SCD0000501", "ed_frame"] == 19


def test_annotations(prepared):
    ann = pd.read_csv(prepared / "annotations.csv", dtype={"subject": str})
    subj = pd.read_csv(prepared / "subjects.csv", dtype={"subject": str}).set_index("subject")
    got = {(r.subject, r.frame): r.classes for r in ann.itertuples()}
    for pid in SUBJECTS:
        assert got[(pid, subj.at[pid, "es_frame"])] == "LV"
        assert got[(pid, subj.at[pid, "ed_frame"])] == ("LV" if pid == "SCD0000501" else "LV MY")
    assert len(got) == 10


def test_volumes_match_independent_computation(prepared):
    """LV (and MY) volume per patient and phase: shoelace area of each contour x pixel area x slice spacing
    (positions from IPP . (row x col)), computed here from the raw files, vs the prepared label maps."""
    subj = pd.read_csv(prepared / "subjects.csv", dtype={"subject": str}).set_index("subject")
    vols = pd.read_csv(prepared / "volumes.csv", dtype={"subject": str})
    measured = {}
    for pid in SUBJECTS:
        imgs, endo, epi = _raw_patient(pid)
        ipp0, iop, n, ps = _geometry(next(iter(imgs.values())))
        positions = sorted({round(float(np.array(d.ImagePositionPatient, float) @ n), 2) for d in imgs.values()})
        spacing = float(np.median(np.abs(np.diff(positions))))
        for phase in ("ED", "ES"):
            f = int(subj.at[pid, f"{phase.lower()}_frame"])
            lv_area = sum(_shoelace(p) for (s, ff), p in endo.items() if ff == f)
            lv_ml = lv_area * ps[0] * ps[1] * spacing / 1000
            lab = nib.load(prepared / "labels" / pid / f"{pid}_frame{f:02d}.nii.gz")
            arr = np.asarray(lab.dataobj)
            voxel_ml = abs(np.linalg.det(lab.affine[:3, :3])) / 1000
            assert voxel_ml == pytest.approx(ps[0] * ps[1] * spacing / 1000, rel=1e-4)
            got = (arr == 1).sum() * voxel_ml
            assert got == pytest.approx(lv_ml, rel=0.01), (pid, phase)
            row = vols[(vols.subject == pid) & (vols.phase == phase)].iloc[0]
            assert row["LV_mL"] == pytest.approx(got, abs=1e-3)
            assert row["LV_contour_mL"] == pytest.approx(lv_ml, rel=1e-3)
            measured[(pid, phase)] = got
            my_epi = [p for (s, ff), p in epi.items() if ff == f]
            if my_epi:
                my_ml = (sum(_shoelace(p) for p in my_epi) - lv_area) * ps[0] * ps[1] * spacing / 1000
                assert (arr == 2).sum() * voxel_ml == pytest.approx(my_ml, rel=0.015), (pid, phase)
            else:
                assert (arr == 2).sum() == 0 and pd.isna(row["MY_mL"])
    for pid in SUBJECTS:
        edv, esv = measured[(pid, "ED")], measured[(pid, "ES")]
        assert edv > esv, pid
        # sanity range only: the published group mean +- 2 SD (heart failure with infarction)
        assert EDV_MEAN - 2 * EDV_SD < edv < EDV_MEAN + 2 * EDV_SD
        assert ESV_MEAN - 2 * ESV_SD < esv < ESV_MEAN + 2 * ESV_SD
        assert EF_MEAN - 2 * EF_SD < (edv - esv) / edv * 100 < EF_MEAN + 2 * EF_SD


def test_affine_round_trip_on_real_data(prepared):
    """For every slice of every prepared image: the NIfTI affine applied to voxel (x=c, y=r, k), turned from
    RAS to LPS, equals IPP + c * PixelSpacing[1] * IOP[:3] + r * PixelSpacing[0] * IOP[3:] of the DICOM at that
    position; and the voxel holds that DICOM's pixel (r, c)."""
    subj = pd.read_csv(prepared / "subjects.csv", dtype={"subject": str}).set_index("subject")
    corners = [(0, 0), (0, 255), (255, 0), (255, 255), (100, 37)]
    for pid in SUBJECTS:
        imgs, _, _ = _raw_patient(pid)
        for phase in ("ed_frame", "es_frame"):
            f = int(subj.at[pid, phase])
            dsets = [d for (s, ff), d in imgs.items() if ff == f]
            n = _geometry(dsets[0])[2]
            dsets.sort(key=lambda d: float(np.array(d.ImagePositionPatient, float) @ n))
            img = nib.load(prepared / "images" / pid / f"{pid}_frame{f:02d}.nii.gz")
            data = np.asarray(img.dataobj)
            assert data.shape[2] == len(dsets)
            for k, d in enumerate(dsets):
                ipp, iop, _, ps = _geometry(d)
                px = d.pixel_array
                for r, c in corners:
                    lps = ipp + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
                    ras = img.affine @ np.array([c, r, k, 1.0])
                    np.testing.assert_allclose(ras[:3] * np.array([-1, -1, 1]), lps, atol=0.01)
                    assert data[c, r, k] == px[r, c]


def test_scores_dice_one_against_itself(prepared):
    from cardbench.benchmark import score

    res = score(prepared / "labels", prepared, progress=False)
    vol = res.per_case[res.per_case["level"] == "volume"]
    lv = vol[vol["class"] == "LV"]
    assert len(lv) == 10 and (lv["status"] == "ok").all() and (lv["dice"] == 1.0).all()
    my = vol[vol["class"] == "MY"]
    ok = my[my["status"] == "ok"]
    assert sorted(ok["subject"]) == SUBJECTS[:4] and (ok["phase"] == "ED").all() and (ok["dice"] == 1.0).all()
    na = my[my["status"] == "not_annotated"]
    assert len(na) == 6 and set(na[na["phase"] == "ED"]["subject"]) == {"SCD0000501"}


def test_cli_score_json(prepared):
    import json

    from cardbench.cli import app

    r = CliRunner().invoke(app, ["score", str(prepared / "labels"), "--reference", str(prepared), "--json",
                                 "--no-save"])
    assert r.exit_code == 0, r.output
    summ = json.loads(r.stdout)
    assert summ["dataset"]["name"] == "sunnybrook-sample"


def test_load_reference_reads_it(prepared):
    from cardbench.datasets.reference import load_reference

    ref = load_reference(prepared)
    assert ref.name == "sunnybrook-sample" and ref.version == "1.0.0"
    assert ref.classes == ("LV", "MY")
    assert len(ref.files) == 10
    assert ref.annotated_classes("SCD0000101", 8) == frozenset({"LV"})
    assert ref.annotated_classes("SCD0000101", 19) == frozenset({"LV", "MY"})
    assert ref.phase_of("SCD0000101", 19) == "ED" and ref.phase_of("SCD0000101", 8) == "ES"
    assert ref.split_of("SCD0000401") == "test"


def test_deterministic_bytes(prepared, tmp_path):
    again = tmp_path / "again"
    prepare_dataset("sunnybrook-sample", again)
    for p in sorted(prepared.rglob("*")):
        if p.is_file():
            assert (again / p.relative_to(prepared)).read_bytes() == p.read_bytes(), p


def test_same_result_from_shared_data(prepared, shared_data, tmp_path):
    other = tmp_path / "from-shared"
    prepare_dataset("sunnybrook-sample", other, source=shared_data)
    for p in sorted(prepared.rglob("*")):
        if p.is_file() and p.name != "card.yaml":  # card.yaml records the source folder
            assert (other / p.relative_to(prepared)).read_bytes() == p.read_bytes(), p


def test_corrupt_source_is_refused_and_out_untouched(tmp_path):
    from cardbench.datasets.embedded import IntegrityError

    src = tmp_path / "mirror" / "sunnybrook-sample" / "final_data"
    root = Path(str(RAW))
    for f in root.rglob("*.gz"):
        dest = src / f.relative_to(root).with_suffix("")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip.decompress(f.read_bytes()))
    bad = src / "contourfiles" / "SC-HF-I-2" / "i-contours" / "IM-0001-0047-icontour-manual.txt"
    data = bytearray(bad.read_bytes())
    data[5] ^= 1
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    from cardbench._util import OWNER_FILE

    (out / "card.yaml").write_text("old")  # a previous preparation: replaceable, but only by a complete one
    (out / OWNER_FILE).write_text("x")
    with pytest.raises(IntegrityError, match="IM-0001-0047-icontour-manual.txt"):
        prepare_dataset("sunnybrook-sample", out, source=tmp_path / "mirror")
    assert sorted(p.name for p in out.iterdir()) == sorted(["card.yaml", OWNER_FILE])
    assert (out / "card.yaml").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.fixture
def fast_preparer(prepared, monkeypatch):
    """Replace the converter by a copy of the prepared folder (the cache logic is what is tested), and count calls."""
    from cardbench.datasets import prepare as prep

    calls = []

    def copy(out, source=None, progress=False, overwrite=True):
        calls.append(out)
        if Path(out).exists():
            shutil.rmtree(out)
        shutil.copytree(prepared, out)

    monkeypatch.setitem(prep.PREPARERS, "sunnybrook-sample", copy)
    return calls


def test_cached_path_prepared_once(tmp_path, fast_preparer):
    p = sunnybrook_path(cache=tmp_path)
    assert p == tmp_path / "prepared" / "sunnybrook-sample-1.0.0"
    stamp = (p / "subjects.csv").stat().st_mtime_ns
    assert sunnybrook_path(cache=tmp_path) == p
    assert (p / "subjects.csv").stat().st_mtime_ns == stamp
    (p / ".cardbench-prepared").unlink()  # incomplete -> rebuilt
    assert prepared_path("sunnybrook-sample", cache=tmp_path) == p
    assert (p / ".cardbench-prepared").is_file()
    assert len(fast_preparer) == 2


def test_cli_prepare(tmp_path, monkeypatch, fast_preparer):
    import json

    from cardbench.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["data", "prepare", "sunnybrook-sample", "--out", str(tmp_path / "x"), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert [s["subject"] for s in got["subjects"]] == SUBJECTS
    assert all(s["EDV_mL"] > s["ESV_mL"] for s in got["subjects"])
    monkeypatch.setenv("CARDBENCH_DATA", str(tmp_path / "cache"))
    r = runner.invoke(app, ["data", "prepare", "sunnybrook-sample", "--print-path"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "cache" / "prepared" / "sunnybrook-sample-1.0.0")
    assert len(fast_preparer) == 2
    r = runner.invoke(app, ["data", "prepare", "no-such-dataset", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "no converter" in r.output
    r = runner.invoke(app, ["data", "prepare", "--help"])
    assert r.exit_code == 0


def test_generic_dicom_prepare_matches(prepared, shared_data, tmp_path):
    """`cardbench data prepare dicom` on one patient's raw folders gives the same labels and images."""
    from cardbench.cli import app

    base = shared_data / "sunnybrook-sample" / "final_data"
    r = CliRunner().invoke(app, ["data", "prepare", "dicom", "--dicom", str(base / "dicoms" / "SCD0000201"),
                                 "--contours", str(base / "contourfiles" / "SC-HF-I-2"), "--out",
                                 str(tmp_path / "g"), "--json"])
    assert r.exit_code == 0, r.output
    for sub in ("images", "labels"):
        for f in (7, 20):
            a = nib.load(tmp_path / "g" / sub / "SCD0000201" / f"SCD0000201_frame{f:02d}.nii.gz")
            b = nib.load(prepared / sub / "SCD0000201" / f"SCD0000201_frame{f:02d}.nii.gz")
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
    ann = pd.read_csv(tmp_path / "g" / "annotations.csv")
    assert dict(zip(ann["frame"], ann["classes"])) == {7: "LV", 20: "LV MY"}
