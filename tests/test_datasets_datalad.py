"""DataLad release of the Sunnybrook sample: release -> datalad clone -> datalad get gives byte-identical
files; binaries annexed, text in git; web URLs of the published source files; the conversion recorded
with `datalad run` re-executes to the same bytes; `fetch --backend datalad`.

Needs datalad and git-annex (the [datalad] extra); skipped cleanly when datalad is not importable.
The source files come from the shared real-data folder used as a mirror.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("datalad", reason="datalad is not installed (pip install 'cardbench[datalad]')")

from cardbench.cli import app  # noqa: E402
from cardbench.datasets import release as release_mod  # noqa: E402

pytestmark = pytest.mark.datalad
runner = CliRunner()
IDENTITY = {"GIT_AUTHOR_NAME": "cardbench tests", "GIT_AUTHOR_EMAIL": "tests@cardbench.invalid",
            "GIT_COMMITTER_NAME": "cardbench tests", "GIT_COMMITTER_EMAIL": "tests@cardbench.invalid"}


def _env() -> dict:
    venv_bin = str(Path(sys.executable).parent)  # datalad, git-annex (PyPI wheel) and cardbench live here
    return {**os.environ, **IDENTITY, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}


def _run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}: {r.stderr}\n{r.stdout}"
    return r.stdout


def _files(root: Path) -> dict[str, bytes]:
    """Every file below root (symlinks followed), except .git; relative path -> bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] == ".git" or p.is_dir():
            continue
        out[str(rel)] = p.read_bytes()
    return out


def _registry(shared_data, prefix):
    with open(shared_data / "REGISTRY.tsv", newline="", encoding="utf-8") as fh:
        return {r["local_path"]: r for r in csv.DictReader(fh, delimiter="\t") if r["local_path"].startswith(prefix)}


@pytest.fixture(scope="module")
def released(tmp_path_factory, shared_data):
    """`cardbench data release sunnybrook-sample --out X` (source files from the shared-data mirror)."""
    base = tmp_path_factory.mktemp("release")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in IDENTITY.items():
            mp.setenv(k, v)
        res = runner.invoke(app, ["data", "release", "sunnybrook-sample", "--out", str(base / "X"),
                                  "--mirror", str(shared_data), "--cache", str(base / "cache")])
    assert res.exit_code == 0, res.stderr
    return base, base / "X", res


def test_release_clone_get_is_byte_identical(released, shared_data, sunnybrook_prepared):
    base, x, res = released
    assert "conversion: converter" in res.stderr
    y = base / "Y"
    _run(["datalad", "clone", str(x), str(y)])
    # before get, annexed files are dangling symlinks: their content is not there yet
    dcm = y / "sourcedata/sunnybrook-sample/final_data/dicoms/SCD0000101/108.dcm"
    assert dcm.is_symlink() and not dcm.exists()
    _run(["datalad", "get", "-d", str(y), "."], cwd=y)
    fx, fy = _files(x), _files(y)
    assert set(fx) == set(fy) and len(fx) > 300
    assert all(fx[k] == fy[k] for k in fx), [k for k in fx if fx[k] != fy[k]][:5]
    # the source files are the published bytes (sha256 from REGISTRY.tsv, computed here with hashlib)
    reg = _registry(shared_data, "sunnybrook-sample/")
    for lp, row in reg.items():
        assert hashlib.sha256(fy[f"sourcedata/{lp}"]).hexdigest() == row["sha256"], lp
    # the standard layout is what the converter makes from the same sources outside DataLad (the
    # sample prepared once per run from the embedded copy of these sources: byte-identical to a
    # preparation from the shared real data, tests/test_sunnybrook.py test_same_result_from_shared_data)
    direct = _files(sunnybrook_prepared)
    for k, v in direct.items():
        if k.startswith(("images/", "labels/")) or k in ("subjects.csv", "annotations.csv", "volumes.csv"):
            assert fy[k] == v, k
    assert sum(k.startswith("labels/") for k in fy) == 10  # ED and ES of 5 patients
    for k in ("card.yaml", "subjects.csv", "README.md"):
        assert k in fy
    readme = fy["README.md"].decode()
    for frag in ("## Motivation", "## Composition", "## Preprocessing", "## Distribution", "CC0-1.0",
                 "http://hdl.handle.net/10380/3070", "datalad rerun", "SCD0000501"):
        assert frag in readme, frag


