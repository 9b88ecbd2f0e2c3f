"""pooch download of registered datasets: local-folder and loopback-http mirrors, sha256 of every
file, corrupt and truncated files, verify, access steps.

Offline: the mirror is the shared real-data folder (``shared_data`` fixture), served either as a
folder or by an http server on 127.0.0.1. Expected hashes are computed here with hashlib from the
bytes on disk and compared with REGISTRY.tsv read with csv, independently of cardbench.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import os
import shutil
import threading
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.datasets.fetch import (
    DownloadError, FileIntegrityError, cache_dir, dataset_path, fetch, file_urls, resolve_mirror, verify,
)

runner = CliRunner()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _rows(shared_data, prefix):
    with open(shared_data / "REGISTRY.tsv", newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if r["local_path"].startswith(prefix)]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):  # keep test output clean
        pass


@pytest.fixture
def http_mirror(shared_data):
    """Serve the shared data folder on 127.0.0.1 (a loopback mirror); yields the base URL."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(shared_data)))
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _cli(args, cache, mirror=None):
    env = {"CARDBENCH_DATA": str(cache)}
    if mirror is not None:
        env["CARDBENCH_MIRROR"] = str(mirror)
    return runner.invoke(app, ["data", *args], env=env)


def test_fetch_ankenbrand_from_folder_mirror_then_verify(tmp_path, shared_data):
    cache = tmp_path / "cache"
    res = _cli(["fetch", "ankenbrand2021-derived"], cache, shared_data)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(cache / "cmr-seg-tl")
    assert "855 files verified" in res.stderr and "855 downloaded" in res.stderr
    rows = _rows(shared_data, "cmr-seg-tl/")
    assert len(rows) == 855
    for r in rows:
        f = cache / r["local_path"]
        assert f.stat().st_size == int(r["bytes"]) and _sha(f) == r["sha256"], r["local_path"]
    # every file of the published folder arrived, byte for byte
    src = sorted(p.relative_to(shared_data) for p in (shared_data / "cmr-seg-tl").rglob("*") if p.is_file())
    dst = sorted(p.relative_to(cache) for p in (cache / "cmr-seg-tl").rglob("*") if p.is_file())
    assert src == dst
    res = _cli(["verify", "ankenbrand2021-derived"], cache)
    assert res.exit_code == 0 and "all 855 files intact" in res.stderr
    res = _cli(["path", "ankenbrand2021-derived"], cache)
    assert res.exit_code == 0 and res.stdout.strip() == str(cache / "cmr-seg-tl")
    # second fetch downloads nothing
    res = _cli(["fetch", "ankenbrand2021-derived"], cache, shared_data)
    assert res.exit_code == 0 and "0 downloaded" in res.stderr and "855 already cached" in res.stderr


def test_corrupt_byte_makes_verify_fail_clearly_and_fetch_repairs(tmp_path, shared_data):
    cache = tmp_path / "cache"
    assert _cli(["fetch", "cmr-7t"], cache, shared_data).exit_code == 0
    rel = "cmr-seg-tl/analysis/7T/esed_frames.tsv"
    f = cache / rel
    data = bytearray(f.read_bytes())
    data[100] ^= 0x01
    f.write_bytes(bytes(data))
    expected = [r for r in _rows(shared_data, rel)][0]["sha256"]
    received = hashlib.sha256(bytes(data)).hexdigest()
    res = _cli(["verify", "cmr-7t"], cache)
    assert res.exit_code == 1
    line = [ln for ln in res.stderr.splitlines() if rel in ln][0]
    assert "sha256 mismatch" in line and expected in line and received in line
    assert "cardbench data fetch cmr-7t" in line
    assert "1 corrupt and 0 missing of 14 files" in res.stderr
    res = _cli(["fetch", "cmr-7t"], cache, shared_data)
    assert res.exit_code == 0 and "1 corrupt cached file(s) replaced" in res.stderr
    assert _sha(f) == expected
    assert _cli(["verify", "cmr-7t"], cache).exit_code == 0


def test_missing_file_and_path_hint(tmp_path, shared_data):
    cache = tmp_path / "cache"
    fetch("cmr-7t", cache=cache, mirror=shared_data, progress=False)
    (cache / "cmr-seg-tl/LICENSE").unlink()
    rep = verify("cmr-7t", cache=cache, progress=False)
    assert not rep.ok and rep.count("missing") == 1
    assert "not in the cache" in rep.problems[0]
    res = _cli(["path", "cmr-7t"], cache)
    assert res.exit_code == 1 and "1 of 14 files are not in the cache" in res.stderr


