"""Dataset cards, frozen standard splits, subsets and the leakage check.

Expected values come from the published files themselves (read here with csv/pandas, not through
cardbench): the split column of the 7T confusion tables, image_subsets.tsv, the Kaggle truth files.
"""

from __future__ import annotations

import csv
import hashlib
import shutil

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.datasets import cards as cards_mod
from cardbench.datasets.cards import CardError, list_cards, load_card, parse_card
from cardbench.datasets.splits import (
    LeakageError, SplitError, check_no_leakage, find_leakage, freeze_split, kaggle_patient, load_split,
    reference_split_issues, split_csv_text, splits_dir, subset, subset_table, subject_key,
)

runner = CliRunner()
SUBSETS = ("v7", "v3", "v1", "r7", "r3", "r1", "esed", "r_esed")


def _registry_rows(shared_data):
    with open(shared_data / "REGISTRY.tsv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# --------------------------------------------------------------------------- cards

def test_shipped_cards_validate_and_are_the_four_required():
    names = list_cards()
    for n in ("ankenbrand2021-derived", "kaggle-dsb-ukbb", "cmr-7t", "sunnybrook-sample"):
        assert n in names
    for n in names:
        c = load_card(n)
        assert c.name == n and c.version.count(".") == 2
        assert c.license and c.citation and c.classes
        if c.access != "open":
            assert c.access_steps, n


def test_card_files_are_the_registry_rows_under_the_prefix(shared_data):
    rows = _registry_rows(shared_data)
    expect = {r["local_path"]: r for r in rows if r["local_path"].startswith("cmr-seg-tl/")}
    c = load_card("ankenbrand2021-derived")
    got = {e.local_path: e for e in c.files}
    assert set(got) == set(expect) and len(got) == 855
    for p, e in got.items():
        assert e.sha256 == expect[p]["sha256"] and e.url == expect[p]["url"]
    sb = {r["local_path"] for r in rows if r["local_path"].startswith("sunnybrook-sample/")}
    assert {e.local_path for e in load_card("sunnybrook-sample").files} == sb


def test_cmr7t_split_matches_the_published_confusion_tables(shared_data):
    t = pd.read_csv(shared_data / "cmr-seg-tl/analysis/7T/confusion_tables/confusion_WS_base.tsv", sep="\t")
    t["subject"] = t["image"].str.split("_").str[0]
    published = t.groupby("subject")["set"].unique()
    assert all(len(v) == 1 for v in published)  # one split per volunteer in the published table
    published = {s: v[0] for s, v in published.items()}
    c = load_card("cmr-7t")
    assert c.split_of() == published
    assert set(c.splits["test"]) == {"26", "27", "28"}
    assert set(c.splits["val"]) == {"19", "30", "35", "36", "42"}
    assert len(c.subjects) == 22 and len(c.splits["train"]) == 14
    assert c.raw["n_images"] == len(t)  # 7873 images


def test_cmr7t_subsets_exactly_as_published(shared_data):
    pub = pd.read_csv(shared_data / "cmr-seg-tl/analysis/7T/image_subsets.tsv", sep="\t")
    pub["case"] = pub["file"].str.replace("-image.png", "", regex=False)
    train = set(load_card("cmr-7t").splits["train"])
    for s in SUBSETS:
        got = subset("cmr-7t", s)
        expect = set(pub.loc[pub[s].astype(str).str.upper() == "TRUE", "case"])
        assert set(got["case"]) == expect and len(got) == len(expect), s
        assert set(got["subject"]) <= train and set(got["split"]) == {"train"}, s
    # the published subsets never use a validation or test volunteer (no leakage into evaluation)
    assert set(pub["Id"].astype(str)) == train
    # same table read from a fetched copy instead of the embedded one
    t = subset_table("cmr-7t", data_dir=shared_data)
    assert len(t) == len(pub)
    with pytest.raises(ValueError, match="unknown subset 'v9'"):
        subset("cmr-7t", "v9")


def test_kaggle_split_matches_the_competition_files(shared_data):
    truth = shared_data / "cmr-seg-tl/analysis/kaggle/truth"
    train = set(pd.read_csv(truth / "train.csv")["Id"].astype(str))
    val = set(pd.read_csv(truth / "validate.csv")["Id"].astype(str))
    test = {i.split("_")[0] for i in pd.read_csv(truth / "solution.csv")["Id"]}
    c = load_card("kaggle-dsb-ukbb")
    assert set(c.splits["train"]) == train and set(c.splits["val"]) == val and set(c.splits["test"]) == test
    assert len(c.subjects) == 1140


def _good() -> dict:
    return yaml.safe_load((cards_mod.cards_root() / "cmr-7t.yaml").read_text(encoding="utf-8"))


def test_card_errors_list_every_problem():
    d = _good()
    d["version"] = 1.0            # unquoted -> float
    del d["license"]
    d["classes"] = ["LV", "XX"]
    d["splits"]["test"] = [26, 27, 28, 17]  # 17 is train too
    d["access_steps"] = []
    d["registry_prefix"] = "nope/"
    d["colour"] = "red"
    with pytest.raises(CardError) as ei:
        parse_card(d, "bad.yaml")
    msg = str(ei.value)
    for frag in ("bad.yaml", "version 1.0", "'license' is missing", "unknown ['XX']", "subject 17 is in both",
                 "access_steps is empty", "registry_prefix 'nope/'", "unknown field(s) ['colour']"):
        assert frag in msg, frag
    assert len(ei.value.problems) == 7


def test_card_subject_range_and_bad_range():
    d = _good()
    d["subjects"] = {"range": [1, 4]}
    d["splits"] = {"train": {"range": [1, 3]}, "test": [4]}
    c = parse_card(d)
    assert c.subjects == ("1", "2", "3", "4") and c.splits["train"] == ("1", "2", "3")
    d["splits"] = {"train": {"range": [3, 1]}}
    with pytest.raises(CardError, match="range must be"):
        parse_card(d)


def test_unknown_dataset_cli_exit_2():
    res = runner.invoke(app, ["data", "info", "no-such-data"])
    assert res.exit_code == 2
    assert "unknown dataset 'no-such-data'" in res.stderr and "cmr-7t" in res.stderr


def test_cli_list_and_info():
    res = runner.invoke(app, ["data", "list", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in __import__("json").loads(res.stdout)}
    assert rows["cmr-7t"]["split"] == {"train": 14, "val": 5, "test": 3}
    res = runner.invoke(app, ["data", "info", "kaggle-dsb-ukbb"])
    assert res.exit_code == 0 and "10.5281/zenodo.3876351" in res.stdout


# --------------------------------------------------------------------------- frozen splits

def test_frozen_split_files_match_manifest_and_cards():
    d = splits_dir()
    with open(d / "SPLITS.tsv", newline="", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh, delimiter="\t"))
    for n in list_cards():
        c = load_card(n)
        if not c.splits:
            continue
        row = [r for r in manifest if r["dataset"] == n and r["splits_version"] == c.splits_version]
        assert len(row) == 1, f"{n}: split not frozen"
        data = (d / row[0]["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row[0]["sha256"]
        got = pd.read_csv(d / row[0]["file"], dtype=str)
        assert dict(zip(got["subject"], got["split"])) == c.split_of()
        sp = load_split(n)
        assert sp.sha256 == row[0]["sha256"] and sp.counts() == {k: len(v) for k, v in c.splits.items()}


def test_split_file_tampering_and_card_drift_are_caught(tmp_path):
    root = tmp_path / "splits"
    shutil.copytree(splits_dir(), root)
    f = root / "cmr-7t_splits_v1.csv"
    f.write_text(f.read_text().replace("26,test", "26,train"))
    with pytest.raises(SplitError, match="sha256 .* does not match SPLITS.tsv"):
        load_split("cmr-7t", root=root)
    # a card whose split changed without a new splits_version
    shutil.copyfile(splits_dir() / "cmr-7t_splits_v1.csv", f)
    d = _good()
    d["splits"]["val"] = [19, 30, 35, 36]
    d["splits"]["train"] = d["splits"]["train"] + [42]
    drifted = parse_card(d)
    with pytest.raises(SplitError, match="differs from the split in the card"):
        load_split(drifted, root=root)
    with pytest.raises(SplitError, match="already frozen with different content"):
        freeze_split(drifted, root=root)
    d["splits_version"] = "2"
    path, digest = freeze_split(parse_card(d), root=root)
    assert path.name == "cmr-7t_splits_v2.csv"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert load_split(parse_card(d), root=root).counts() == {"train": 15, "val": 4, "test": 3}


def test_split_csv_text_is_canonical():
    # natural order of subjects within a split, splits in train/val/test order, \n line ends
    text = split_csv_text({"test": ["10", "9"], "train": ["b2", "b10", "a"]})
    assert text == "subject,split\na,train\nb2,train\nb10,train\n9,test\n10,test\n"


# --------------------------------------------------------------------------- leakage

def test_find_leakage_by_hand():
    assert find_leakage({"train": ["1", "2"], "val": ["3"], "test": ["4"]}) == []
    leaks = find_leakage({"train": ["017", "5", "5"], "val": [], "test": ["17", " 5 "]})
    assert [lk.subject for lk in leaks] == ["5", "17"]
    assert leaks[1].splits == ("train", "test") and leaks[1].ids == {"train": ["017"], "test": ["17"]}
    # Kaggle: repeated series and rotated copies belong to one patient
    assert kaggle_patient("123_a") == kaggle_patient("123_rot90") == kaggle_patient("0123") == "123"
    assert find_leakage({"train": ["123_a"], "test": ["123_b"]}) == []
    assert len(find_leakage({"train": ["123_a"], "test": ["123_b"]}, key=kaggle_patient)) == 1
    assert subject_key(" SCD0000101 ") == "scd0000101"
    with pytest.raises(LeakageError, match="subject 17 is in 2 splits: train \\(017\\), test \\(17\\)"):
        check_no_leakage({"train": ["017"], "test": ["17"]}, where="run.yaml")


def test_reference_split_issues():
    ok = pd.DataFrame({"subject": ["26", "17"], "split": ["test", "train"]}).set_index("subject")
    assert reference_split_issues(ok, "cmr-7t", "1.0.0") == []
    bad = pd.DataFrame({"subject": ["26", "17", "99"], "split": ["train", "train", "test"]}).set_index("subject")
    issues = reference_split_issues(bad, "cmr-7t", "1.0.0", "ref/subjects.csv")
    msgs = [i.problem for i in issues]
    assert any("subject 26 is 'train' here but 'test'" in m for m in msgs)
    assert any("subject 99 is not in the standard split" in m for m in msgs)
    # another version or an unregistered name: only the leakage rule applies
    assert reference_split_issues(bad, "cmr-7t", "2.0.0") == []
    leak = pd.DataFrame({"subject": ["7", "007"], "split": ["train", "test"]}).set_index("subject")
    issues = reference_split_issues(leak, "my-data", "1")
    assert [i.kind for i in issues] == ["leakage"]


def test_score_reports_a_reference_whose_split_disagrees(tmp_path, sunnybrook_prepared):
    import shutil

    ref = tmp_path / "ref"
    shutil.copytree(sunnybrook_prepared, ref)  # a copy: this test edits subjects.csv
    pred = ref / "labels"
    res = runner.invoke(app, ["score", str(pred), "--reference", str(ref), "--no-save", "--json"])
    assert res.exit_code == 0, res.stderr
    df = pd.read_csv(ref / "subjects.csv", dtype={"subject": str})
    df.loc[df["subject"] == "SCD0000401", "split"] = "train"  # a test subject moved into train
    df.to_csv(ref / "subjects.csv", index=False)
    res = runner.invoke(app, ["score", str(pred), "--reference", str(ref), "--no-save"])
    assert res.exit_code == 2
    assert "subject SCD0000401 is 'train' here but 'test' in the standard split of sunnybrook-sample" in res.stderr


def test_cli_splits_and_subset(tmp_path, shared_data):
    res = runner.invoke(app, ["data", "splits", "cmr-7t", "--json"])
    assert res.exit_code == 0, res.stderr
    js = __import__("json").loads(res.stdout)
    assert js["splits"]["test"] == ["26", "27", "28"] and js["splits_version"] == "1"
    out = tmp_path / "v1.csv"
    res = runner.invoke(app, ["data", "splits", "cmr-7t", "--subset", "v1", "--out", str(out)])
    assert res.exit_code == 0, res.stderr
    pub = pd.read_csv(shared_data / "cmr-seg-tl/analysis/7T/image_subsets.tsv", sep="\t")
    n_v1 = int((pub["v1"].astype(str).str.upper() == "TRUE").sum())
    assert len(pd.read_csv(out)) == n_v1
    res = runner.invoke(app, ["data", "splits", "ankenbrand2021-derived"])
    assert res.exit_code == 1 and "has no standard split" in res.stderr