def test_binaries_annexed_text_in_git(released):
    _, x, _ = released
    annexed = set(_run(["git", "-C", str(x), "annex", "find", "--include=*"]).split())
    tracked = set(_run(["git", "-C", str(x), "ls-files"]).split())
    binaries = {p for p in tracked if p.endswith((".dcm", ".nii.gz"))}
    texts = {p for p in tracked if p.endswith((".csv", ".yaml", ".md", ".txt"))}
    assert binaries and annexed == binaries
    assert texts and not (texts & annexed)
    for p in texts:
        assert not (x / p).is_symlink(), p
    # annex keys carry the sha256 (SHA256E backend)
    key = _run(["git", "-C", str(x), "annex", "lookupkey", "labels/SCD0000101/SCD0000101_frame19.nii.gz"]).strip()
    data = (x / "labels/SCD0000101/SCD0000101_frame19.nii.gz").read_bytes()
    assert key.startswith("SHA256E-") and hashlib.sha256(data).hexdigest() in key


def test_web_urls_registered_for_published_files(released, shared_data):
    _, x, res = released
    reg = _registry(shared_data, "sunnybrook-sample/final_data/dicoms/")
    n_dcm = len(reg)
    assert f"({n_dcm} with a web URL)" in res.stderr
    lp = "sunnybrook-sample/final_data/dicoms/SCD0000301/7.dcm"
    info = json.loads(_run(["git", "-C", str(x), "annex", "whereis", "--json", f"sourcedata/{lp}"]))
    urls = [u for w in info["whereis"] for u in w.get("urls", [])]
    assert reg[lp]["url"] in urls


def test_conversion_recorded_with_datalad_run_and_reproducible(released):
    base, x, _ = released
    msg = _run(["git", "-C", str(x), "log", "-1", "--format=%B"])
    assert "[DATALAD RUNCMD]" in msg
    assert "cardbench data convert sunnybrook-sample --source sourcedata --into ." in msg
    z = base / "Z"
    _run(["datalad", "clone", str(x), str(z)])
    head = _run(["git", "-C", str(z), "rev-parse", "HEAD"]).strip()
    _run(["datalad", "rerun"], cwd=z)
    # same outputs: rerun changes nothing, so no new commit and a clean tree
    assert _run(["git", "-C", str(z), "rev-parse", "HEAD"]).strip() == head
    assert _run(["git", "-C", str(z), "status", "--porcelain"]).strip() == ""


