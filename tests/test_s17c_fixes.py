"""Input problems a fresh-user trial found (s17c): impossible pixel counts on the Kaggle volume track,
unbounded --labels/--protocol files, float options and --classes of `cardbench score` that turned
checks off, and submission.yaml errors that did not say file, problem and fix."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

from cardbench.cli import main
from cardbench.reproductions.ankenbrand2021.kaggle_volumes import VolumeTrackError, read_pixel_counts


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["cardbench", *args])
    monkeypatch.setenv("COLUMNS", "400")  # one problem = one line, never wrapped by the console
    with pytest.raises(SystemExit) as ei:
        main()
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


def _table(rows):  # as tests/test_volume_track.py
    text = "file\tlv_pixels\tmy_pixels\n" + "".join(f"{f}\t{lv}\t{my}\n" for f, lv, my in rows)
    return text.encode()


IMG = "images/7/7-frame000-slice000.png"
IMG2 = "images/7/7-frame001-slice000.png"


# --- 1. volume track: counts above a bound -----------------------------------------------------

def test_pixel_count_above_int32_refused_before_cast_without_warning():
    """1e300 pixels cannot be a count of one image; refused before the int64 cast (that cast
    leaked 'RuntimeWarning: invalid value encountered in cast' and scored EF 7e16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked RuntimeWarning fails the test
        with pytest.raises(VolumeTrackError, match=r"t\.tsv: 1 row\(s\) with lv_pixels above 2147483647 .*"
                                                   r"images/7/7-frame000-slice000\.png"):
            read_pixel_counts(_table([(IMG, "1e300", 1)]), "t.tsv")
        with pytest.raises(VolumeTrackError, match="my_pixels above 2147483647"):
            read_pixel_counts(_table([(IMG, 1, 2**31)]), "t.tsv")  # 2**31 = MAX + 1
    # 2**31 - 1 itself is still a count (no grid given)
    assert int(read_pixel_counts(_table([(IMG, 2**31 - 1, 0)]), "t.tsv")["lv_pixels"].iloc[0]) == 2**31 - 1


def test_pixel_counts_above_grid_refused():
    """A 256 x 256 grid has 65,536 pixels: LV + MY of one image can be at most that."""
    ok = read_pixel_counts(_table([(IMG, 30000, 35536)]), "t.tsv", grid=256)  # 30000 + 35536 = 65536
    assert int(ok["lv_pixels"].iloc[0] + ok["my_pixels"].iloc[0]) == 65536
    with pytest.raises(VolumeTrackError, match=r"t\.tsv: 1 row\(s\) with lv_pixels \+ my_pixels above 65536.*"
                                               r"256x256.*frame001.*--grid"):
        read_pixel_counts(_table([(IMG, 1, 1), (IMG2, 30000, 35537)]), "t.tsv", grid=256)  # 65537
    with pytest.raises(VolumeTrackError, match="above 65536"):
        read_pixel_counts(_table([(IMG, 99999999, 0)]), "t.tsv", grid=256)
    with pytest.raises(VolumeTrackError, match="above 4, the pixels of a 2x2 grid"):  # grid 2: 4 pixels
        read_pixel_counts(_table([(IMG, 3, 2)]), "t.tsv", grid=2)


def test_volumes_score_checks_the_table_before_the_kaggle_data(monkeypatch, capsys, tmp_path):
    """Without the Kaggle data a bad table is still exit 2 naming the table (was exit 1 'train.csv: not
    found')."""
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    nodata = tmp_path / "no-kaggle-data"
    code, out, err = _run(monkeypatch, capsys, "volumes", "score", str(empty), "--data", str(nodata))
    assert code == 2 and "train.csv" not in err, err
    assert len(err.strip().splitlines()) == 1 and "empty.tsv: cannot be read as a tab-separated table" in err
    big = tmp_path / "big.tsv"
    big.write_bytes(_table([(IMG, 99999999, 1)]))
    code, out, err = _run(monkeypatch, capsys, "volumes", "score", str(big), "--data", str(nodata))
    assert code == 2 and "big.tsv: 1 row(s) with lv_pixels + my_pixels above 65536" in err, err
    big.write_bytes(_table([(IMG, "1e300", 1)]))
    code, out, err = _run(monkeypatch, capsys, "volumes", "score", str(big), "--data", str(nodata))
    assert code == 2 and "lv_pixels above 2147483647" in err and "RuntimeWarning" not in err, err


# --- 2. --labels / --protocol files: regular files within max_meta_bytes ------------------------------

def test_labels_device_refused(monkeypatch, capsys, sunnybrook_prepared, tmp_path):
    ref = sunnybrook_prepared
    code, out, err = _run(monkeypatch, capsys, "score", str(ref / "labels"), "-r", str(ref), "--labels",
                          "/dev/zero", "--no-save")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "/dev/zero: label map file: not a regular file" in err


def test_labels_and_protocol_too_large_name_the_limit(monkeypatch, tmp_path):
    from cardbench.benchmark.protocols import ProtocolError, load_protocol
    from cardbench.labelmaps import get_label_map

    monkeypatch.setenv("CARDBENCH_MAX_META_BYTES", "100")
    lm = tmp_path / "map.yaml"
    lm.write_text("labels: {background: 0, LV: 1}\n" + "#" * 100 + "\n")  # 31 + 101 = 132 bytes > 100
    with pytest.raises(ValueError, match=r"map\.yaml: label map file: 132 bytes exceed the limit of 100.*"
                                         r"CARDBENCH_MAX_META_BYTES"):
        get_label_map(str(lm))
    lm.write_text("labels: {background: 0, LV: 1}\n")  # 31 bytes: read
    assert get_label_map(str(lm)).labels == {"background": 0, "LV": 1}
    pr = tmp_path / "p.yaml"
    pr.write_text("#" * 101)
    with pytest.raises(ProtocolError, match=r"p\.yaml: protocol file is larger than 100 bytes.*"
                                            r"CARDBENCH_MAX_META_BYTES"):
        load_protocol(pr)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_protocol_and_labels_pipe_refused_without_reading(monkeypatch, capsys, tmp_path):
    """A named pipe would block (or stream without end) if read: refused by its stat."""
    from cardbench.labelmaps import get_label_map

    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    code, out, err = _run(monkeypatch, capsys, "score", str(tmp_path), "-r", str(tmp_path), "--protocol",
                          str(fifo), "--no-save")
    assert code == 2 and "p.yaml: not a regular file" in err, err
    with pytest.raises(ValueError, match="not a regular file"):
        get_label_map(str(fifo))


# --- 3. float options and --classes of `cardbench score` --------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_affine_tol_must_be_finite_non_negative(monkeypatch, capsys, tmp_path, value):
    code, out, err = _run(monkeypatch, capsys, "score", str(tmp_path), "-r", str(tmp_path),
                          f"--affine-tol={value}", "--no-save")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--affine-tol" in lines[0] and "finite number of mm >= 0" in lines[0]


def test_affine_tol_python_api(sunnybrook_prepared):
    """The reference's own labels as predictions would score (Dice 1): a bad tolerance is refused first."""
    from cardbench.benchmark import score

    ref = sunnybrook_prepared
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match=r"affine_tol .*: must be a finite number of mm >= 0"):
            score(ref / "labels", ref, affine_tol=bad, progress=False)


