"""Shared test fixtures.

Real data: a folder holding copies of the registry's public files in the registry layout
(``REGISTRY.tsv`` at its top) is found through ``$CARDBENCH_SHARED_DATA``, then a ``shared/data`` folder next to the repository. Tests that need it skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cardbench.reproductions  # noqa: F401  (registers the published leaderboard pre-fill sources)

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def find_shared_data() -> Path | None:
    """The shared real-data folder, or None."""
    cands = [os.environ.get("CARDBENCH_SHARED_DATA"), REPO.parent / "shared" / "data"]
    for c in cands:
        if c and (Path(c) / "REGISTRY.tsv").exists():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real data (skips the test when it is not available)."""
    p = find_shared_data()
    if p is None:
        pytest.skip("shared real data not found: set CARDBENCH_SHARED_DATA to the folder holding REGISTRY.tsv")
    return p


@pytest.fixture(scope="session")
def prefilled_dir(tmp_path_factory) -> Path:
    """A leaderboard folder pre-filled with the published entries (built once per session; copy it
    before changing it)."""
    from cardbench.benchmark.leaderboard import open_leaderboard

    root = tmp_path_factory.mktemp("lb") / "leaderboard"
    open_leaderboard(root)
    return root


@pytest.fixture(scope="session")
def sunnybrook_prepared(tmp_path_factory) -> Path:
    """The embedded Sunnybrook sample prepared into the standard layout, once per test run (read only:
    copy it before changing it)."""
    from cardbench.datasets.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("sunnybrook") / "sunnybrook-sample"
    prepare_dataset("sunnybrook-sample", out)
    return out
