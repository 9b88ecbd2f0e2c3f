"""Scoring on Dask distributed: a real LocalCluster of 2 worker processes gives exactly the result
of ``jobs=1``, survives a worker killed mid-run, and a failing case is one problem line.

Data: the real Sunnybrook sample shipped with cardbench, with predictions whose LV boundary is
eroded by one pixel (tests/helpers.py). The expected result is cardbench's own ``jobs=1`` run,
which the other scoring tests check against hand-computed and MONAI/MedPy values; what is tested
here is that distribution changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark import ValidationError, score
from helpers import erode_lv_boundary

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def sunnybrook(tmp_path_factory, sunnybrook_prepared) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sbdask")
    ref, pred = sunnybrook_prepared, root / "pred"  # reference prepared once per test run (conftest); read only
    pred.mkdir()
    for p in sorted((ref / "labels").rglob("*.nii.gz")):
        img = nib.load(p)
        lab = np.asarray(img.dataobj).astype(np.uint8)
        nib.save(nib.Nifti1Image(erode_lv_boundary(lab, to=0), img.affine, img.header), pred / p.name)
    return ref, pred


@pytest.fixture(scope="module")
def serial(sunnybrook):
    ref, pred = sunnybrook
    return score(pred, ref, jobs=1, progress=False)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.per_case, b.per_case)
    pd.testing.assert_frame_equal(a.aggregates, b.aggregates)
    pd.testing.assert_frame_equal(a.per_subject, b.per_subject)
    sa, sb = dict(a.summary), dict(b.summary)
    sa.pop("created"), sb.pop("created")
    assert json.dumps(sa, sort_keys=True, default=str) == json.dumps(sb, sort_keys=True, default=str)


def test_local_cluster_gives_identical_results(sunnybrook, serial, client):
    ref, pred = sunnybrook
    assert len(client.scheduler_info()["workers"]) == 2
    res = score(pred, ref, executor=client.get_executor(pure=False), progress=False)
    _same(serial, res)
    assert res.summary["counts"]["volumes"] == len(list(pred.iterdir())) == 10


class _KillOneWorker:
    """Executor wrapper that SIGKILLs one worker process once every task is queued."""

    def __init__(self, client, n_tasks: int):
        self.ex = client.get_executor(pure=False)
        self.client, self.n, self.count = client, n_tasks, 0
        self.killed_pid = None

    def submit(self, fn, *args, **kwargs):
        fut = self.ex.submit(fn, *args, **kwargs)
        self.count += 1
        if self.count == self.n:
            pids = self.client.run(os.getpid)
            addr = sorted(pids)[0]
            self.killed_pid = pids[addr]
            os.kill(self.killed_pid, signal.SIGKILL)
        return fut


def test_killed_worker_cases_are_retried(sunnybrook, serial, client):
    ref, pred = sunnybrook
    killer = _KillOneWorker(client, n_tasks=10)
    res = score(pred, ref, executor=killer, progress=False)
    assert killer.killed_pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(killer.killed_pid, 0)  # that worker process is gone
    _same(serial, res)  # every case scored, none dropped, same values


class _FailOne(ThreadPoolExecutor):
    """A real executor whose future for one case raises, as a worker that died too often does."""

    def submit(self, fn, tasks, *a, **k):  # a unit of work is a chunk of cases (one case in so small a run)
        assert len(tasks) == 1
        if tasks[0].subject == self.bad:
            f = Future()
            f.set_exception(MemoryError("worker ran out of memory"))
            return f
        return super().submit(fn, tasks, *a, **k)


def test_failed_case_is_one_problem_naming_it(sunnybrook):
    ref, pred = sunnybrook
    bad = sorted(p.name for p in pred.iterdir())[0].split("_frame")[0]
    with _FailOne(max_workers=2) as ex:
        ex.bad = bad
        with pytest.raises(ValidationError) as ei:
            score(pred, ref, executor=ex, progress=False)
    probs = ei.value.problems
    n_bad = len([p for p in pred.iterdir() if p.name.startswith(bad + "_")])
    assert len(probs) == n_bad >= 1
    for p in probs:
        assert f"case subject {bad} frame" in str(p) and "MemoryError" in str(p)


def test_scheduler_spec_is_checked():
    from cardbench.benchmark.distributed import parse_scheduler

    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://127.0.0.1:8786") == ("address", "tcp://127.0.0.1:8786")
    for bad in ("local:0", "local:x", "127.0.0.1:8786", ""):
        with pytest.raises(ValueError, match="local:N"):
            parse_scheduler(bad)


def _cli(args, cwd, monkeypatch):
    """``cardbench ARGS`` in folder ``cwd``, in this process (typer's test runner)."""
    from typer.testing import CliRunner

    from cardbench.cli import app

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, args)


def test_cli_scheduler_local_and_archive_workdir(sunnybrook, serial, tmp_path, monkeypatch):
    import tarfile

    ref, pred = sunnybrook
    arch = tmp_path / "pred.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        for p in sorted(pred.iterdir()):
            tf.add(p, arcname=f"pred/{p.name}")
    work = tmp_path / "shared-work"
    # one worker process: two workers give the same results (test_local_cluster_gives_identical_results)
    r = _cli(["score", str(arch), "-r", str(ref), "--scheduler", "local:1", "--workdir", str(work),
              "--no-save", "--json"], tmp_path, monkeypatch)
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    from cardbench.benchmark.results import to_json

    want = json.loads(to_json(serial.summary))
    assert got["results"] == want["results"]
    assert got["counts"] == want["counts"]
    assert sorted(got["inputs"]["predictions"].values()) == sorted(want["inputs"]["predictions"].values())
    assert work.is_dir() and not list(work.iterdir())  # extracted there, removed afterwards
    bad = _cli(["score", str(pred), "-r", str(ref), "--scheduler", "localhost", "--no-save"], tmp_path, monkeypatch)
    assert bad.exit_code == 2
    assert len([ln for ln in bad.stderr.splitlines() if ln.strip()]) == 1 and "local:N" in bad.stderr
