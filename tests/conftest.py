"""Shared test fixtures.

Real data: a folder holding copies of the registry's public files in the registry layout
(``REGISTRY.tsv`` at its top) is found through ``$CARDBENCH_SHARED_DATA``, then a ``shared/data`` folder next to the repository. Tests that need it skip with a clear reason when it is absent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

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


def _manifest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name``, built by ``build(path)`` once per test run.

    Under pytest-xdist every worker is a process of its own: the first worker to get here builds
    the folder in the run's common temporary folder (the parent of each worker's base) under a file
    lock, the others wait for it and use the same folder."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        out = tmp_path_factory.mktemp(name) / name
        build(out)
        return out
    from filelock import FileLock

    common = tmp_path_factory.getbasetemp().parent
    out, done = common / name / name, common / f"{name}.done"
    with FileLock(str(common / f"{name}.lock")):
        if not done.exists():
            build(out)
            done.touch()
    return out


class _ScoredAcrossWorkers(dict):
    """``seven_tesla._SCORED`` (the results of the published 7T tables scored in this process)
    shared by the pytest-xdist workers of one run: a result one worker scored is written as a pickle
    to the run's common temporary folder (atomically), and another worker reads it instead of
    scoring the same registry-checked table again (about 5 s of CPU per worker). Only results this
    run computed are ever read (our own files in pytest's temporary folder)."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _file(self, key) -> Path:
        return self.folder / (hashlib.sha256(repr(key).encode()).hexdigest() + ".pkl")

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key):
            return True
        f = self._file(key)
        if not f.exists():
            return False
        import pickle

        dict.__setitem__(self, key, pickle.loads(f.read_bytes()))
        return True

    def __setitem__(self, key, value) -> None:
        import pickle

        dict.__setitem__(self, key, value)
        f = self._file(key)
        tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(value))
        os.replace(tmp, f)


@pytest.fixture(scope="session", autouse=True)
def _published_7t_scored_once(tmp_path_factory):
    """Under pytest-xdist: :class:`_ScoredAcrossWorkers` in place of ``seven_tesla._SCORED``."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    from cardbench.reproductions.ankenbrand2021 import seven_tesla

    mp = pytest.MonkeyPatch()
    mp.setattr(seven_tesla, "_SCORED", _ScoredAcrossWorkers(tmp_path_factory.getbasetemp().parent / "7t-scored"))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def prefilled_dir(tmp_path_factory) -> Path:
    """A leaderboard folder pre-filled with the published entries (built once per test run; read
    only: copy it before changing it)."""
    from cardbench.benchmark.leaderboard import open_leaderboard

    root = _built_once(tmp_path_factory, "leaderboard", open_leaderboard)
    before = _manifest(root)
    yield root
    assert _manifest(root) == before, f"a test changed the shared pre-filled leaderboard {root}: copy it first"


@pytest.fixture(scope="session")
def sunnybrook_prepared(tmp_path_factory) -> Path:
    """The embedded Sunnybrook sample prepared into the standard layout, once per test run (read only:
    copy it before changing it)."""
    from cardbench.datasets.prepare import prepare_dataset

    out = _built_once(tmp_path_factory, "sunnybrook-sample", lambda p: prepare_dataset("sunnybrook-sample", p))
    before = _manifest(out)
    yield out
    assert _manifest(out) == before, f"a test changed the shared Sunnybrook sample {out}: copy it first"


#: test files that take longest (seconds of one idle core, measured with ``pytest --durations=0``),
#: run first so that under pytest-xdist no long test starts last while the other worker idles;
#: every other file keeps its place after them. A file's tests stay together (module fixtures are
#: built once). The files that import torch come first (MONAI imports torch too): under ``--dist
#: worksteal`` the first half of the list goes to one worker and the other steals from its end, so
#: torch and segmentation-models-pytorch (about 6 s of CPU) are imported by one worker, not both
#: (the test files import them lazily, tests/helpers.py ``LazyModule``). The files with single
#: tests of 7 to 20 s (a browser, the demo in a subprocess) come next, and files of many short tests
#: last: the other worker steals from the end of this worker's queue, so the run ends on short tests.
HEAVY_FIRST = ["test_ddp.py", "test_baselines.py", "test_evaluate_model.py", "test_surface.py", "test_nsd.py",
               "test_scoring_surface.py",
               "test_dashboard_browser.py", "test_intake.py", "test_reproduce.py",
               "test_datasets_datalad.py", "test_volume_track.py", "test_docs_runnable.py", "test_dashboard.py",
               "test_scoring_distributed.py", "test_hostile.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items[:] = sorted(items, key=lambda it: rank.get(it.path.name, len(HEAVY_FIRST)))  # stable: order kept within


@pytest.fixture
def bytes_read(monkeypatch):
    """Counts the bytes the mask reader (``cardbench.datasets.formats.base``) reads from the files
    it opens: a spy on its ``open``. ``bytes_read["n"]`` after the read."""
    import builtins

    from cardbench.datasets.formats import base as formats_base

    count = {"n": 0}

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            b = self.fh.read(n)
            count["n"] += len(b)
            return b

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(formats_base, "open", lambda *a, **k: Counting(builtins.open(*a, **k)), raising=False)
    return count


def pytest_unconfigure(config):
    """An xdist worker that has run its tests exits without a last garbage collection of its whole
    heap (torch, pandas and every test's leftovers: 1 to 2 s while the run waits for it): the
    objects left are frozen (:func:`gc.freeze`), so the interpreter's final collection skips them."""
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        import gc

        gc.freeze()