def _mirror_copy(shared_data, dest, prefix):
    for r in _rows(shared_data, prefix):
        (dest / r["local_path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / r["local_path"], dest / r["local_path"])
    return dest


def test_truncated_file_on_mirror_is_rejected_and_not_cached(tmp_path, shared_data):
    mirror = _mirror_copy(shared_data, tmp_path / "mirror", "cmr-seg-tl/analysis/7T/")
    for extra in ("cmr-seg-tl/LICENSE", "cmr-seg-tl/CITATION.cff"):
        shutil.copyfile(shared_data / extra, mirror / extra)
    rel = "cmr-seg-tl/analysis/7T/confusion_tables/confusion_WS_TR.tsv"
    full = (shared_data / rel).read_bytes()
    (mirror / rel).write_bytes(full[: len(full) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(FileIntegrityError) as ei:
        fetch("cmr-7t", cache=cache, mirror=mirror, retries=0, jobs=1, progress=False)
    e = ei.value
    assert e.path == rel and e.truncated and e.received_bytes == len(full) // 2
    assert e.expected_sha256 == hashlib.sha256(full).hexdigest()
    assert e.received_sha256 == hashlib.sha256(full[: len(full) // 2]).hexdigest()
    msg = str(e)
    assert rel in msg and "truncated" in msg and e.expected_sha256 in msg and e.received_sha256 in msg
    assert "Nothing was stored in the cache" in msg
    assert not (cache / rel).exists()
    assert not [p for p in (cache / rel).parent.iterdir() if p.name.startswith("tmp")]  # no temp left
    # the CLI says the same and exits 1
    res = _cli(["fetch", "cmr-7t", "--retries", "0", "--jobs", "1"], tmp_path / "cache2", mirror)
    assert res.exit_code == 1 and "truncated" in res.stderr and e.expected_sha256 in res.stderr


class _Dropping(_Quiet):
    """Sends the full Content-Length header but only half the body of one file, then closes."""

    target = ""

    def do_GET(self):
        if self.path.endswith(self.target):
            data = Path(self.directory, self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


def test_connection_dropped_mid_download(tmp_path, shared_data):
    rel = "cmr-seg-tl/analysis/7T/esed_frames.tsv"
    handler = type("H", (_Dropping,), {"target": rel})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(shared_data)))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        cache = tmp_path / "cache"
        with pytest.raises(FileIntegrityError) as ei:
            fetch("cmr-7t", cache=cache, mirror=f"http://127.0.0.1:{srv.server_address[1]}", retries=0, jobs=1,
                  progress=False)
        full = (shared_data / rel).read_bytes()
        e = ei.value
        assert e.path == rel and e.truncated and e.received_bytes < len(full)
        assert e.expected_sha256 == hashlib.sha256(full).hexdigest()
        assert "truncated" in str(e) and "connection closed" in str(e)
        assert not (cache / rel).exists()
    finally:
        srv.shutdown()
        srv.server_close()


def test_loopback_http_mirror(tmp_path, shared_data, http_mirror):
    cache = tmp_path / "cache"
    rep = fetch("cmr-7t", cache=cache, mirror=http_mirror, progress=False)
    rows = _rows(shared_data, "cmr-seg-tl/analysis/7T/")
    assert len(rep.downloaded) == len(rows) + 2  # + LICENSE, CITATION.cff
    for r in rows:
        assert (cache / r["local_path"]).read_bytes() == (shared_data / r["local_path"]).read_bytes()
    assert rep.bytes_downloaded == sum(int(r["bytes"]) for r in _rows(shared_data, "cmr-seg-tl/")
                                       if r["local_path"] in rep.downloaded)
    assert verify("cmr-7t", cache=cache, progress=False).ok


def test_retry_after_a_server_error(tmp_path, shared_data):
    calls = {"n": 0}

    class Flaky(_Quiet):
        def do_GET(self):
            if self.path.endswith("LICENSE") and calls["n"] == 0:
                calls["n"] += 1
                self.send_error(503)
                return
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Flaky, directory=str(shared_data)))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        rep = fetch("cmr-7t", cache=tmp_path / "c", mirror=f"http://127.0.0.1:{srv.server_address[1]}/",
                    retries=1, jobs=1, progress=False)
        assert calls["n"] == 1 and "cmr-seg-tl/LICENSE" in rep.downloaded
    finally:
        srv.shutdown()
        srv.server_close()


def test_unreachable_source_gives_a_clear_error(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DownloadError) as ei:
        fetch("cmr-7t", cache=tmp_path / "c", mirror=f"http://127.0.0.1:{port}", retries=0, jobs=1, progress=False)
    assert f"http://127.0.0.1:{port}/cmr-seg-tl/" in str(ei.value) and "reachable" in str(ei.value)
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def test_default_urls_are_the_registry_urls(shared_data, monkeypatch):
    monkeypatch.delenv("CARDBENCH_MIRROR", raising=False)
    urls = file_urls("sunnybrook-sample")
    rows = _rows(shared_data, "sunnybrook-sample/")
    assert urls == {r["local_path"]: r["url"] for r in rows}
    assert all(u.startswith("https://raw.githubusercontent.com/kwu93/image-segmentation/932d305f") for u in urls.values())
    m = file_urls("sunnybrook-sample", "http://127.0.0.1:9/base")
    assert m["sunnybrook-sample/final_data/link.csv"] == "http://127.0.0.1:9/base/sunnybrook-sample/final_data/link.csv"


def test_cache_and_mirror_settings(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("CARDBENCH_DATA", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("CARDBENCH_DATA")
    assert cache_dir().name == "data" and "cardbench" in str(cache_dir())
    assert dataset_path("cmr-7t", tmp_path) == tmp_path / "cmr-seg-tl"
    assert dataset_path("sunnybrook-sample", tmp_path) == tmp_path / "sunnybrook-sample"
    assert dataset_path("kaggle-dsb-ukbb", tmp_path) == tmp_path / "cmr-seg-tl"
    assert resolve_mirror(f"file://{shared_data}").kind == "folder"
    assert resolve_mirror("https://example.org/data").location == "https://example.org/data/"
    with pytest.raises(ValueError, match="folder not found"):
        resolve_mirror(tmp_path / "nope")
    with pytest.raises(ValueError, match="unsupported scheme 'ftp'"):
        resolve_mirror("ftp://example.org/")
    res = _cli(["fetch", "cmr-7t", "--mirror", str(tmp_path / "nope")], tmp_path / "c")
    assert res.exit_code == 2 and "folder not found" in res.stderr


def test_restricted_and_registration_datasets_print_the_steps(tmp_path, shared_data):
    res = _cli(["fetch", "kaggle-dsb-ukbb"], tmp_path / "c", shared_data)
    assert res.exit_code == 0, res.stderr
    for frag in ("access is 'registration'", "NOT downloaded automatically", "Kaggle account",
                 "second-annual-data-science-bowl/rules", "kaggle competitions download second-annual-data-science-bowl",
                 "10.5281/zenodo.3876351"):
        assert frag in res.stderr, frag
    assert "843 files verified" in res.stderr
    res = _cli(["fetch", "cmr-7t"], tmp_path / "c", shared_data)
    assert res.exit_code == 0 and "access is 'restricted'" in res.stderr
    assert "markus.ankenbrand@uni-wuerzburg.de" in res.stderr and "cardbench reproduce ankenbrand2021" in res.stderr


def test_backend_datalad_needs_source(tmp_path):
    res = _cli(["fetch", "sunnybrook-sample", "--backend", "datalad"], tmp_path)
    assert res.exit_code == 2 and "--source" in res.stderr
    res = _cli(["fetch", "sunnybrook-sample", "--source", "x"], tmp_path)
    assert res.exit_code == 2 and "--backend datalad" in res.stderr


def test_fetch_module_imports_no_heavy_optional_packages():
    import subprocess
    import sys

    code = ("import sys, cardbench.datasets.fetch, cardbench.datasets.splits, cardbench.datasets.release, "
            "cardbench.cli.data; print(sorted(m for m in ('datalad', 'torch', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_shipped_files_are_fetched_offline_from_the_embedded_copy(tmp_path, shared_data, monkeypatch):
    monkeypatch.delenv("CARDBENCH_MIRROR", raising=False)
    cache = tmp_path / "cache"
    res = _cli(["fetch", "sunnybrook-sample"], cache)  # no mirror, no network: the package's own copy
    assert res.exit_code == 0, res.stderr
    assert "320 downloaded" in res.stderr and "from the copy embedded in cardbench" in res.stderr
    for lp, row in {r["local_path"]: r for r in _rows(shared_data, "sunnybrook-sample/")}.items():
        assert (cache / lp).read_bytes() == (shared_data / lp).read_bytes(), lp
        assert _sha(cache / lp) == row["sha256"]
    # with a mirror the mirror is used, not the embedded copy
    rep = fetch("sunnybrook-sample", cache=tmp_path / "c2", mirror=shared_data, progress=False)
    assert rep.from_embedded == [] and len(rep.downloaded) == 320


def test_path_before_any_fetch_exits_0_with_a_hint(tmp_path):
    """Before a fetch, `data path` prints where the files will be and a hint (exit 0); an incomplete
    cache is an error (exit 1, test above)."""
    from cardbench.datasets.cards import load_card
    from cardbench.datasets.fetch import dataset_path

    cache = tmp_path / "cache"
    res = _cli(["path", "cmr-7t"], cache)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(dataset_path(load_card("cmr-7t"), cache))
    assert "not fetched yet" in res.stderr and "cardbench data fetch cmr-7t" in res.stderr
