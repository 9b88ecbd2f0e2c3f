"""Defects a new user found (fresh-clone trial): a refused link reported twice, --jobs with --scheduler
accepted silently, a process pool that could hang after Ctrl-C."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from typer.testing import CliRunner

from cardbench.benchmark import ValidationError, score
from cardbench.benchmark.scoring import _stop_pool
from cardbench.cli import app


def test_link_outside_the_submission_is_one_problem(sunnybrook_prepared, tmp_path):
    ref = sunnybrook_prepared
    files = sorted((ref / "labels").rglob("*.nii.gz"))
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in files:
        shutil.copyfile(f, pred / f.name)
    outside = tmp_path / "elsewhere.nii.gz"
    shutil.copyfile(files[0], outside)
    (pred / files[0].name).unlink()
    os.symlink(outside, pred / files[0].name)
    with pytest.raises(ValidationError) as ei:
        score(pred, ref, progress=False)
    probs = [str(p) for p in ei.value.problems]
    assert len(probs) == 1, probs
    assert files[0].name in probs[0] and "outside the submission" in probs[0]


def test_jobs_and_scheduler_together_are_refused(tmp_path):
    res = CliRunner().invoke(app, ["score", str(tmp_path), "-r", str(tmp_path), "--jobs", "2",
                                   "--scheduler", "local:2"])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "give one of them" in lines[0]


def test_stop_pool_does_not_wait_for_running_tasks():
    ex = ProcessPoolExecutor(max_workers=2)
    futs = [ex.submit(time.sleep, 60) for _ in range(4)]
    while not any(f.running() for f in futs):
        time.sleep(0.05)
    procs = list(ex._processes.values())
    t0 = time.monotonic()
    _stop_pool(ex)
    assert time.monotonic() - t0 < 10  # not the 60 s a waiting shutdown would take
    assert procs
    # a worker reaped by the pool's manager thread can read as alive for a moment (two threads
    # call waitpid on one pid); what matters is that every worker is gone within seconds
    while any(p.is_alive() for p in procs) and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in procs)
