"""Kaggle volume track on the real published tables.

Expected values are computed here independently with plain pandas from the published files (the
released volumes, patient_dimensions.tsv and a prediction table), with the documented rules:

- LV volume of a frame = sum of lv_pixels x psx x psy x (max(X, Y) / grid)^2 x sliceSpacing / 1000;
  a ``_rot90`` series has the dimensions of its original; ED / ES = largest / smallest volume.
- rule seed: the ``_rot90`` series where it exists; ``_a`` and ``_b`` are separate rows; an
  undefined predicted EF counts as 100 points.
- rule cardbench: one row per patient; ``_a``/``_b`` volumes averaged.

They are also checked against the seed's own outputs: its per-model volumes
(``prediction_vs_gt_{diastole,systole}.tsv``) and the EF table of its README.
"""

from __future__ import annotations

import io
import json
import lzma

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.reproductions.ankenbrand2021.kaggle_volumes import (
    PUBLISHED_MODELS, VolumeTrackError, check_complete, frame_volumes_from_pixels, load_kaggle_data,
    read_pixel_counts, read_published, read_truth, resolve_series, score_published_model, score_pixel_table,
    series_indices,
)

K = "cmr-seg-tl/analysis/kaggle/"
R34 = "resnet34_5percent_size256_normalTfms_ceLoss"


# --- hand-computed synthetic cases --------------------------------------------------------------

def _dims():
    return pd.DataFrame({"X": [192], "Y": [256], "pixelSpacingX": [1.25], "pixelSpacingY": [1.25],
                         "sliceSpacing": [8.0], "scaleFactor": [0.5]}, index=pd.Index(["7"], name="pid"))


def _table(rows):
    text = "file\tlv_pixels\tmy_pixels\n" + "".join(f"{f}\t{lv}\t{my}\n" for f, lv, my in rows)
    return text.encode()


def test_pixel_volumes_hand_computed():
    """X 192, Y 256, 1.25 mm pixels, 8 mm slices, grid 256: one pixel = 1.25 x 1.25 x 8 mm = 0.0125 mL.

    frame 0: LV 100 + 60 = 160 px = 2.0 mL, MY 40 + 40 = 80 px = 1.0 mL; frame 1: LV 40 + 24 = 64 px = 0.8 mL.
    EDV 2.0, ESV 0.8 -> EF 60 %; LV mass = 1.0 mL x 1.05 = 1.05 g. scaleFactor is not applied.
    Grid 128: each pixel covers (256 / 128)^2 = 4 times the area -> EDV 8.0 mL.
    The rotated copy 7_rot90 (X and Y swapped) gives the same volumes.
    """
    rows = [("nifti/images/7/7-frame000-slice000.png", 100, 40), ("nifti/images/7/7-frame000-slice001.png", 60, 40),
            ("nifti/images/7/7-frame001-slice000.png", 40.0, 30), ("nifti/images/7/7-frame001-slice001.png", 24, 30)]
    counts = read_pixel_counts(_table(rows), "t.tsv")
    assert list(counts.columns) == ["series", "frame", "slice", "lv_pixels", "my_pixels"]
    fv = frame_volumes_from_pixels(counts, _dims(), 256)
    assert fv["lv_ml"].tolist() == pytest.approx([2.0, 0.8])
    ind = series_indices(fv).iloc[0]
    assert (ind["ed_frame"], ind["es_frame"]) == (0, 1)
    assert ind["edv"] == pytest.approx(2.0) and ind["esv"] == pytest.approx(0.8)
    assert ind["ef"] == pytest.approx(60.0) and ind["lvm"] == pytest.approx(1.05)
    assert series_indices(frame_volumes_from_pixels(counts, _dims(), 128)).iloc[0]["edv"] == pytest.approx(8.0)
    rot = read_pixel_counts(_table([(f.replace("/7/7-", "/7_rot90/7_rot90-"), a, b) for f, a, b in rows]))
    assert series_indices(frame_volumes_from_pixels(rot, _dims(), 256)).iloc[0]["edv"] == pytest.approx(2.0)


