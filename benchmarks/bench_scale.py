"""How cardbench's scoring scales with the number of cases: time per case and peak memory.

What it does:

1. Builds (or reuses) the 200-case synthetic set of ``bench_scoring.py`` (256 x 256 x 10 label
   volumes with realistic prediction errors, see ``synthetic_hearts.py``) and, for every size N
   asked for, a reference and a prediction folder of N cases made of **symbolic links** to those
   files (copy k of case ``caseNNN`` is subject ``kKKKKcaseNNN``), so 20,000 cases cost no disk.
2. Runs ``cardbench score PRED -r REF --out DIR`` (the real command: reading, validation, sha256,
   confusion counts, surface distances, per-case table, aggregation with bootstrap CIs, clinical
   indices, writing the result folder) in a fresh process for each size and each engine:
   ``--jobs 1``, ``--jobs 2`` and ``--scheduler local:2`` (a Dask LocalCluster of 2 worker
   processes, started and stopped inside the run).
3. Prints, per run: wall seconds from the CLI's start (imports of numpy/pandas/nibabel/scipy
   excluded, cluster start-up included), time per case, peak RSS of the main process and the
   largest peak RSS of its worker processes; then checks the targets of issue 11:

   * peak RSS (main process) at the largest size <= 1.5 x the peak at the smallest;
   * time per case of ``--jobs 2`` within +/- 15 % between the smallest and the largest size;
   * Dask with 2 workers within 20 % of ``--jobs 2`` at the largest size.

Run (repository root, the project's virtual environment with the ``distributed`` extra)::

    python benchmarks/bench_scale.py                       # 200, 2000, 20000 cases
    python benchmarks/bench_scale.py --sizes 200 2000 --engines jobs2 --json scale.json

Timings are wall-clock on whatever machine runs it, and the load average is printed with them:
on a shared machine only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ENGINES = {"jobs1": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "dask2": ["--scheduler", "local:2"]}
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
THREAD_ENV["OMP_WAIT_POLICY"] = "PASSIVE"

# runs inside the child process: imports first (not timed), then the CLI, then resource usage
RUNNER = r"""
import json, resource, sys, time
import numpy, pandas, nibabel, scipy.ndimage  # noqa: F401  (imports are not timed)
import cardbench.benchmark, cardbench.cli  # noqa: F401
from cardbench.cli import main
if __name__ == "__main__":
    out, argv = sys.argv[1], sys.argv[2:]
    sys.argv = ["cardbench"] + argv
    t0 = time.perf_counter()
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    wall = time.perf_counter() - t0
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    json.dump({"wall": wall, "code": code, "rss_main_mb": me / 1024, "rss_worker_mb": kids / 1024},
              open(out, "w"))
"""


def scaled_set(base: Path, root: Path, n: int) -> tuple[Path, Path]:
    """Reference and prediction folders of ``n`` cases, symbolic links to the base set's files
    (the predictions' links stay inside the submission folder, as cardbench requires)."""
    ref, pred = root / f"n{n}" / "ref", root / f"n{n}" / "pred"
    stamp = root / f"n{n}" / "STAMP"
    if stamp.exists():
        return ref, pred
    base_cases = sorted((base / "pred").glob("*.nii.gz"))
    (ref / "labels").mkdir(parents=True, exist_ok=True)
    # cardbench refuses a submission's links that lead outside it, so the 200 prediction files are
    # copied once into a hidden folder of the submission (hidden folders are not read) and linked
    copies = pred / ".base"
    copies.mkdir(parents=True, exist_ok=True)
    for p in base_cases:
        if not (copies / p.name).exists():
            shutil.copyfile(p, copies / p.name)
    subjects = {}
    for i in range(n):
        k, src = divmod(i, len(base_cases))
        p = base_cases[src]
        subj0, fr = p.name[:-len(".nii.gz")].rsplit("_frame", 1)
        subj = f"k{k:04d}{subj0}"
        name = f"{subj}_frame{fr}.nii.gz"
        (ref / "labels" / subj).mkdir(exist_ok=True)
        os.symlink(base / "ref" / "labels" / subj0 / p.name, ref / "labels" / subj / name)
        os.symlink(Path(".base") / p.name, pred / name)
        subjects[subj] = True
    (ref / "subjects.csv").write_text("subject,split,ed_frame,es_frame\n"
                                      + "".join(f"{s},test,1,10\n" for s in subjects))
    stamp.write_text(str(n))
    return ref, pred


def run_one(ref: Path, pred: Path, engine: str, tmp: Path) -> dict:
    runner = tmp / "scale_runner.py"
    runner.write_text(RUNNER)
    res_file = tmp / "res.json"
    out = tmp / f"out-{engine}"
    env = {**os.environ, **THREAD_ENV}
    cmd = [sys.executable, str(runner), str(res_file), "score", str(pred), "-r", str(ref), "--out", str(out),
           *ENGINES[engine]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    res = json.loads(res_file.read_text())
    if res["code"] not in (0, None):
        raise SystemExit(f"cardbench score exited {res['code']}:\n{r.stderr[-3000:]}")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 20000])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--data", type=Path, default=Path(".benchmarks"), help="where the data sets live")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()

    import bench_scoring

    base = bench_scoring.build_dataset(args.data / "scoring-200", 200)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cardbench-scale-") as tmp:
        for n in args.sizes:
            ref, pred = scaled_set(base.resolve(), args.data / "scale-v2", n)
            for eng in args.engines:
                load = os.getloadavg()[0]
                r = run_one(ref, pred, eng, Path(tmp))
                row = {"cases": n, "engine": eng, "wall_s": r["wall"], "ms_per_case": 1000 * r["wall"] / n,
                       "rss_main_mb": r["rss_main_mb"], "rss_worker_mb": r["rss_worker_mb"], "load1": load}
                rows.append(row)
                print(f"{n:>7} {eng:>6}  wall {row['wall_s']:8.1f} s  {row['ms_per_case']:7.2f} ms/case  "
                      f"peak RSS main {row['rss_main_mb']:7.0f} MB  workers {row['rss_worker_mb']:6.0f} MB  "
                      f"load {load:.1f}", flush=True)
    by = {(r["cases"], r["engine"]): r for r in rows}
    lo, hi = min(args.sizes), max(args.sizes)
    print("\ntargets (issue 11):")
    for eng in args.engines:
        if (lo, eng) in by and (hi, eng) in by and lo != hi:
            ratio = by[hi, eng]["rss_main_mb"] / by[lo, eng]["rss_main_mb"]
            print(f"  {eng}: peak RSS {hi} / {lo} cases = {ratio:.2f} (target <= 1.5): {'met' if ratio <= 1.5 else 'NOT met'}")
    if (lo, "jobs2") in by and (hi, "jobs2") in by and lo != hi:
        d = by[hi, "jobs2"]["ms_per_case"] / by[lo, "jobs2"]["ms_per_case"] - 1
        print(f"  jobs2: time per case {hi} vs {lo} cases {d:+.0%} (target within +/-15 %): "
              f"{'met' if abs(d) <= 0.15 else 'NOT met'}")
    if (hi, "jobs2") in by and (hi, "dask2") in by:
        d = by[hi, "dask2"]["ms_per_case"] / by[hi, "jobs2"]["ms_per_case"] - 1
        print(f"  dask2 vs jobs2 at {hi} cases: {d:+.0%} (target within 20 %): {'met' if d <= 0.20 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
