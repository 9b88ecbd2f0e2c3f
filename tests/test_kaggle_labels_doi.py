"""`cardbench data fetch kaggle-dsb-ukbb --labels`: the files of the Zenodo record doi:10.5281/zenodo.3876351
fetched with pooch's DOI support, checked against the record's md5 checksums, kept only when all verify.

Nothing real is reachable here: a loopback HTTP server (127.0.0.1, a thread) serves a small FAKE Zenodo
record (the API JSON of /api/records/<id>: files with key, size, "md5:..." checksum and links.self) and two
tiny files. pooch's DOI resolution is pointed at it: `doi_to_url` (which asks doi.org) is replaced by the
record's Zenodo address, and `ZenodoRepository.base_api_url` by the loopback API; everything else
(load_registry_from_doi, DOIDownloader, the md5 check) is pooch's own code. Checksums are computed here
with hashlib from the bytes served.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

import pooch.downloaders as pdl
from cardbench.cli import app
from cardbench.datasets import doi as doi_mod

runner = CliRunner()
RECORD_ID = "3876351"
DOI = "10.5281/zenodo.3876351"
# two tiny files: one binary (annexed by a DataLad release), one text
FILES = {"kaggle_ukbb_masks_tiny.nii.gz": gzip.compress(b"\x00\x01\x02" * 50, mtime=0),
         "image_list_tiny.tsv": b"patient\tframe\n1\t1\n2\t5\n"}


class _Server:
    """Serves the fake record; ``corrupt`` maps a file name to bytes served instead of the real ones."""

    def __init__(self):
        self.corrupt: dict[str, bytes] = {}
        self.hits: list[str] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                if self.path.rstrip("/") == f"/api/records/{RECORD_ID}":
                    body = json.dumps(outer.record()).encode()
                    ctype = "application/json"
                elif self.path.startswith(f"/api/records/{RECORD_ID}/files/"):
                    name = self.path.split("/files/", 1)[1].split("/content")[0]
                    if name not in FILES:
                        self.send_error(404)
                        return
                    body, ctype = outer.corrupt.get(name, FILES[name]), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def record(self) -> dict:
        return {"id": int(RECORD_ID), "doi": DOI, "files": [
            {"key": n, "size": len(b), "checksum": "md5:" + hashlib.md5(b).hexdigest(),
             "links": {"self": f"{self.base}/api/records/{RECORD_ID}/files/{n}/content"}} for n, b in FILES.items()]}


@pytest.fixture
def zenodo(monkeypatch):
    srv = _Server()
    srv.thread.start()
    monkeypatch.setattr(pdl, "doi_to_url", lambda doi, **kw: f"https://zenodo.org/records/{RECORD_ID}")
    monkeypatch.setattr(pdl.ZenodoRepository, "base_api_url", f"{srv.base}/api/records")
    monkeypatch.delenv("CARDBENCH_MIRROR", raising=False)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def offline(monkeypatch):
    def no_net(doi, **kw):
        raise requests.exceptions.ConnectionError("Failed to resolve 'doi.org'")

    monkeypatch.setattr(pdl, "doi_to_url", no_net)
    monkeypatch.delenv("CARDBENCH_MIRROR", raising=False)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_fetch_labels_from_the_record_verified(zenodo, tmp_path):
    rep = doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path, progress=False, retries=0)
    dest = tmp_path / "doi" / "zenodo.3876351"
    assert rep.path == dest and sorted(rep.files) == sorted(FILES) and sorted(rep.downloaded) == sorted(FILES)
    for n, b in FILES.items():
        assert (dest / n).read_bytes() == b
    sums = dict(reversed(line.split("  ", 1)) for line in (dest / "SHA256SUMS").read_text().splitlines())
    assert sums == {n: hashlib.sha256(b).hexdigest() for n, b in FILES.items()}
    assert json.loads((dest / "record.json").read_text())["doi"] == DOI
    assert rep.urls["image_list_tiny.tsv"] == f"{zenodo.base}/api/records/{RECORD_ID}/files/image_list_tiny.tsv/content"
    # a second fetch hashes what is there and downloads nothing
    file_hits = len([h for h in zenodo.hits if "/files/" in h])
    rep2 = doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path, progress=False, retries=0)
    assert sorted(rep2.cached) == sorted(FILES) and rep2.downloaded == []
    assert len([h for h in zenodo.hits if "/files/" in h]) == file_hits
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".partial")]


def test_cli_fetch_labels(zenodo, tmp_path):
    r = runner.invoke(app, ["data", "fetch", "kaggle-dsb-ukbb", "--labels", "--cache", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().endswith(str(tmp_path / "doi" / "zenodo.3876351"))
    assert f"2 files of doi:{DOI} verified" in r.output


def test_wrong_checksum_one_line_nothing_kept(zenodo, tmp_path):
    zenodo.corrupt["kaggle_ukbb_masks_tiny.nii.gz"] = b"not the published bytes"
    r = runner.invoke(app, ["data", "fetch", "kaggle-dsb-ukbb", "--labels", "--cache", str(tmp_path),
                            "--retries", "0"])
    assert r.exit_code == 1
    line = _one_line(r.output)
    assert "kaggle_ukbb_masks_tiny.nii.gz" in line and "checksum" in line
    assert hashlib.md5(b"not the published bytes").hexdigest() in line
    dest = tmp_path / "doi" / "zenodo.3876351"
    assert not dest.exists() or not any(dest.iterdir())   # not even the good file of this run
    assert not list((tmp_path / "doi").glob(".*partial"))


def test_offline_one_line_names_doi_files_and_source(offline, tmp_path):
    r = runner.invoke(app, ["data", "fetch", "kaggle-dsb-ukbb", "--labels", "--cache", str(tmp_path)])
    assert r.exit_code == 1
    line = _one_line(r.output)
    for s in (f"doi:{DOI}", "all files of the record", "--source DIR", "CARDBENCH_MIRROR", "record.json"):
        assert s in line, s


def test_offline_after_a_fetch_verifies_the_cache(zenodo, tmp_path, monkeypatch):
    doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path, progress=False, retries=0)
    monkeypatch.setattr(pdl, "doi_to_url", lambda doi, **kw: (_ for _ in ()).throw(
        requests.exceptions.ConnectionError("offline")))
    rep = doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path, progress=False, retries=0)
    assert sorted(rep.cached) == sorted(FILES) and rep.downloaded == [] and "offline" in rep.source
    # a cached file modified since: not accepted offline
    (tmp_path / "doi" / "zenodo.3876351" / "image_list_tiny.tsv").write_bytes(b"changed\n")
    with pytest.raises(doi_mod.DoiUnreachable, match="--source DIR"):
        doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path, progress=False, retries=0)


def test_local_copy_without_network(zenodo, offline, tmp_path, monkeypatch):
    # `offline` was applied after `zenodo`: doi.org is unreachable; the local copy needs no network
    src = tmp_path / "copy"
    src.mkdir()
    for n, b in FILES.items():
        (src / n).write_bytes(b)
    (src / "record.json").write_text(json.dumps(zenodo.record()))
    r = runner.invoke(app, ["data", "fetch", "kaggle-dsb-ukbb", "--labels", "--cache", str(tmp_path / "c"),
                            "--source", str(src)])
    assert r.exit_code == 0, r.output
    for n, b in FILES.items():
        assert (tmp_path / "c" / "doi" / "zenodo.3876351" / n).read_bytes() == b
    # the same through $CARDBENCH_MIRROR/doi/<record>/
    mirror = tmp_path / "mirror"
    shutil.copytree(src, mirror / "doi" / "zenodo.3876351")
    monkeypatch.setenv("CARDBENCH_MIRROR", str(mirror))
    rep = doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path / "m", progress=False)
    assert sorted(rep.downloaded) == sorted(FILES) and rep.source == str((mirror / "doi" / "zenodo.3876351").resolve())
    # a tampered local copy is refused like a bad download
    (src / "image_list_tiny.tsv").write_bytes(b"patient\tframe\n1\t2\n")
    with pytest.raises(doi_mod.DoiIntegrityError, match="image_list_tiny.tsv"):
        doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path / "d", source=src, progress=False, retries=0)
    # no record.json: one line saying what the folder needs
    (src / "record.json").unlink()
    r = runner.invoke(app, ["data", "fetch", "kaggle-dsb-ukbb", "--labels", "--cache", str(tmp_path / "e"),
                            "--source", str(src)])
    assert r.exit_code == 2 and "record.json" in _one_line(r.output)


def test_record_with_a_path_outside_is_refused(zenodo, tmp_path, monkeypatch):
    evil = dict(FILES)
    evil["../../escaped.txt"] = b"x"
    monkeypatch.setitem(globals(), "FILES", evil)
    with pytest.raises(doi_mod.DoiSpecError, match="outside"):
        doi_mod.fetch_doi_files("kaggle-dsb-ukbb", cache=tmp_path, progress=False, retries=0)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_dataset_without_doi_files_exit_2(tmp_path):
    r = runner.invoke(app, ["data", "fetch", "sunnybrook-sample", "--labels", "--cache", str(tmp_path)])
    assert r.exit_code == 2 and "doi_files" in _one_line(r.output)


@pytest.mark.datalad
def test_release_labels_as_datalad_with_web_urls(zenodo, tmp_path, monkeypatch):
    pytest.importorskip("datalad", reason="datalad is not installed (pip install 'cardbench[datalad]')")
    import subprocess
    import sys

    from cardbench.datasets.release import ensure_datalad, fetch_datalad, release

    for k, v in {"GIT_AUTHOR_NAME": "cardbench tests", "GIT_AUTHOR_EMAIL": "tests@cardbench.invalid",
                 "GIT_COMMITTER_NAME": "cardbench tests", "GIT_COMMITTER_EMAIL": "tests@cardbench.invalid"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + ":" + __import__("os").environ.get("PATH", ""))
    ensure_datalad()
    out = tmp_path / "rel"
    rep = release("kaggle-dsb-ukbb", out, cache=tmp_path / "cache", sourcedata=False, progress=False, labels=True)
    assert rep.doi_files == 2
    sub = out / "sourcedata" / "doi" / "zenodo.3876351"
    for n, b in FILES.items():
        assert (sub / n).read_bytes() == b
    # the binary file is annexed and has its web URL from the record registered
    annexed = "sourcedata/doi/zenodo.3876351/kaggle_ukbb_masks_tiny.nii.gz"
    w = subprocess.run(["git", "-C", str(out), "annex", "whereis", annexed], capture_output=True, text=True)
    assert w.returncode == 0, w.stderr
    assert f"{zenodo.base}/api/records/{RECORD_ID}/files/kaggle_ukbb_masks_tiny.nii.gz/content" in w.stdout
    assert rep.urls_registered >= 1
    clone = fetch_datalad("kaggle-dsb-ukbb", str(out), tmp_path / "clone")
    for n, b in FILES.items():
        assert (clone / "sourcedata" / "doi" / "zenodo.3876351" / n).read_bytes() == b