def test_pixel_table_errors_name_the_problem():
    ok = "nifti/images/7/7-frame000-slice000.png"
    with pytest.raises(VolumeTrackError, match="t.tsv: columns"):
        read_pixel_counts(b"file\tlv\n" + ok.encode() + b"\t1\n", "t.tsv")
    with pytest.raises(VolumeTrackError, match="file name"):
        read_pixel_counts(_table([("images/7/8-frame000-slice000.png", 1, 1)]), "t.tsv")
    with pytest.raises(VolumeTrackError, match="negative or fractional lv_pixels"):
        read_pixel_counts(_table([(ok, -1, 1)]), "t.tsv")
    with pytest.raises(VolumeTrackError, match="fractional my_pixels"):
        read_pixel_counts(_table([(ok, 1, 1.5)]), "t.tsv")
    with pytest.raises(VolumeTrackError, match="same image twice"):
        read_pixel_counts(_table([(ok, 1, 1), (ok, 2, 2)]), "t.tsv")
    with pytest.raises(VolumeTrackError, match="no entry in"):
        frame_volumes_from_pixels(read_pixel_counts(_table([(ok.replace("/7/7-", "/8/8-"), 1, 1)])), _dims(), 256)
    # the table's own shape: a row with a field missing, a column named twice, no rows, text counts
    with pytest.raises(VolumeTrackError, match="t.tsv: cannot be read as a tab-separated table"):
        read_pixel_counts(b"file\tlv_pixels\tmy_pixels\n" + ok.encode() + b"\t1\n", "t.tsv")
    with pytest.raises(VolumeTrackError, match=r"t.tsv: the header names \['lv_pixels'\] more than once"):
        read_pixel_counts(b"file\tlv_pixels\tlv_pixels\tmy_pixels\n" + ok.encode() + b"\t1\t1\t1\n", "t.tsv")
    with pytest.raises(VolumeTrackError, match="t.tsv: cannot be read"):
        read_pixel_counts(b"", "t.tsv")
    with pytest.raises(VolumeTrackError, match="missing, negative or fractional lv_pixels"):
        read_pixel_counts(_table([(ok, "many", 1)]), "t.tsv")


def test_series_resolution_rules():
    s = ["1", "5", "5_rot90", "123_a", "123_b", "9_a_rot90", "9_a", "9_b"]
    cb = resolve_series(s, "cardbench").set_index("series")["row"].to_dict()
    assert cb == {"1": "1", "5_rot90": "5", "123_a": "123", "123_b": "123", "9_a_rot90": "9", "9_b": "9"}
    seed = resolve_series(s, "seed").set_index("series")["row"].to_dict()
    assert seed == {"1": "1", "5_rot90": "5_rot90", "123_a": "123_a", "123_b": "123_b", "9_a_rot90": "9_a_rot90",
                    "9_b": "9_b"}
    with pytest.raises(ValueError, match="rule"):
        resolve_series(s, "best")
    with pytest.raises(VolumeTrackError, match="series name"):
        resolve_series(["12_c"], "seed")


def test_truth_formats():
    t = read_truth({"train": b"Id,Systole,Diastole\n1,60,150\n",
                    "test": b"Id,Volume,Usage\n2_Diastole,100,Private\n2_Systole,40,Private\n"})
    assert t.set_index("subject")["ef"].to_dict() == pytest.approx({"1": 60.0, "2": 60.0})
    assert t.set_index("subject")["split"].to_dict() == {"1": "train", "2": "test"}


def test_missing_data_folder_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="cardbench data fetch ankenbrand2021-derived"):
        load_kaggle_data(tmp_path)


# --- real data: independent pandas computation ----------------------------------------------------

def _read(shared, rel, **kw):
    path = shared / rel
    data = path.read_bytes()
    if rel.endswith(".xz"):
        data = lzma.decompress(data)
    return pd.read_csv(io.BytesIO(data), **kw)


