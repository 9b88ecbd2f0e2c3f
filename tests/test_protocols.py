"""Protocols as validated, versioned, read-only data: packaged YAML, user files, CLI, leaderboard id."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.benchmark.protocols import (
    ANKENBRAND2021, CARDBENCH_V1, PROTOCOLS, Protocol, ProtocolError, benchmark_suffix, get_protocol,
    load_protocol, protocol_from_dict, protocols_compatible,
)
from cardbench.cli import app
from helpers import erode_lv_boundary, save_nifti

runner = CliRunner()

# the published v1.0 rules, written out by hand from the protocol's definition (docs/protocols.md)
OVERLAP_NAN = {"ok": "value", "both_empty": "nan", "ref_empty": "value", "pred_empty": "value",
               "not_annotated": "nan", "missing": "worst", "failed": "nan"}
DISTANCE = {"ok": "value", "both_empty": "nan", "ref_empty": "worst", "pred_empty": "worst",
            "not_annotated": "nan", "missing": "worst", "failed": "nan"}


def test_builtin_protocols_ship_as_yaml_and_keep_their_rules():
    from importlib.resources import files

    for name in ("cardbench-v1", "ankenbrand2021"):
        assert files("cardbench.benchmark").joinpath("protocol_files", f"{name}.yaml").is_file()
    v1 = CARDBENCH_V1
    assert (v1.level, v1.aggregation, v1.metrics, v1.bootstrap, v1.seed) == (
        "volume", "subject", ("dice", "iou", "hd95", "assd"), 2000, 20210421)
    assert v1.version == "1.0" and v1.added_metrics == ("nsd",) and v1.nsd_tolerance("LV") == 2.0
    assert {m: dict(r) for m, r in v1.policy.items()} == {
        "dice": OVERLAP_NAN, "iou": OVERLAP_NAN, "hd": DISTANCE, "hd95": DISTANCE, "assd": DISTANCE,
        "masd": DISTANCE, "nsd": DISTANCE}
    a = ANKENBRAND2021
    assert (a.version, a.level, a.aggregation, a.metrics, a.bootstrap) == ("1.0", "image", "pooled", ("dice", "iou"), 0)
    assert dict(a.policy["dice"]) == dict(OVERLAP_NAN, both_empty=1.0) and a.nsd_tolerance() is None
    assert "DESIGN.md" not in v1.citation and "docs/protocols.md" in v1.citation
    assert "protocol_files/cardbench-v1.yaml" in v1.citation


def test_policies_and_parameters_are_read_only():
    with pytest.raises(TypeError):
        CARDBENCH_V1.policy["dice"]["both_empty"] = 1.0
    with pytest.raises(TypeError):
        CARDBENCH_V1.policy["new"] = {}
    with pytest.raises(TypeError):
        CARDBENCH_V1.parameters["nsd"]["tolerance_mm"] = 5.0
    with pytest.raises(TypeError):
        PROTOCOLS["mine"] = CARDBENCH_V1
    # still JSON and pickle (worker processes) friendly, and a copy with another tolerance is a new protocol
    assert json.loads(json.dumps(CARDBENCH_V1.to_dict()))["policy"]["dice"] == OVERLAP_NAN
    assert pickle.loads(pickle.dumps(CARDBENCH_V1)) == CARDBENCH_V1
    p = CARDBENCH_V1.with_nsd_tolerance(1.0)
    assert p.nsd_tolerance("MY") == 1.0 and CARDBENCH_V1.nsd_tolerance("MY") == 2.0


def _defn(**change):
    d = CARDBENCH_V1.definition()
    d.update(change)
    return d


@pytest.mark.parametrize("change, key, bad", [
    ({"level": "slice"}, "level", "'slice'"),
    ({"aggregation": "median"}, "aggregation", "'median'"),      # was silently treated as pooled
    ({"metrics": ["dice", "hd96"]}, "metrics", "'hd96'"),
    ({"version": 1.1}, "version", "1.1"),
    ({"bootstrap": -5}, "bootstrap", "-5"),
    ({"parameters": {"nsd": {"tolerance_mm": 0}}}, "parameters.nsd.tolerance_mm", "0"),
    ({"parameters": {"nsd": {"tolerence_mm": 2.0}}}, "parameters.nsd", "'tolerence_mm'"),
])
def test_bad_values_are_refused_when_built(change, key, bad):
    with pytest.raises(ProtocolError) as e:
        protocol_from_dict(_defn(**change), source="p.yaml")
    msg = str(e.value)
    assert msg.startswith("p.yaml: ") and f"key '{key}'" in msg and bad in msg and "allowed" in msg
    assert "\n" not in msg


def test_misspelled_policy_value_and_key():
    d = _defn()
    d["policy"]["dice"]["both_empty"] = "wrost"
    with pytest.raises(ProtocolError, match=r"key 'policy\.dice\.both_empty': bad value 'wrost'; allowed: value, "
                                            r"nan, worst or a number"):
        protocol_from_dict(d, source="p.yaml")
    d = _defn()
    d["policy"]["dice"] = {"both_emtpy": "nan"}
    with pytest.raises(ProtocolError, match="unknown status 'both_emtpy'; allowed: ok, both_empty"):
        protocol_from_dict(d)
    d = _defn()
    d["polcy"] = d.pop("policy")
    with pytest.raises(ProtocolError, match=r"unknown key 'polcy' \(did you mean 'policy'\?\); allowed: name"):
        protocol_from_dict(d)
    with pytest.raises(ProtocolError, match="level"):
        Protocol("x", "1.0", "", "slices", "pooled", ("dice",), {"dice": OVERLAP_NAN})


def test_yaml_round_trip_and_file_limits(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(CARDBENCH_V1.to_yaml())
    back = load_protocol(f)
    assert back == CARDBENCH_V1 and back.source == str(f) and get_protocol(str(f)) == CARDBENCH_V1
    assert load_protocol(_write(tmp_path / "a.yaml", ANKENBRAND2021.to_yaml())) == ANKENBRAND2021
    # a partial policy takes each metric's default edge-case rules from the registry
    mini = _write(tmp_path / "mini.yaml", "name: mini\nversion: '1.0'\nlevel: volume\naggregation: subject\n"
                                          "metrics: [dice, nsd]\npolicy: {dice: {both_empty: 1.0}}\n")
    m = load_protocol(mini)
    assert dict(m.policy["dice"]) == dict(OVERLAP_NAN, both_empty=1.0) and dict(m.policy["nsd"]) == DISTANCE
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(_write(tmp_path / "b.yaml", "name: [unclosed\n"))
    with pytest.raises(ProtocolError, match="must be a YAML mapping"):
        load_protocol(_write(tmp_path / "c.yaml", "- a\n- b\n"))
    with pytest.raises(ProtocolError, match="not valid YAML"):  # no tags: nothing is executed
        load_protocol(_write(tmp_path / "d.yaml", "name: !!python/object/apply:os.system ['true']\n"))
    with pytest.raises(ProtocolError, match="larger than"):
        load_protocol(_write(tmp_path / "e.yaml", "#" * (300 * 1024)))
    with pytest.raises(ProtocolError, match="not found"):
        load_protocol(tmp_path / "missing.yaml")


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_leaderboard_id_and_compatibility():
    v1 = CARDBENCH_V1.to_dict()
    assert benchmark_suffix(v1) == "" and benchmark_suffix(ANKENBRAND2021.to_dict()) == ""
    assert benchmark_suffix(CARDBENCH_V1.with_nsd_tolerance(1.5).to_dict()) == "+nsd1.5mm"
    assert benchmark_suffix(CARDBENCH_V1.with_nsd_tolerance({"LV": 1.5, "MY": 2}).to_dict()) == "+nsdLV1.5-MY2mm"
    # a benchmark created before NSD existed (same version, no nsd policy) accepts results with NSD
    v10 = {k: v for k, v in v1.items() if k not in ("added_metrics", "parameters", "nsd_tolerance_mm")}
    v10["policy"] = {m: r for m, r in v1["policy"].items() if m != "nsd"}
    assert protocols_compatible(v10, v1) and protocols_compatible(v1, v10)
    assert not protocols_compatible(dict(v10, version="2.0"), v1)
    changed = json.loads(json.dumps(v1))
    changed["policy"]["dice"]["both_empty"] = 1.0
    assert not protocols_compatible(v1, changed)
    assert not protocols_compatible(v1, CARDBENCH_V1.with_nsd_tolerance(1.0).to_dict())


# ------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def pair(tmp_path_factory, sunnybrook_prepared):
    """Two Sunnybrook volumes as reference and LV-eroded predictions (NIfTI)."""
    import nibabel as nib

    from cardbench.datasets.io import read_nifti_mask

    root = tmp_path_factory.mktemp("proto")
    sb = sunnybrook_prepared  # prepared once per test run (conftest); read only
    for p in sorted((sb / "labels").rglob("*.nii.gz"))[:2]:
        img = nib.load(p)
        lab = read_nifti_mask(p).array.astype(np.uint8)
        save_nifti(root / "ref" / p.name, lab, img.affine)
        save_nifti(root / "pred" / p.name, erode_lv_boundary(lab, 2), img.affine)
    return root


def _score(pair, out, *extra):
    return runner.invoke(app, ["score", str(pair / "pred"), "--reference", str(pair / "ref"), "--classes", "LV,MY",
                               "--out", str(out), *extra])


def test_cli_show_file_score_round_trip(pair, tmp_path):
    shown = runner.invoke(app, ["protocol", "show", "cardbench-v1"])
    assert shown.exit_code == 0
    f = tmp_path / "mine.yaml"
    f.write_text(shown.stdout)
    a = _score(pair, tmp_path / "a", "--protocol", "cardbench-v1")
    b = _score(pair, tmp_path / "b", "--protocol", str(f))
    assert a.exit_code == 0 and b.exit_code == 0, (a.stderr, b.stderr)
    for name in ("per_case.csv", "aggregates.csv", "per_subject.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert sa["results"] == sb["results"]
    assert sb["protocol"]["source"] == str(f) and sa["protocol"]["nsd_tolerance_mm"] == 2.0
    lst = runner.invoke(app, ["protocol", "list"])
    assert lst.exit_code == 0 and "cardbench-v1" in lst.stdout and "ankenbrand2021" in lst.stdout


def test_cli_nsd_tol_changes_values_and_is_recorded(pair, tmp_path):
    a = _score(pair, tmp_path / "a")
    b = _score(pair, tmp_path / "b", "--nsd-tol", "0.5")
    assert a.exit_code == 0 and b.exit_code == 0
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert sb["protocol"]["nsd_tolerance_mm"] == 0.5 and sb["protocol"]["parameters"]["nsd"]["tolerance_mm"] == 0.5
    import pandas as pd

    pa = pd.read_csv(tmp_path / "a" / "per_case.csv")
    pb = pd.read_csv(tmp_path / "b" / "per_case.csv")
    assert pa["dice"].equals(pb["dice"]) and pa["hd95"].equals(pb["hd95"])
    assert pb["nsd"].mean() < pa["nsd"].mean()
    c = _score(pair, tmp_path / "c", "--nsd-tol", "MY=0.5,default=2")
    assert c.exit_code == 0, c.stderr
    sc = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert sc["protocol"]["nsd_tolerance_mm"] == {"MY": 0.5, "default": 2.0}
    pc = pd.read_csv(tmp_path / "c" / "per_case.csv")
    for cls, same in (("LV", pa), ("MY", pb)):  # LV at 2 mm as in run a, MY at 0.5 mm as in run b
        sel = pc["class"] == cls
        assert pc.loc[sel, "nsd"].equals(same.loc[same["class"] == cls, "nsd"].set_axis(pc.index[sel]))


def test_cli_misspelled_policy_exits_2_at_load(pair, tmp_path):
    text = CARDBENCH_V1.to_yaml().replace("missing: worst", "missing: wrost", 1)
    f = _write(tmp_path / "typo.yaml", text)
    res = _score(pair, tmp_path / "out", "--protocol", str(f))
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert str(f) in lines[0] and "policy.dice.missing" in lines[0] and "'wrost'" in lines[0]
    assert "value, nan, worst" in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
    for args in (["--protocol", "cardbench-v2"], ["--nsd-tol", "-1"], ["--nsd-tol", "two"], ["--nsd-tol", "LV:2"],
                 ["--protocol", "ankenbrand2021", "--nsd-tol", "1"]):
        r = _score(pair, tmp_path / "out", *args)
        assert r.exit_code == 2 and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, args
    r = runner.invoke(app, ["protocol", "show", "nope"])
    assert r.exit_code == 2 and "cardbench-v1, ankenbrand2021" in r.stderr


def test_the_protocol_of_the_extending_walkthrough_builds():
    """docs/extending.md's example protocol file is a valid protocol and means what the page says."""
    import re

    import yaml

    from cardbench.benchmark.scoring import surface_plan

    page = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    block = re.findall(r"```yaml\n(.*?)```", page, re.S)[0]
    p = protocol_from_dict(yaml.safe_load(block), source="docs/extending.md")
    assert (p.level, p.metrics, p.policy["dice"]["both_empty"]) == ("image", ("dice", "hd95", "nsd"), 1.0)
    assert (p.nsd_tolerance("MY"), p.nsd_tolerance("LV"), p.nsd_tolerance("RV")) == (1.0, 2.0, 2.0)
    assert surface_plan(p) == (("hd95", "nsd"), {"nsd": {"tolerance_mm": [2.0, 1.0, 2.0]}})