def test_fetch_backend_datalad(released, tmp_path):
    _, x, _ = released
    dest = tmp_path / "clone"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in IDENTITY.items():
            mp.setenv(k, v)
        res = runner.invoke(app, ["data", "fetch", "sunnybrook-sample", "--backend", "datalad", "--source", str(x),
                                  "--out", str(dest)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(dest)
    fx, fd = _files(x), _files(dest)
    assert set(fx) == set(fd) and all(fx[k] == fd[k] for k in fx)
    # the wrong name is refused
    with pytest.MonkeyPatch.context() as mp:
        for k, v in IDENTITY.items():
            mp.setenv(k, v)
        res = runner.invoke(app, ["data", "fetch", "cmr-7t", "--backend", "datalad", "--source", str(x),
                                  "--out", str(tmp_path / "other")])
    assert res.exit_code == 1 and "is 'sunnybrook-sample', not 'cmr-7t'" in res.stderr


def test_fetch_backend_datalad_relative_out_and_source(released, tmp_path, monkeypatch):
    """The documented `fetch NAME --backend datalad --source X --out Y` with both paths relative to the
    current folder (was: `Y/Y: path does not exist`)."""
    _, x, _ = released
    shutil.copytree(x, tmp_path / "X", symlinks=True)
    monkeypatch.chdir(tmp_path)
    for k, v in IDENTITY.items():
        monkeypatch.setenv(k, v)
    res = runner.invoke(app, ["data", "fetch", "sunnybrook-sample", "--backend", "datalad", "--source", "X",
                              "--out", "Y"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "Y")
    fx, fy = _files(x), _files(tmp_path / "Y")
    assert set(fx) == set(fy) and all(fx[k] == fy[k] for k in fx)
    assert not (tmp_path / "Y" / "Y").exists()


def test_release_help_recipe_works_as_written(released, tmp_path):
    """The recipe printed by `cardbench data release --help`, run verbatim by a shell (OUT = the release)."""
    import re

    _, x, _ = released
    res = runner.invoke(app, ["data", "release", "--help"], env={"COLUMNS": "400"})
    text = " ".join(res.stdout.split())
    recipe = re.search(r"`(datalad clone OUT [^`]+)`", text)
    assert recipe, text
    cmd = recipe.group(1).replace("OUT", str(x))
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"
    clone = tmp_path / "other"
    fx, fo = _files(x), _files(clone)
    assert set(fx) == set(fo) and all(fx[k] == fo[k] for k in fx)


def test_release_from_prepared_folder(tmp_path, sunnybrook_prepared, monkeypatch):
    for k, v in IDENTITY.items():
        monkeypatch.setenv(k, v)
    prep = tmp_path / "prepared"
    shutil.copytree(sunnybrook_prepared, prep)  # prepared once per test run (conftest)
    rep = release_mod.release("sunnybrook-sample", tmp_path / "R", prepared=prep, sourcedata=False, progress=False)
    assert rep.conversion == "prepared" and rep.source_files == 0 and rep.run_commit
    r = _files(tmp_path / "R")
    for k, v in _files(prep).items():
        if not k.startswith(".") and k != "README.md":
            assert r[k] == v, k
    msg = _run(["git", "-C", str(tmp_path / "R"), "log", "-1", "--format=%B"])
    assert f"--from-prepared {prep.resolve()}" in msg
    with pytest.raises(release_mod.ReleaseError, match="exists and is not empty"):
        release_mod.release("sunnybrook-sample", tmp_path / "R", prepared=prep, sourcedata=False, progress=False)
    bad = tmp_path / "bad"
    shutil.copytree(prep, bad)
    (bad / "subjects.csv").unlink()
    with pytest.raises(release_mod.ReleaseError, match="subjects.csv is missing"):
        release_mod.release("sunnybrook-sample", tmp_path / "R2", prepared=bad, sourcedata=False, progress=False)
    assert not (tmp_path / "R2").exists()


def test_release_without_converter_holds_sources_card_and_datasheet(tmp_path, shared_data, monkeypatch):
    for k, v in IDENTITY.items():
        monkeypatch.setenv(k, v)
    rep = release_mod.release("cmr-7t", tmp_path / "R", mirror=shared_data, cache=tmp_path / "c", progress=False)
    assert rep.conversion == "none" and rep.source_files == 14
    r = tmp_path / "R"
    assert (r / "card.yaml").read_text().startswith("# Dataset card")
    assert "access steps" in (r / "README.md").read_text().lower()
    assert (r / "sourcedata/cmr-seg-tl/analysis/7T/image_subsets.tsv").read_bytes() == \
        (shared_data / "cmr-seg-tl/analysis/7T/image_subsets.tsv").read_bytes()


def test_missing_git_annex_is_a_clear_error(tmp_path, monkeypatch):
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    os.symlink(shutil.which("git"), fakebin / "git")
    monkeypatch.setenv("PATH", str(fakebin))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no git-annex next to it either
    with pytest.raises(release_mod.DataladMissing, match="git-annex not found on PATH: pip install git-annex"):
        release_mod.ensure_datalad()
    res = runner.invoke(app, ["data", "release", "sunnybrook-sample", "--out", str(tmp_path / "X")])
    assert res.exit_code == 1 and "git-annex not found" in res.stderr
