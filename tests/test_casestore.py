"""The per-case table streamed to Parquet in batches (issue 11): results never depend on the batch size.

Real data: the Sunnybrook sample (expert contours of 5 patients), predictions = the reference with
its LV boundary eroded by one pixel (tests/helpers.py). The same submission is scored with one
batch for the whole run and with batches of a single case; every file of the result folder must
be the same byte for byte (summary.json apart from its creation time).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark import score
from cardbench.benchmark import scoring
from cardbench.benchmark.aggregate import aggregate, per_subject_table
from cardbench.benchmark.casestore import PerCaseStore, PerCaseWriter
from cardbench.benchmark.protocols import get_protocol
from cardbench.benchmark.results import per_case_export

from helpers import erode_lv_boundary


def _eroded_predictions(ref: Path, out: Path, keep: int | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((ref / "labels").rglob("*.nii.gz"))
    for i, path in enumerate(files):
        if keep is not None and i >= keep:
            break
        img = nib.load(path)
        lab = np.asarray(img.dataobj).astype(np.uint8)
        nib.save(nib.Nifti1Image(erode_lv_boundary(lab, to=0), img.affine, img.header), out / path.name)
    return out


def _folder_files(folder: Path) -> dict[str, str]:
    out = {}
    for f in sorted(folder.iterdir()):
        text = f.read_text(encoding="utf-8")
        if f.name == "summary.json":
            d = json.loads(text)
            d.pop("created")
            text = json.dumps(d, sort_keys=True)
        out[f.name] = text
    return out


def _score_with_batches(monkeypatch, batch_rows: int, *args, **kw):
    real = scoring.CaseSpool.__init__

    def init(self, folder, batch_rows_=batch_rows):
        real(self, folder, batch_rows=batch_rows_)

    monkeypatch.setattr(scoring.CaseSpool, "__init__", init)
    seen = []
    real_add = PerCaseWriter.add
    monkeypatch.setattr(PerCaseWriter, "add", lambda self, chunk: (seen.append(len(chunk)), real_add(self, chunk)))
    res = score(*args, progress=False, **kw)
    monkeypatch.undo()
    return res, seen


@pytest.mark.parametrize("allow_missing", [False, True])
def test_batch_size_never_changes_a_result(sunnybrook_prepared, tmp_path, monkeypatch, allow_missing):
    ref = sunnybrook_prepared
    # with allow_missing, only the first 4 volumes are predicted: the others are misses (worst HD95)
    pred = _eroded_predictions(ref, tmp_path / "pred", keep=4 if allow_missing else None)
    one, n_one = _score_with_batches(monkeypatch, 1 << 40, pred, ref, allow_missing=allow_missing)
    many, n_many = _score_with_batches(monkeypatch, 1, pred, ref, allow_missing=allow_missing)
    n_volumes = len(list((ref / "labels").rglob("*.nii.gz")))
    assert len(n_one) == 1 and len(n_many) == n_volumes  # one batch vs one batch per volume (case)
    assert isinstance(one.per_case_store, PerCaseStore) and len(one.per_case_store) == sum(n_one)
    one.write(tmp_path / "one")
    many.write(tmp_path / "many")
    assert _folder_files(tmp_path / "one") == _folder_files(tmp_path / "many")
    pd.testing.assert_frame_equal(one.per_case, many.per_case)
    if allow_missing:
        pc = many.per_case
        miss = pc[(pc["status"] == "missing") & (pc["level"] == "volume")]
        assert len(miss) and np.allclose(miss["hd95"], miss["fov_diag_mm"])  # the policy's worst value


def test_store_reads_back_the_table_and_aggregates_like_the_frame(sunnybrook_prepared, tmp_path):
    ref = sunnybrook_prepared
    res = score(_eroded_predictions(ref, tmp_path / "pred"), ref, progress=False)
    store = res.per_case_store
    df = store.to_frame()
    # the pieces are (level, class) blocks in table order: image before volume, then the classes
    # (the Sunnybrook contours are LV and MY)
    assert res.summary["classes"][:2] == ["LV", "MY"]
    assert [(lv, c) for lv, c, _, _ in store.pieces] == [(lv, c) for lv in ("image", "volume")
                                                         for c in res.summary["classes"]]
    for lv, c, _, n in store.pieces:
        part = store.read(["subject", "dice"], level=lv, cls=c)
        sel = df[(df["level"] == lv) & (df["class"] == c)]
        assert len(part) == n == len(sel)
        assert part["subject"].tolist() == sel["subject"].tolist()
    proto = get_protocol("cardbench-v1")
    pd.testing.assert_frame_equal(aggregate(store, proto), aggregate(df, proto))
    pd.testing.assert_frame_equal(per_subject_table(store, proto), per_subject_table(df, proto))
    # per_case.csv written row group by row group is the one-shot export of the whole table
    res.write(tmp_path / "out")
    want = per_case_export(df).to_csv(index=False, float_format="%.10g")
    assert (tmp_path / "out" / "per_case.csv").read_text(encoding="utf-8") == want
    folder = store.path.parent
    with res:
        pass
    assert not folder.exists()  # closing the result removes the stored table


def test_per_subject_means_recomputed_by_hand(sunnybrook_prepared, tmp_path):
    """per_subject.csv: each subject's mean of its volume-level values (NaN excluded), computed here
    with math.fsum from per_case.csv, agrees to 1e-12."""
    import math

    ref = sunnybrook_prepared
    res = score(_eroded_predictions(ref, tmp_path / "pred"), ref, progress=False)
    pc = res.per_case
    ps = res.per_subject
    vol = pc[pc["level"] == "volume"]
    for (subj, cls), g in vol.groupby(["subject", "class"]):
        for m in ("dice", "hd95", "assd"):
            v = [x for x in g[m] if not math.isnan(x)]
            row = ps[(ps["subject"] == subj) & (ps["class"] == cls) & (ps["metric"] == m)].iloc[0]
            assert row["n_values"] == len(v) and row["n_excluded"] == len(g) - len(v)
            if not v:  # a class the reference does not annotate: no value, no mean
                assert math.isnan(row["mean"])
                continue
            assert abs(row["mean"] - math.fsum(v) / len(v)) <= 1e-12 * max(1.0, abs(row["mean"]))


def test_writer_unifies_batches_with_different_columns(tmp_path):
    """A column that is empty in one batch and text in another is text; a column that only a later
    batch has is blank in the earlier rows; the file columns stay last."""
    a = pd.DataFrame({"level": ["image", "image"], "subject": ["s1", "s1"], "class": ["LV", "MY"],
                      "dice": [0.5, 0.25], "distance_status": [None, None], "ref_file": ["a", "a"]})
    b = pd.DataFrame({"level": ["image"], "subject": ["s2"], "class": ["LV"], "dice": [1.0],
                      "distance_status": ["failed"], "ref_file": ["b"], "hd95": [3.5]})
    w = PerCaseWriter(folder=tmp_path)
    w.add(a)
    w.add(b)
    store = w.finish()
    df = store.to_frame()
    assert list(df.columns) == ["level", "subject", "class", "dice", "distance_status", "hd95", "ref_file"]
    # rows: image/LV (s1, s2) then image/MY (s1)
    assert df["subject"].tolist() == ["s1", "s2", "s1"] and df["class"].tolist() == ["LV", "LV", "MY"]
    assert df["distance_status"].isna().tolist() == [True, False, True]
    assert df["hd95"].isna().tolist() == [True, False, True] and df["hd95"][1] == 3.5
    assert df["dice"].tolist() == [0.5, 1.0, 0.25]
    folder = store.path.parent
    store.close()
    assert not folder.exists()


def test_chunks_of_cases_sent_to_an_executor_give_the_same_results(sunnybrook_prepared, tmp_path, monkeypatch):
    """Cases go to an executor in chunks (fewer, larger units of work); the result is the same for
    chunks of 1 and of 3 cases, and a case that raises inside a chunk is the only one reported."""
    from concurrent.futures import ThreadPoolExecutor

    from cardbench.benchmark import ValidationError

    ref = sunnybrook_prepared
    pred = _eroded_predictions(ref, tmp_path / "pred")
    got = {}
    for size in (1, 3):
        monkeypatch.setattr(scoring, "chunk_size", lambda n, workers, executor, _s=size: _s)
        sizes = []
        real = scoring.score_volumes
        monkeypatch.setattr(scoring, "score_volumes", lambda tasks: (sizes.append(len(tasks)), real(tasks))[1])
        with ThreadPoolExecutor(2) as ex:
            got[size] = score(pred, ref, executor=ex, progress=False)
        n_volumes = len(list(pred.iterdir()))
        assert sum(sizes) == n_volumes and max(sizes) == size
        monkeypatch.undo()
    pd.testing.assert_frame_equal(got[1].per_case, got[3].per_case)
    pd.testing.assert_frame_equal(got[1].aggregates, got[3].aggregates)

    bad = sorted(p.name for p in pred.iterdir())[1].split("_frame")[0]
    real_one = scoring.score_volume

    def flaky(task):
        if task.subject == bad:
            raise MemoryError("worker ran out of memory")
        return real_one(task)

    monkeypatch.setattr(scoring, "chunk_size", lambda n, workers, executor: 3)
    monkeypatch.setattr(scoring, "score_volume", flaky)
    with ThreadPoolExecutor(2) as ex, pytest.raises(ValidationError) as ei:
        score(pred, ref, executor=ex, progress=False)
    n_bad = len([p for p in pred.iterdir() if p.name.startswith(bad + "_")])
    assert len(ei.value.problems) == n_bad >= 1
    assert all(f"case subject {bad} frame" in str(p) for p in ei.value.problems)


def test_chunk_size_keeps_many_units_per_worker():
    for n, workers, executor in [(10, 2, False), (5000, 2, False), (20000, 2, True), (100, 8, True)]:
        size = scoring.chunk_size(n, workers, executor)
        assert 1 <= size <= scoring.CHUNK_CASES
        # at least 32 units per worker (8 assumed for an executor) unless a unit is a single case
        assert size == 1 or n // size >= 32 * (8 if executor else workers)


def test_clinical_indices_in_chunks_of_subjects_equal_one_piece(sunnybrook_prepared, tmp_path, monkeypatch):
    from cardbench.benchmark import clinical

    ref = sunnybrook_prepared
    res = score(_eroded_predictions(ref, tmp_path / "pred"), ref, progress=False)
    whole = clinical.clinical_indices(res.per_case)
    monkeypatch.setattr(clinical, "SUBJECTS_PER_CHUNK", 2)  # 5 subjects: chunks of 2, 2 and 1
    pd.testing.assert_frame_equal(clinical.clinical_indices(res.per_case), whole)
    assert whole["subject"].nunique() == 5 and whole["subject"].is_monotonic_increasing


def test_summary_counts_recomputed_from_the_table(sunnybrook_prepared, tmp_path):
    ref = sunnybrook_prepared
    res = score(_eroded_predictions(ref, tmp_path / "pred"), ref, progress=False)
    pc = res.per_case
    img = {(r.subject, r.frame, r.slice) for r in pc[pc["level"] == "image"].itertuples()}
    vol = {(r.subject, r.frame) for r in pc[pc["level"] == "volume"].itertuples()}
    c = res.summary["counts"]
    assert c["images"] == len(img) and c["volumes"] == len(vol) == len(list(ref.joinpath("labels").rglob("*.nii.gz")))
    assert c["subjects"] == len({s for s, _ in vol}) == 5
    for level in ("image", "volume"):
        for cls, st in c["status"][level].items():
            assert st == pc[(pc["level"] == level) & (pc["class"] == cls)]["status"].value_counts().to_dict()
