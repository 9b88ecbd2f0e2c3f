"""Fixes of a fresh-user trial: the dashboard's image reader is bounded; `leaderboard show`, `volumes
score` and `data info` fit an 80-column terminal without cutting a word or a number."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardbench.datasets.io import MaskReadError
from cardbench.limits import Limits
from helpers import refusal_and_peak


# ---- 1. the drill-down's image reader (cardbench.dashboard.images.read_volume)

def _nifti_header(shape, dtype=np.int16) -> bytes:
    """A NIfTI-1 single-file header (352 bytes: 348 + the extension flag) declaring ``shape``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def test_image_declaring_a_huge_shape_is_refused_before_decoding(tmp_path):
    from cardbench.dashboard.images import read_volume

    # declares 4096 x 4096 x 64 int16 = 2 GiB (8 GiB as float32) but holds 1 KiB: nothing is allocated
    f = tmp_path / "huge.nii.gz"
    f.write_bytes(gzip.compress(_nifti_header((4096, 4096, 64)) + b"\x00" * 1024))
    msg, peak = refusal_and_peak(lambda: read_volume(f), MaskReadError)
    assert str(f) in msg and "declares" in msg and "CARDBENCH_MAX_MASK_BYTES" in msg
    assert peak < 4 * 2**20, peak


def test_image_gzip_expanding_beyond_its_header_is_refused_with_bounded_memory(tmp_path):
    from cardbench.dashboard.images import read_volume

    # header: 64 x 64 x 2 int16 = 16,384 bytes of data; the gzip expands to 32 MiB of zeros after it
    f = tmp_path / "bomb.nii.gz"
    f.write_bytes(gzip.compress(_nifti_header((64, 64, 2)) + b"\x00" * (32 * 2**20), compresslevel=9))
    assert f.stat().st_size < 100_000
    msg, peak = refusal_and_peak(lambda: read_volume(f), MaskReadError)
    assert str(f) in msg and "decompresses to more than" in msg
    assert peak < 4 * 2**20, peak


def test_image_float32_output_counts_against_the_limit(tmp_path):
    from cardbench.dashboard.images import read_volume

    # uint8 64 x 64 x 4 = 16,384 bytes stored, 65,536 bytes as the float32 array returned
    f = tmp_path / "u8.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 4), np.uint8), np.eye(4)), str(f))
    assert read_volume(f, Limits(max_mask_bytes=65_536))[0].shape == (64, 64, 4)
    with pytest.raises(MaskReadError, match="above the limit of 65535 bytes"):
        read_volume(f, Limits(max_mask_bytes=65_535))


def test_image_not_nifti_by_its_bytes_is_refused(tmp_path):
    from cardbench.dashboard.images import read_volume

    f = tmp_path / "fake.nii.gz"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000)
    with pytest.raises(MaskReadError, match="not gzip-compressed"):
        read_volume(f)


def test_sunnybrook_image_reads_as_nibabel_does(sunnybrook_prepared):
    from cardbench.dashboard.images import read_volume

    files = sorted((sunnybrook_prepared / "images").rglob("*.nii.gz"))
    assert files
    for f in files[:2]:
        img = nib.load(str(f))
        want = np.asarray(img.dataobj, dtype=np.float32)
        while want.ndim > 3:
            want = want[..., 0]
        arr, zooms = read_volume(f)
        assert arr.dtype == np.float32 and arr.shape == want.shape
        np.testing.assert_array_equal(arr, want)
        assert zooms == tuple(float(z) for z in img.header.get_zooms()[:3])


# ---- 4. `cardbench data info` wraps at the terminal's width