@pytest.mark.parametrize("value", ["", ",,", " , "])
def test_empty_classes_refused(monkeypatch, capsys, tmp_path, value):
    code, out, err = _run(monkeypatch, capsys, "score", str(tmp_path), "-r", str(tmp_path),
                          f"--classes={value}", "--no-save")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--classes" in lines[0] and "no class given" in lines[0] and "LV, MY, RV" in lines[0]


# --- 4./5. submission.yaml: label_map mappings, duplicate keys, text fields, tags ------------------

@pytest.fixture(scope="module")
def sub_copy(sunnybrook_prepared, tmp_path_factory):
    """The Sunnybrook sample's reference labels as a submission (a copy: submission.yaml is written)."""
    import shutil

    dst = tmp_path_factory.mktemp("s17c") / "sub"
    shutil.copytree(sunnybrook_prepared / "labels", dst)
    return dst


def _score_yaml(monkeypatch, capsys, sub, ref, text):
    (sub / "submission.yaml").write_text(text)
    code, out, err = _run(monkeypatch, capsys, "score", str(sub), "-r", str(ref), "--no-save")
    return code, [ln for ln in err.splitlines() if ln.strip()]


@pytest.mark.parametrize("mapping,fragment", [
    ("{LV: 999, MY: -1}", "needs a 'background' entry"),
    ('{background: 0, LV: "one"}', "class LV has value 'one'"),
    ("{background: 0, LV: 1, MY: 1}", "two classes share one value"),
])
def test_label_map_mapping_errors_name_submission_yaml(monkeypatch, capsys, sub_copy, sunnybrook_prepared,
                                                       mapping, fragment):
    code, lines = _score_yaml(monkeypatch, capsys, sub_copy, sunnybrook_prepared, f"label_map: {mapping}\n")
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(f"error: {sub_copy / 'submission.yaml'}: label_map ")
    assert fragment in lines[0] and ". Fix: " in lines[0]
    assert "nothing was scored" in lines[1]


@pytest.mark.parametrize("text,fragment", [
    ("name: a\nname: b\n", "gives a key twice: duplicate key 'name' (line 2). Fix: give each key once"),
    ("name: [1, 2]\n", "name is list '[1, 2]', not text. Fix: "),
    ("team: {a: 1}\n", "team is dict"),
    ("method: 12\n", "method is int '12', not text"),
    ("name: !!python/object/apply:os.system ['true']\n",
     "uses the YAML tag !!python/object/apply:os.system (line 1); YAML tags are not allowed"),
])
def test_submission_yaml_keys_types_tags(monkeypatch, capsys, sub_copy, sunnybrook_prepared, text, fragment):
    code, lines = _score_yaml(monkeypatch, capsys, sub_copy, sunnybrook_prepared, text)
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(f"error: {sub_copy / 'submission.yaml'}: ") and fragment in lines[0], lines
    assert "fix the syntax" not in lines[0] and "nothing was scored" in lines[1]


def test_duplicate_key_in_nested_mapping_and_label_map_file(tmp_path):
    """The unique-key loader checks every mapping, also the label map inside, and label map files."""
    from cardbench.labelmaps import get_label_map

    lm = tmp_path / "m.yaml"
    lm.write_text("labels:\n  background: 0\n  LV: 1\n  LV: 2\n")
    with pytest.raises(ValueError, match=r"m\.yaml: label map file: gives a key twice: duplicate key 'LV' "
                                         r"\(line 4\)"):
        get_label_map(str(lm))
    lm.write_text("labels: {background: 0, LV: 1, MY: 2}\n")  # distinct keys: read
    assert get_label_map(str(lm)).labels == {"background": 0, "LV": 1, "MY": 2}