@pytest.fixture(scope="module")
def indep(shared_data):
    """Everything computed with pandas only, from the published files."""
    tr = _read(shared_data, K + "truth/train.csv", dtype={"Id": str})
    va = _read(shared_data, K + "truth/validate.csv", dtype={"Id": str})
    so = _read(shared_data, K + "truth/solution.csv", dtype={"Id": str})
    so[["pid", "phase"]] = so["Id"].str.split("_", expand=True)
    so = so.pivot(index="pid", columns="phase", values="Volume").reset_index().rename(columns={"pid": "Id"})
    truth = pd.concat([tr, va, so[["Id", "Systole", "Diastole"]]]).set_index("Id")
    truth["ef"] = 100 * (truth["Diastole"] - truth["Systole"]) / truth["Diastole"]
    dims = _read(shared_data, K + "patient_dimensions.tsv", sep="\t", dtype={"pid": str}).set_index("pid")

    def volumes(key, grid):
        p = _read(shared_data, K + f"predictions/{key}.tsv.xz", sep="\t")
        # <series>-frameFFF-sliceSSS.png after the last "/", split at the last "-frame" (plain Python
        # string methods on an object array: 5x faster than pandas' .str chains on 433,460 names)
        last = [f.rpartition("/")[2].rpartition("-frame") for f in p["file"].to_numpy(dtype=object)]
        p["series"] = np.array([s for s, _, _ in last], dtype=object)
        p["frame"] = np.array([int(rest[:3]) for _, _, rest in last], dtype=np.int64)
        base = np.array([s.replace("_rot90", "") for s in p["series"].to_numpy(dtype=object)], dtype=object)
        d = dims.loc[base]
        px = d["pixelSpacingX"].to_numpy() * d["pixelSpacingY"].to_numpy() * \
            (np.maximum(d["X"], d["Y"]).to_numpy() / grid) ** 2
        p["ml"] = p["lv_pixels"] * px * d["sliceSpacing"].to_numpy() / 1000
        f = p.groupby(["series", "frame"])["ml"].sum().groupby("series")
        return pd.DataFrame({"edv": f.max(), "esv": f.min()})

    done = {}

    def volumes_once(key, grid):  # several tests use the same model: computed once per module
        if (key, grid) not in done:
            done[key, grid] = volumes(key, grid)
        return done[key, grid].copy()

    return {"truth": truth, "volumes": volumes_once}


def _seed_rows(series):
    """Rule seed: keep <id>_rot90 where it exists, drop its original; keep _a and _b."""
    s = set(series)
    return [x for x in s if not (x + "_rot90") in s]


def _ef_table(vols, truth, subject_of):
    ef_pred = 100 * (vols["edv"] - vols["esv"]) / vols["edv"].where(vols["edv"] > 0)
    d = (ef_pred - truth.loc[[subject_of(i) for i in vols.index], "ef"].to_numpy()).abs().fillna(100.0)
    return d.mean(), d.std(ddof=1), d.median(), d.quantile(0.75) - d.quantile(0.25), len(d)


@pytest.fixture(scope="module")
def kaggle(shared_data):
    return load_kaggle_data(shared_data)


@pytest.fixture(scope="module", autouse=True)
def _parse_each_table_once():
    """The tests below score the same published tables (the R34 table in five of them): inside this
    module, ``kaggle_volumes`` parses each distinct table (by its decompressed bytes) once and hands
    out copies. The first parse of each table is the real one; a failing parse is not remembered."""
    import hashlib

    from cardbench.reproductions.ankenbrand2021 import kaggle_volumes as vt

    parse, parsed = vt.read_pixel_counts, {}

    def parse_once(source, name=None):
        key = hashlib.sha256(vt._source_bytes(source, name)[0]).digest()
        if key not in parsed:
            parsed[key] = parse(source, name)
        return parsed[key].copy()

    mp = pytest.MonkeyPatch()
    mp.setattr(vt, "read_pixel_counts", parse_once)
    mp.setitem(globals(), "read_pixel_counts", parse_once)  # the name imported above
    yield
    mp.undo()