def test_data_info_fits_80_columns_without_losing_words():
    from typer.testing import CliRunner

    from cardbench.cli import app
    from cardbench.datasets.cards import load_card

    res = CliRunner().invoke(app, ["data", "info", "ankenbrand2021-derived"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    words = " ".join(res.stdout.split())  # wrapping changes only the whitespace between words
    c = load_card("ankenbrand2021-derived")
    for text in [c.description, *c.known_issues]:
        assert " ".join(text.split()) in words


# ---- 2. `cardbench leaderboard show` (table format): nothing cut at 80 or 120 columns

@pytest.mark.parametrize("columns", [80, 120])
def test_leaderboard_show_fits_and_keeps_every_name_and_value(prefilled_dir, columns):
    import re

    from typer.testing import CliRunner

    from cardbench.benchmark.leaderboard import direction_text, display_table, open_leaderboard
    from cardbench.cli import app

    res = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(prefilled_dir)],
                             env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= columns, max(lines, key=len)
    words = " ".join(res.stdout.split())
    lb = open_leaderboard(prefilled_dir, prefill=False)
    n_rows = 0
    for b in lb.benchmark_ids():
        df = lb.ranked(b, "dice_lv")
        a = df.attrs
        title = f"{lb.benchmark(b).title}  |  ranked by {a['rank_column']} ({a['group']}), " \
                f"{direction_text(a['direction'])}"
        assert " ".join(title.split()) in words  # wrapped, not cut
        disp = display_table(df)
        for _, r in disp.iterrows():
            # the lines of this entry in every table of the benchmark: its rank and name, then the next line
            # (the value's interval in the narrow layout)
            at = [i for i, ln in enumerate(lines) if re.match(rf"^[\s│┃]*{re.escape(r['rank'])}\s+[│┃]?\s*"
                                                               rf"{re.escape(r['entry'])}(\s|$)", ln)]
            assert at, (b, r["entry"])
            text = " ".join(lines[i] + " " + lines[i + 1] for i in at if i + 1 < len(lines))
            for c in disp.columns:
                if c in ("rank", "entry", "label"):
                    continue
                for part in str(r[c]).replace(" [", "\n[").split("\n"):
                    assert re.search(rf"(^|\s){re.escape(part)}(\s|$)", text), (b, r["entry"], c, part)
            n_rows += 1
    assert n_rows >= 14


# ---- 3. `cardbench volumes score` (print_volume_result): every number whole at 80 columns

def _volume_summary() -> dict:
    """A small volume-track summary (the fields summary.json has), with wide numbers and long group names."""
    ef = {g: dict(n=n, mean=4.34, mean_ci_low=3.51, mean_ci_high=15.65, sd=7.62, median=3.37, median_ci_low=2.81,
                  median_ci_high=13.93, iqr=4.28, n_worst_case=1)
          for g, n in (("all", 1140), ("split=train", 500), ("split=validate", 200))}
    agreement = []
    for grouping, group in (("all", "all"), ("split", "validate")):
        for index, unit, k in (("LVEDV", "mL", 0), ("LVEF", "%", 1)):
            agreement.append(dict(grouping=grouping, group=group, index=index, unit=unit, n_subjects=1139 - k,
                                  n_excluded=k, ref_mean=162.97 + k, pred_mean=161.46 + k, bias=-1.52 - k,
                                  bias_ci_low=-12.35 - k, bias_ci_high=-0.69, loa_low=-130.16 - k, loa_high=127.12,
                                  mae=10.55 + k, mae_ci_low=9.26, mae_ci_high=10.83 + k, pearson_r=0.969,
                                  pearson_r_ci_low=-0.956, pearson_r_ci_high=0.977 + k / 100))
    return {"submission": {"name": "resnet34_5percent_size128_normalTfms_ceLoss"}, "rule": {"name": "cardbench"},
            "ef_abs_diff": ef, "agreement": agreement}


def _printed(summary: dict, columns: int) -> str:
    import io

    from rich.console import Console

    from cardbench.benchmark.report_clinical import print_volume_result

    con = Console(width=columns, file=io.StringIO(), color_system=None, highlight=False)
    print_volume_result(summary, con)
    return con.file.getvalue()


def test_volume_result_at_80_columns_keeps_every_number_whole():
    import re

    s = _volume_summary()
    text = _printed(s, 80)
    assert "…" not in text
    assert max(len(ln) for ln in text.splitlines()) <= 80
    tokens = set(re.split(r"[\s\[\],()+]+", text))
    want = {"1140", "500", "200", "split=train", "split=validate", "1"}
    for e in s["ef_abs_diff"].values():
        want |= {f"{e[k]:.2f}" for k in ("mean", "mean_ci_low", "mean_ci_high", "sd", "median", "median_ci_low",
                                          "median_ci_high", "iqr")}
    for r in s["agreement"]:
        want |= {f"{r[k]:.2f}" for k in ("ref_mean", "pred_mean", "bias", "bias_ci_low", "bias_ci_high", "loa_low",
                                          "loa_high", "mae", "mae_ci_low", "mae_ci_high")}
        want |= {f"{r[k]:.3f}" for k in ("pearson_r", "pearson_r_ci_low", "pearson_r_ci_high")}
        want |= {str(r["n_subjects"]), r["index"], r["unit"]}
    assert want <= tokens, sorted(want - tokens)
    assert "(+1 excl.)" in text


def test_volume_result_in_a_wide_terminal_is_one_table_each():
    text = _printed(_volume_summary(), 250)
    assert "mean [95% CI]" in text and "Pearson r [95% CI]" in text and "…" not in text
    assert text.count("Agreement with the released volumes") == 1


def test_case_page_shows_a_bad_image_as_one_warning(prefilled_dir, sunnybrook_prepared, tmp_path, monkeypatch):
    """The drill-down (one AppTest run): an image that declares a huge shape is one warning naming the file,
    and the page still draws the reference contours (on black)."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from cardbench.dashboard import images

    bomb = tmp_path / "images" / "huge.nii.gz"
    bomb.parent.mkdir()
    bomb.write_bytes(gzip.compress(_nifti_header((4096, 4096, 64)) + b"\x00" * 1024))
    label = sorted((sunnybrook_prepared / "labels").rglob("*.nii.gz"))[0]
    # a 7T entry of the pre-filled board, its files as a crafted submission.yaml would place them
    monkeypatch.setattr(images, "locate_case", lambda *a, **k: images.CaseFiles(bomb, label, None))
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(prefilled_dir))
    at = AppTest.from_file(str(Path(images.__file__).parent / "app.py"), default_timeout=120)
    for k, v in {"benchmark": "cmr-7t__test__ankenbrand2021", "entry": "base", "subject": "27"}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("views/case.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warns = [str(w.value) for w in at.warning if str(bomb) in str(w.value)]
    assert len(warns) == 1 and "declares" in warns[0] and "\n" not in warns[0], warns
    assert not at.error
    assert any(c.proto.spec and '"reference"' in c.proto.spec for c in at.get("plotly_chart"))


def test_volume_track_reproduction_at_80_columns_keeps_every_number_whole():
    import io
    import math
    import re

    import pandas as pd
    from rich.console import Console

    from cardbench.benchmark.report_clinical import print_volume_track

    rows = []
    for i, (label, pub) in enumerate((("r34_p05_s256_extremeTfms", 3.78), ("r34_p05_s256_fastai2", math.nan))):
        r = {"model": f"m{i}", "label": label, "match": (True if i == 0 else None), "heldout_n": 965 - i,
             "heldout_mean": 4.17 + i, "ef_bias": -0.74 - i, "ef_loa_low": -10.87 - i, "ef_loa_high": 9.39 + i,
             "cardbench_mean_ci_low": 3.57, "cardbench_mean_ci_high": 14.01}
        for k, v in (("mean", 3.79), ("sd", 13.59), ("median", 2.89), ("iqr", 3.61)):
            r[f"published_{k}"] = pub if math.isnan(pub) else v - 0.01
            r[f"seed_{k}"] = v - 0.02
            r[f"cardbench_{k}"] = v + i
        rows.append(r)
    table = pd.DataFrame(rows)
    con = Console(width=80, file=io.StringIO(), color_system=None, highlight=False)
    print_volume_track(table, con)
    text = con.file.getvalue()
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= 80
    tokens = set(re.split(r"[\s\[\],]+", text))
    want = {"r34_p05_s256_extremeTfms", "r34_p05_s256_fastai2", "965", "964", "yes"}
    for r in rows:
        want |= {f"{r[k]:.2f}" for k in r if k.startswith(("seed_", "cardbench_", "ef_", "heldout_mean"))}
        want |= {f"{r[k]:.2f}" for k in r if k.startswith("published_") and not math.isnan(r[k])}
    assert want <= tokens, sorted(want - tokens)
