"""Fixes of a fresh-user trial (helper s16b): `cardbench demo` tables at 80 and 120 columns, and
three messages (an all-zero NIfTI, a file given as --reference, `data verify` of a dataset never fetched).

Real data: the reproduction table from the published confusion tables of Ankenbrand et al. 2021 and
the Kaggle label-quality scores (embedded data); every number checked against the table's own columns
(formatted at 3 decimals, as the paper prints them)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cardbench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def reproduction():
    from cardbench.reproductions.ankenbrand2021.seven_tesla import reproduce_ankenbrand2021

    return reproduce_ankenbrand2021()[0]


@pytest.fixture(scope="module")
def label_quality_v1():
    from cardbench.reproductions.ankenbrand2021.seven_tesla import score_label_quality

    return score_label_quality("cardbench-v1")


def _render(width: int, fn, *args) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=False, color_system=None)
    fn(*args, con)
    return buf.getvalue()


def _intervals_whole(out: str) -> None:
    for ln in out.splitlines():
        assert ln.count("[") == ln.count("]"), ln  # an interval opened on a line closes on it


@pytest.mark.parametrize("columns", [80, 120])
def test_reproduction_table_fits_and_keeps_every_number(reproduction, columns):
    from cardbench.benchmark.report import print_reproduction

    out = _render(columns, print_reproduction, reproduction)
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= columns
    assert "…" not in out
    _intervals_whole(out)
    for _, r in reproduction.iterrows():
        label = r["label"]
        rows = [ln for ln in lines if ln.startswith(label + " ")]
        assert rows, label
        text = "\n".join(rows)
        assert f"{r['published_LV']:.3f} / {r['published_MY']:.3f}" in text
        assert f"{r['ankenbrand2021_LV']:.3f} / {r['ankenbrand2021_MY']:.3f}" in text
        for c in ("LV", "MY"):
            mean, lo, hi = (r[f"cardbench-v1_{c}"], r[f"cardbench-v1_{c}_ci_low"], r[f"cardbench-v1_{c}_ci_high"])
            assert re.search(rf"{mean:.3f}\s+\[{lo:.3f}, {hi:.3f}\]", text), (label, c)


def test_reproduction_table_stays_one_table_when_wide(reproduction):
    from cardbench.benchmark.report import print_reproduction

    out = _render(200, print_reproduction, reproduction)
    assert "protocol cardbench-v1" not in out  # the one wide table, no stacked ones
    assert max(len(ln) for ln in out.splitlines()) <= 200
    _intervals_whole(out)


@pytest.mark.parametrize("columns", [80, 120])
def test_label_quality_table_keeps_base_mid_apex_rows(label_quality_v1, columns):
    from cardbench.benchmark.report import print_summary

    out = _render(columns, print_summary, label_quality_v1)
    assert max(len(ln) for ln in out.splitlines()) <= columns
    assert "…" not in out
    _intervals_whole(out)
    agg = label_quality_v1.aggregates
    for pos in ("base", "mid", "apex"):
        for cls in ("LV", "MY"):
            r = agg[(agg.grouping == "position") & (agg.group == pos) & (agg["class"] == cls)
                    & (agg.metric == "dice")].iloc[0]
            want = rf"position={pos}\s.*{cls}\s.*{r['mean']:.3f}\s+\[{r['ci_low']:.3f}, {r['ci_high']:.3f}\]"
            assert re.search(want, out), want


def test_demo_at_80_columns_cuts_no_title(tmp_path):
    res = runner.invoke(app, ["demo", "--no-baseline", "--out", str(tmp_path / "d")],
                        env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0, res.stdout
    out = res.stdout
    assert max(len(ln) for ln in out.splitlines()) <= 80
    assert "…" not in out
    flat = " ".join(out.split())
    assert "from the published confusion tables" in flat
    assert "vs 816 manual masks of 9 patients" in flat
    assert "7 of 7 rows match" in out
    _intervals_whole(out)


# ---------------------------------------------------------------- messages

def _nifti_error(path):
    from cardbench.datasets.formats.base import MaskReadError, read_file_bytes
    from cardbench.datasets.formats.nifti import NiftiFormat

    with pytest.raises(MaskReadError) as ei:
        NiftiFormat().check_bytes(read_file_bytes(path), path)
    return str(ei.value)


@pytest.mark.parametrize("name", ["zeros.nii.gz", "zeros.nii"])
def test_all_zero_nifti_is_not_called_text(tmp_path, name):
    import gzip

    p = tmp_path / name
    raw = bytes(100_000)  # like `head -c 100000 /dev/zero`
    p.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    msg = _nifti_error(p)
    assert "\n" not in msg and str(p) in msg
    assert "text" not in msg and "zeros only" in msg
    assert msg.count("no NIfTI magic n+1/n+2") == 1  # the reason once, in the problem; the fix names the format
    assert "save the mask as a real NIfTI file" in msg


def test_text_and_binary_named_nii_are_still_told_apart(tmp_path):
    t = tmp_path / "notes.nii"
    t.write_bytes(b"subject,frame,label\n" * 40)
    assert "the content is text" in _nifti_error(t)
    b = tmp_path / "blob.nii"
    b.write_bytes(bytes(range(256)) * 4)  # NUL and control bytes: binary, not text
    assert "unknown binary data" in _nifti_error(b)


def test_a_file_as_reference_is_named_a_file(tmp_path):
    (tmp_path / "pred").mkdir()
    ref = tmp_path / "passwd"
    ref.write_text("root:x:0:0:root:/root:/bin/bash\n")
    res = runner.invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(ref)])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert str(ref) in err and "is a file, not a folder" in err and "not found" not in err
    assert "card.yaml" in err and ".nii.gz" in err  # what a reference folder holds


def test_verify_of_a_dataset_never_fetched_says_so_at_once(tmp_path):
    res = runner.invoke(app, ["data", "verify", "kaggle-dsb-ukbb", "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 1
    out = (res.stdout + res.stderr).strip()
    assert len(out.splitlines()) == 1, out  # no progress lines before it
    assert "%" not in out and "not fetched yet" in out and "cardbench data fetch kaggle-dsb-ukbb" in out


def test_evaluate_model_reference_file_is_named_a_file(tmp_path, capsys):
    import typer

    from cardbench.cli.evaluate import resolve_reference

    ref = tmp_path / "ref.nii.gz"
    ref.write_bytes(b"\x1f\x8b")
    with pytest.raises(typer.Exit) as ei:
        resolve_reference(None, ref)
    assert ei.value.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is a file, not a folder" in err and "card.yaml" in err and "not found" not in err