@pytest.mark.slow
def test_r34_volumes_match_the_seeds_own_volumes(shared_data, indep):
    """Our reading of the formula gives the seed's published per-model volumes (prediction_vs_gt_*.tsv)."""
    vols = indep["volumes"](R34, 256)
    for phase, col in (("diastole", "edv"), ("systole", "esv")):
        seed = _read(shared_data, K + f"predictions/prediction_vs_gt_{phase}.tsv", sep="\t", dtype={"Id": str})
        seed = seed[seed["method"] == "r34_p05_s256"].set_index("Id")["prediction"]
        assert len(seed) == 1149
        np.testing.assert_allclose(vols.loc[seed.index, col].to_numpy(), seed.to_numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_r34_seed_rule_reproduces_the_readme(shared_data, indep, kaggle):
    vols = indep["volumes"](R34, 256)
    vols = vols.loc[_seed_rows(vols.index)]
    assert len(vols) == 1149
    mean, sd, med, iqr, n = _ef_table(vols, indep["truth"], lambda i: i.split("_")[0])
    assert (round(mean, 2), round(sd, 2), round(med, 2), round(iqr, 2)) == (3.64, 3.38, 2.87, 3.72)  # seed README
    model = next(m for m in PUBLISHED_MODELS if m.key == R34)
    res = score_published_model(model, kaggle, "seed", shared_data, n_boot=200)
    e = res.summary["ef_abs_diff"]["all"]
    assert e["n"] == n == 1149
    assert (e["mean"], e["sd"], e["median"], e["iqr"]) == pytest.approx((mean, sd, med, iqr), rel=1e-12)


@pytest.mark.slow
def test_r34_cardbench_rule_one_row_per_patient(shared_data, indep, kaggle):
    vols = indep["volumes"](R34, 256)
    vols = vols.loc[_seed_rows(vols.index)]
    vols["subject"] = [i.split("_")[0] for i in vols.index]
    per = vols.groupby("subject")[["edv", "esv"]].mean()     # _a and _b averaged
    assert len(per) == 1140
    mean, sd, med, iqr, n = _ef_table(per, indep["truth"], lambda i: i)
    model = next(m for m in PUBLISHED_MODELS if m.key == R34)
    res = score_published_model(model, kaggle, "cardbench", shared_data, n_boot=200)
    e = res.summary["ef_abs_diff"]["all"]
    assert e["n"] == 1140
    assert (e["mean"], e["sd"], e["median"], e["iqr"]) == pytest.approx((mean, sd, med, iqr), rel=1e-12)
    ps = res.per_subject.set_index("subject")
    assert ps.loc["437", "series"] == "437_a+437_b" and ps.loc["437", "n_series"] == 2
    np.testing.assert_allclose(ps.loc[per.index, "edv_pred"].to_numpy(), per["edv"].to_numpy(), rtol=1e-12)
    # agreement of EDV: bias and SD of (prediction - released) computed directly
    d = per["edv"] - indep["truth"].loc[per.index, "Diastole"]
    a = res.agreement[(res.agreement["index"] == "LVEDV") & (res.agreement["grouping"] == "all")].iloc[0]
    assert a["bias"] == pytest.approx(d.mean()) and a["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert a["n_subjects"] == 1140 and a["bias_ci_low"] < a["bias"] < a["bias_ci_high"]


@pytest.mark.slow
def test_ukbb_volumes_reproduce_the_readme(shared_data, indep, kaggle):
    u = _read(shared_data, K + "ukbb_ventricular_volumes.csv", dtype=str)
    u = u.rename(columns={u.columns[0]: "Id"}).set_index("Id")
    vols = pd.DataFrame({"edv": u["LVEDV (mL)"].astype(float), "esv": u["LVESV (mL)"].astype(float)})
    vols = vols.loc[_seed_rows(vols.index)]
    mean, sd, med, iqr, n = _ef_table(vols, indep["truth"], lambda i: i.split("_")[0])
    assert n == 1149
    assert (round(mean, 2), round(sd, 2), round(med, 2), round(iqr, 2)) == (5.42, 8.83, 3.72, 4.34)  # seed README
    res = score_published_model(PUBLISHED_MODELS[-1], kaggle, "seed", shared_data, n_boot=0)
    e = res.summary["ef_abs_diff"]["all"]
    assert (e["mean"], e["sd"], e["median"], e["iqr"]) == pytest.approx((mean, sd, med, iqr), rel=1e-12)
    assert e["n_worst_case"] == 6  # six series where ukbb_cardiac found no LV (EDV 0)


@pytest.mark.slow
def test_cli_scores_a_real_table_with_grid_128(shared_data, indep, tmp_path):
    """The size128 model through ``cardbench volumes score --grid 128 --rule seed``."""
    from cardbench.cli import app

    key = "resnet34_5percent_size128_normalTfms_ceLoss"
    vols = indep["volumes"](key, 128)
    vols = vols.loc[_seed_rows(vols.index)]
    mean, sd, med, iqr, n = _ef_table(vols, indep["truth"], lambda i: i.split("_")[0])
    assert (round(mean, 2), round(sd, 2), round(med, 2), round(iqr, 2)) == (3.90, 4.26, 3.05, 3.86)  # seed README
    r = CliRunner().invoke(app, ["volumes", "score", str(shared_data / K / f"predictions/{key}.tsv.xz"), "--grid",
                                 "128", "--rule", "seed", "--data", str(shared_data), "--out", str(tmp_path / "o"),
                                 "--json"])
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)["ef_abs_diff"]["all"]
    assert (e["mean"], e["sd"], e["median"], e["iqr"]) == pytest.approx((mean, sd, med, iqr), rel=1e-12)
    written = pd.read_csv(tmp_path / "o" / "per_subject.csv", dtype={"row": str, "subject": str})
    assert len(written) == 1149 and (written["status"] == "ok").sum() == 1148


@pytest.mark.slow
def test_incomplete_table_is_refused(shared_data, kaggle, tmp_path):
    data, where, _ = read_published(K + f"predictions/{R34}.tsv.xz", shared_data)
    counts = read_pixel_counts(data, where)
    part = counts[~((counts["series"] == "1") & (counts["slice"] == 0))]
    with pytest.raises(VolumeTrackError, match="incomplete"):
        check_complete(part, kaggle, "t.tsv")
    whole = counts[counts["series"] != "1"]
    with pytest.raises(VolumeTrackError, match="no prediction"):
        check_complete(whole, kaggle, "t.tsv")
    assert check_complete(whole, kaggle, "t.tsv", allow_missing=True) == ["1 series without prediction"]
    # scored with --allow-missing, patient 1 is missing and counts as the worst case
    p = tmp_path / "t.tsv"
    out = pd.DataFrame({"file": "images/" + whole["series"] + "/" + whole["series"] + "-frame"
                        + whole["frame"].map("{:03d}".format) + "-slice" + whole["slice"].map("{:03d}".format) + ".png",
                        "lv_pixels": whole["lv_pixels"], "my_pixels": whole["my_pixels"]})
    out.to_csv(p, sep="\t", index=False)
    res = score_pixel_table(p, kaggle, allow_missing=True, n_boot=0)
    row = res.per_subject.set_index("subject").loc["1"]
    assert row["status"] == "missing" and row["ef_abs_diff"] == 100.0


@pytest.mark.slow
def test_choice_sensitivity_properties(shared_data, kaggle):
    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import choice_sensitivity

    t = choice_sensitivity(R34, shared_data, kaggle).set_index("variant")
    assert t.loc["seed rule", "n"] == 1149 and (t["n"].drop("seed rule") == 1140).all()
    # EF is a ratio of two volumes of one series: a per-series scale factor cancels in it, except for
    # the 9 patients whose two acquisitions (with different scale factors) are averaged
    for v in ("scaleFactor applied again", "grid factor ignored"):
        assert t.loc[v, ["ef_mean", "ef_sd", "ef_median", "ef_iqr"]].tolist() == \
            pytest.approx(t.loc["cardbench rule", ["ef_mean", "ef_sd", "ef_median", "ef_iqr"]].tolist(), abs=0.01)
    # ... but not in the volumes: 301 curated series were downscaled (scaleFactor < 1)
    assert t.loc["scaleFactor applied again", "edv_bias"] > t.loc["cardbench rule", "edv_bias"] + 50


@pytest.mark.slow
def test_cli_reproduce_matches_every_published_row(shared_data, tmp_path, monkeypatch):
    """`cardbench volumes reproduce`: the seed rule gives every row of the seed's README table at 2 decimals.

    The bootstrap intervals are not asserted here (the other tests of this file check them), so the
    command runs without resamples: the point estimates do not depend on them."""
    import functools

    from cardbench.reproductions.ankenbrand2021 import kaggle_volumes as vt
    from cardbench.cli import app

    monkeypatch.setattr(vt, "reproduce_kaggle_volumes", functools.partial(vt.reproduce_kaggle_volumes, n_boot=0))

    r = CliRunner().invoke(app, ["volumes", "reproduce", "--data", str(shared_data), "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    pub = [x for x in rows if x["published_mean"] is not None]
    assert len(rows) == 11 and len(pub) == 10
    for x in pub:
        got = [round(x[f"seed_{k}"], 2) for k in ("mean", "sd", "median", "iqr")]
        assert got == [x[f"published_{k}"] for k in ("mean", "sd", "median", "iqr")], x["label"]
        assert x["seed_n"] == 1149 and x["cardbench_n"] == 1140
    assert (tmp_path / "cardbench" / "UKBB" / "summary.json").exists()
    assert (tmp_path / "kaggle_volumes.csv").exists()
