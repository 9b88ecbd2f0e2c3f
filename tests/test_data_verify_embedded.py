"""`cardbench data verify` of a dataset that cardbench ships (the Sunnybrook sample) before any fetch:
the embedded copies are checked against the registry's sha256 instead of reporting "not fetched"."""

from __future__ import annotations

import gzip
import hashlib

from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.datasets.cards import load_card
from cardbench.datasets.embedded import IntegrityError, data_root, registry


def test_embedded_dataset_verifies_before_any_fetch(tmp_path):
    card = load_card("sunnybrook-sample")
    # independent check: every embedded copy's sha256, recomputed here, is the registry's
    for e in card.files[:5]:
        data = gzip.decompress((data_root() / (e.local_path + ".gz")).read_bytes())
        assert hashlib.sha256(data).hexdigest() == registry()[e.local_path].sha256
    res = CliRunner().invoke(app, ["data", "verify", "sunnybrook-sample", "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert f"all {len(card.files)} files embedded in cardbench are intact" in res.stderr


def test_corrupt_embedded_copy_fails(tmp_path, monkeypatch):
    import cardbench.datasets.embedded as emb

    def corrupt(local_path, data_dir=None):
        raise IntegrityError(f"embedded:{local_path}: sha256 0000 does not match the registry's")

    monkeypatch.setattr(emb, "open_published", corrupt)
    res = CliRunner().invoke(app, ["data", "verify", "sunnybrook-sample", "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 1
    assert "embedded in cardbench are corrupt" in res.stderr and "reinstall cardbench" in res.stderr


def test_dataset_that_is_not_shipped_still_says_not_fetched(tmp_path):
    res = CliRunner().invoke(app, ["data", "verify", "kaggle-dsb-ukbb", "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 1 and "not fetched yet" in res.stderr
