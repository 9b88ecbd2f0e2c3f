"""Speed of cardbench's scoring next to MONAI, MedPy and DeepMind's surface-distance, in one run.

What it does:

1. Builds (or reuses) a realistic set of label volumes as NIfTI files: by default 200 cases
   (100 subjects x ED/ES) of 256 x 256 x 10 voxels, spacing 1.4 x 1.4 x 8 mm, with LV, MY and RV,
   and a prediction for each with realistic errors (boundary jitter, an in-plane shift, a lost
   apical slice in half of the cases, spurious blobs in 30 %); see ``synthetic_hearts.py``.
2. Runs each method in its own Python process with every thread pool pinned to one thread
   (``OMP_NUM_THREADS=1`` etc., ``torch.set_num_threads(1)``), timing the wall clock from the
   first file read to the last value (imports and one warm-up case excluded):

   (a) cardbench: ``cardbench.benchmark.score()`` (the real ``cardbench score`` path: reading,
       validation, sha256 of every file, confusion counts, Dice/IoU, HD/HD95/ASSD/MASD per volume
       *and* per 2D image, per-case table, aggregation with bootstrap CIs, clinical indices with
       their agreement statistics), ``--jobs 1`` and ``--jobs N``; and (a') cardbench's metric
       functions on the peers' work only (nibabel load, Dice from confusion counts, 3D HD95 and
       ASSD via ``label_surface_distances``);
   (b) MONAI: ``DiceMetric``, ``HausdorffDistanceMetric(percentile=95)``,
       ``SurfaceDistanceMetric(symmetric=True)`` with ``spacing=`` (3D only);
   (c) MedPy: ``dc``, ``hd95``, ``assd`` with ``voxelspacing`` (3D only);
   (d) surface-distance (DeepMind): ``compute_dice_coefficient``,
       ``compute_robust_hausdorff(.., 95)``, ``compute_average_surface_distance`` (3D only);
   (e) loading the files only (nibabel: header and voxel array of every reference and prediction);
       (e') the same with cardbench's reader (bytes read once, sha256, gzip, header checks).

   Peers (b)-(d) read the files with nibabel, as a user of them would.
3. Checks the values: cardbench's volume-level Dice, HD95 and ASSD against each peer where the
   definitions coincide (MONAI: Dice, HD95, ASSD, HD; MedPy: Dice, ASSD, HD; surface-distance:
   Dice), and reports the difference where they differ by definition (MedPy's hd95 pools both
   directions; surface-distance weights surface elements by their area).
4. Prints the table of times and ratios and writes it as JSON (``--json``).

Run (from the repository root, in the project's virtual environment with the ``bench`` extra)::

    python benchmarks/bench_scoring.py                 # 200 cases, jobs 2, data in .benchmarks/
    python benchmarks/bench_scoring.py --cases 40 --repeat 3 --json bench.json

Timings are wall-clock seconds on whatever machine runs it; only the ratios within one run mean
anything. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CLASSES = ("LV", "MY", "RV")
LOAD = "(e) load only (nibabel)"
CB1 = "(a) cardbench score(), jobs 1"
KERNEL = "(a') cardbench metrics, 3D only"
PEERS = ("(b) MONAI", "(c) MedPy", "(d) surface-distance")
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")}
THREAD_ENV["OMP_WAIT_POLICY"] = "PASSIVE"


# ----------------------------------------------------------------------------------------------
# data set


def build_dataset(root: Path, n_cases: int, seed: int = 20210421) -> Path:
    """Write ``n_cases`` reference/prediction NIfTI pairs under ``root`` (reused when present)."""
    import nibabel as nib

    import synthetic_hearts as sh

    stamp = root / "STAMP.json"
    want = {"n_cases": n_cases, "seed": seed, "shape": sh.SHAPE, "spacing": sh.SPACING, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(want)):
        return root
    import shutil

    for sub in ("ref", "pred", "warm"):
        shutil.rmtree(root / sub, ignore_errors=True)
    aff = np.diag([*sh.SPACING, 1.0])
    aff[:3, 3] = [-180.0, -170.0, -40.0]
    rows = []
    n_subj = (n_cases + 1) // 2
    done = 0
    for i in range(n_subj):
        s = f"case{i:03d}"
        for phase, frame in (("ED", 1), ("ES", 10)):
            if done == n_cases:
                break
            ref, pred = sh.case_pair(seed + 1000 * i + frame, phase)
            for folder, arr in ((root / "ref" / "labels" / s, ref), (root / "pred", pred)):
                folder.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(arr, aff), str(folder / f"{s}_frame{frame:02d}.nii.gz"))
            done += 1
        rows.append(f"{s},test,1,10")
    (root / "ref" / "subjects.csv").write_text("subject,split,ed_frame,es_frame\n" + "\n".join(rows) + "\n")
    # a one-case copy for warm-up runs
    for folder in ("ref/labels/case000", "pred"):
        (root / "warm" / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "ref/labels/case000/case000_frame01.nii.gz", root / "warm/ref/labels/case000/")
    shutil.copy(root / "pred/case000_frame01.nii.gz", root / "warm/pred/")
    stamp.write_text(json.dumps(want))
    return root


def case_files(root: Path) -> list[tuple[str, int, Path, Path]]:
    out = []
    for p in sorted((root / "pred").glob("*.nii.gz")):
        stem = p.name[:-len(".nii.gz")]
        subj, fr = stem.rsplit("_frame", 1)
        out.append((subj, int(fr), root / "ref" / "labels" / subj / p.name, p))
    return out


class _Timer:
    """Wall clock and CPU time (this process and its finished children) of a block."""

    def __enter__(self):
        import resource

        self._ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import resource

        self.wall = time.perf_counter() - self._wall
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (time.process_time() - self._cpu) + (ru.ru_utime - self._ru.ru_utime) + (ru.ru_stime - self._ru.ru_stime)
        return False


def _load(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])


# ----------------------------------------------------------------------------------------------
# workers (each runs in its own process)


def work_load(root: Path, limit: int | None) -> dict:
    cases = case_files(root)[:limit]
    _load(cases[0][2])
    with _Timer() as t:
        for _, _, rp, pp in cases:
            _load(rp)
            _load(pp)
    return {"seconds": t.wall, "cpu": t.cpu, "n": len(cases), "values": []}


def work_load_cardbench(root: Path, limit: int | None) -> dict:
    """cardbench's reader: bytes, sha256, gzip, header checks, label values (no metrics)."""
    from cardbench.datasets.io import read_mask

    cases = case_files(root)[:limit]
    read_mask(cases[0][2])
    with _Timer() as t:
        for _, _, rp, pp in cases:
            read_mask(rp)
            read_mask(pp)
    return {"seconds": t.wall, "cpu": t.cpu, "n": len(cases), "values": []}


def work_cardbench(root: Path, limit: int | None, jobs: int) -> dict:
    import scipy.spatial  # noqa: F401  (imported lazily by cardbench; import time is not scoring time)
    import scipy.stats  # noqa: F401

    from cardbench.benchmark.scoring import score

    score(root / "warm" / "pred", root / "warm" / "ref", jobs=1, progress=False)
    with _Timer() as t:
        res = score(root / "pred", root / "ref", jobs=jobs, progress=False)
    pc = res.per_case
    vol = pc[pc["level"] == "volume"]
    vals = [{"subject": r.subject, "frame": int(r.frame), "class": r["class"], "dice": r.dice,
             "hd95": r.hd95, "assd": r.assd, "hd": r.hd, "masd": r.masd}
            for _, r in vol.iterrows()]
    img = pc[pc["level"] == "image"]
    return {"seconds": t.wall, "cpu": t.cpu, "n": int(len(vol) // 3), "values": vals,
            "image_digest": float(np.nansum(img[["dice", "hd95", "assd", "hd", "masd"]].to_numpy())),
            "n_image_rows": int(len(img))}


def _time_cases(root: Path, limit: int | None, one, per_class) -> dict:
    """Warm up ``one(ref_path, pred_path)`` on the first case, time it over the cases, then turn each
    result into (dice, hd95, assd) per class with ``per_class(result)`` (outside the timing)."""
    cases = case_files(root)[:limit]
    one(cases[0][2], cases[0][3])
    with _Timer() as t:
        out = [one(rp, pp) for _, _, rp, pp in cases]
    vals = [{"subject": s, "frame": f, "class": c, "dice": float(v[0]), "hd95": float(v[1]), "assd": float(v[2])}
            for (s, f, _, _), res in zip(cases, out) for c, v in zip(CLASSES, per_class(res))]
    return {"seconds": t.wall, "cpu": t.cpu, "n": len(cases), "values": vals}


def work_cardbench_kernel(root: Path, limit: int | None) -> dict:
    """cardbench's metric functions on the same work as the peers: nibabel load, Dice from the
    confusion counts, 3D HD95 and ASSD (no per-image values, no tables)."""
    from cardbench.benchmark.confusion import confusion_per_slice
    from cardbench.benchmark.metrics import dice_from_counts
    from cardbench.benchmark.surface import label_surface_distances

    def one(rp, pp):
        r, sp = _load(rp)
        p, _ = _load(pp)
        conf = confusion_per_slice(r, p).sum(axis=0)
        tp = np.diag(conf)[1:]
        dice = dice_from_counts(tp, conf.sum(axis=0)[1:] - tp, conf.sum(axis=1)[1:] - tp)
        out = label_surface_distances(r, p, sp, labels=(1, 2, 3), volume=True, images=False)
        return dice, out["volume"]

    return _time_cases(root, limit, one, lambda r: [(r[0][k], r[1][k, 1], r[1][k, 2]) for k in range(3)])


def work_monai(root: Path, limit: int | None) -> dict:
    import warnings

    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dice = DiceMetric(include_background=False, reduction="none")
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    assd = SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")

    def one(rp, pp):
        r, sp = _load(rp)
        p, _ = _load(pp)
        y = torch.nn.functional.one_hot(torch.as_tensor(r.astype(np.int64)), 4).movedim(-1, 0)[None]
        yp = torch.nn.functional.one_hot(torch.as_tensor(p.astype(np.int64)), 4).movedim(-1, 0)[None]
        spacing = [float(s) for s in sp]
        return (dice(yp, y).numpy()[0], hd95(yp, y, spacing=spacing).numpy()[0],
                assd(yp, y, spacing=spacing).numpy()[0])

    return _time_cases(root, limit, one, lambda r: list(zip(*r)))


def work_medpy(root: Path, limit: int | None) -> dict:
    from medpy.metric import binary as mb

    def one(rp, pp):
        r, sp = _load(rp)
        p, _ = _load(pp)
        res = []
        for k in (1, 2, 3):
            a, b = p == k, r == k
            if a.any() and b.any():
                res.append((mb.dc(a, b), mb.hd95(a, b, voxelspacing=sp), mb.assd(a, b, voxelspacing=sp)))
            else:
                res.append((mb.dc(a, b), np.nan, np.nan))
        return res

    return _time_cases(root, limit, one, lambda r: r)


def work_surface_distance(root: Path, limit: int | None) -> dict:
    import surface_distance as sd

    def one(rp, pp):
        r, sp = _load(rp)
        p, _ = _load(pp)
        res = []
        for k in (1, 2, 3):
            gt, pr = r == k, p == k
            d = sd.compute_dice_coefficient(gt, pr)
            sdist = sd.compute_surface_distances(gt, pr, sp)
            h = sd.compute_robust_hausdorff(sdist, 95)
            a_gt, a_pr = sd.compute_average_surface_distance(sdist)
            res.append((d, h, (a_gt + a_pr) / 2.0))
        return res

    return _time_cases(root, limit, one, lambda r: r)


def breakdown(root: Path) -> dict:
    """CPU time (ms per case) of the steps of one ``score()`` run, in this process (``--jobs 1``)."""
    import scipy.spatial  # noqa: F401
    import scipy.stats  # noqa: F401

    import cardbench.benchmark.scoring as sc

    sc.score(root / "warm" / "pred", root / "warm" / "ref", progress=False)
    steps = {"_read": "read, hash and validate the files", "confusion_per_slice": "confusion counts",
             "_distance_records": "surface distances (volume and images)",
             "per_case_table": "per-case table", "aggregate": "aggregation with bootstrap CIs",
             "per_subject_table": "per-subject table", "clinical_summary": "clinical indices and agreement"}
    spent = dict.fromkeys(steps, 0.0)
    saved = {k: getattr(sc, k) for k in steps}

    def timed(name, fn):
        def inner(*a, **kw):
            t = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.process_time() - t
        return inner

    for k in steps:
        setattr(sc, k, timed(k, saved[k]))
    try:
        t0 = time.process_time()
        res = sc.score(root / "pred", root / "ref", jobs=1, progress=False)
        total = time.process_time() - t0
    finally:
        for k, f in saved.items():
            setattr(sc, k, f)
    n = int((res.per_case["level"] == "volume").sum() // 3)
    out = {steps[k]: 1000 * v / n for k, v in spent.items()}
    out["other"] = 1000 * total / n - sum(out.values())
    out["total"] = 1000 * total / n
    return out


WORKERS = {"breakdown": lambda root, limit: breakdown(root), "load": work_load, "load-cardbench": work_load_cardbench, "cardbench": work_cardbench, "cardbench-kernel": work_cardbench_kernel,
           "monai": work_monai, "medpy": work_medpy,
           "surface-distance": work_surface_distance}


def run_worker(name: str, root: Path, limit: int | None, jobs: int = 1) -> dict:
    """Run one method in a fresh process with threads pinned to 1; returns its result dict."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--data", str(root),
           "--jobs", str(jobs), "--result", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    env = {**os.environ, **THREAD_ENV}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout)
                    else f"exit {proc.returncode}"}
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# comparison


def _key(v: dict) -> tuple:
    return (v["subject"], int(v["frame"]), v["class"])


def compare(ours: list[dict], theirs: list[dict], metrics: list[str]) -> dict:
    """Largest and median absolute difference per metric over (case, class) pairs present in both."""
    a = {_key(v): v for v in ours}
    out = {}
    for m in metrics:
        diffs = [abs(a[_key(v)][m] - v[m]) for v in theirs
                 if _key(v) in a and np.isfinite(v[m]) and np.isfinite(a[_key(v)][m])]
        out[m] = {"max_abs_diff": float(np.max(diffs)) if diffs else float("nan"),
                  "median_abs_diff": float(np.median(diffs)) if diffs else float("nan"), "n": len(diffs)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200, help="number of volumes (default 200)")
    ap.add_argument("--data", type=Path, default=Path(".benchmarks/scoring-data"), help="data folder (reused; default .benchmarks/scoring-data, git-ignored)")
    ap.add_argument("--jobs", type=int, default=2, help="processes for the parallel cardbench run (default 2)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat each timing, keep the fastest (default 1)")
    ap.add_argument("--peer-limit", type=int, default=None,
                    help="time the peers on the first N cases only (per-case times are compared)")
    ap.add_argument("--skip", default="", help="comma-separated methods to skip: monai,medpy,surface-distance")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print the CPU time of each step of cardbench's score() (one extra run)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        fn = WORKERS[args.worker]
        res = fn(args.data, args.limit, args.jobs) if args.worker == "cardbench" else fn(args.data, args.limit)
        args.result.write_text(json.dumps(res))
        return 0

    t0 = time.perf_counter()
    root = build_dataset(args.data.resolve(), args.cases)
    print(f"data: {args.cases} cases in {root} ({time.perf_counter() - t0:.1f} s to build or check)", flush=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    plan = [("load", LOAD, 1, None), ("load-cardbench", "(e') load only (cardbench reader)", 1, None),
            ("cardbench", CB1, 1, None),
            ("cardbench", f"(a) cardbench score(), jobs {args.jobs}", args.jobs, None),
            ("cardbench-kernel", KERNEL, 1, None)]
    for name, label in (("monai", "(b) MONAI"), ("medpy", "(c) MedPy"), ("surface-distance", "(d) surface-distance")):
        if name not in skip:
            plan.append((name, label, 1, args.peer_limit))
    results = {}
    for name, label, jobs, limit in plan:
        best = None
        for _ in range(max(1, args.repeat)):
            r = run_worker(name, root, limit, jobs)
            if "error" in r:
                best = r
                break
            if best is None or r["seconds"] < best["seconds"]:
                best = r
        results[label] = best
        if "error" in best:
            print(f"{label:34s} failed: {best['error']}", flush=True)
        else:
            print(f"{label:34s} {best['n']:4d} cases  wall {1000 * best['seconds'] / best['n']:8.2f} ms/case  "
                  f"CPU {1000 * best['cpu'] / best['n']:8.2f} ms/case", flush=True)

    cb1, cbn = CB1, f"(a) cardbench score(), jobs {args.jobs}"
    ok = {k: v for k, v in results.items() if "error" not in v}
    wall = {k: v["seconds"] / v["n"] for k, v in ok.items()}
    cpu = {k: v["cpu"] / v["n"] for k, v in ok.items()}
    identical = (cb1 in ok and cbn in ok and ok[cb1]["values"] == ok[cbn]["values"]
                 and ok[cb1]["image_digest"] == ok[cbn]["image_digest"])
    checks = {label: compare(ok[cb1]["values"], ok[label]["values"], ["dice", "hd95", "assd"])
              for label in (KERNEL, *PEERS) if label in ok and cb1 in ok}
    print()
    print(f"{'method':34s} {'wall ms/case':>12s} {'CPU ms/case':>12s} {'CPU / cardbench':>16s} {'wall / load':>12s}")
    for label in ok:
        print(f"{label:34s} {1000 * wall[label]:12.2f} {1000 * cpu[label]:12.2f} {cpu[label] / cpu[cb1]:16.2f} "
              f"{wall[label] / wall[LOAD]:12.2f}")
    summary: dict = {}
    peers = [k for k in PEERS if k in ok]
    if peers:
        fastest = min(peers, key=lambda k: cpu[k])
        summary["fastest_peer"] = fastest
        summary["speedup_vs_fastest_peer_cpu"] = cpu[fastest] / cpu[cb1]
        summary["speedup_vs_fastest_peer_wall"] = wall[fastest] / wall[cb1]
        if KERNEL in cpu:
            summary["metrics_3d_only_speedup_vs_fastest_peer_cpu"] = cpu[fastest] / cpu[KERNEL]
    summary["cardbench_jobs1_wall_over_load"] = wall[cb1] / wall[LOAD]
    summary[f"cardbench_jobs{args.jobs}_wall_over_load"] = wall[cbn] / wall[LOAD]
    summary["jobs_identical"] = identical
    summary["loadavg_1min_at_end"] = os.getloadavg()[0]
    print()
    for k, v in summary.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    print()
    print("value check, volume level, |cardbench - peer| over cases x classes (max / median):")
    for label, c in checks.items():
        print(f"  {label:22s} " + "; ".join(f"{m} {d['max_abs_diff']:.1e} / {d['median_abs_diff']:.1e}"
                                            for m, d in c.items()) + f" (n={next(iter(c.values()))['n']})")
    print("  same definition: MONAI Dice, HD95, ASSD; MedPy Dice, ASSD; surface-distance Dice.\n"
          "  different by definition: MedPy hd95 (one percentile of both directions pooled); surface-distance\n"
          "  HD95 and ASD (surface elements weighted by area; ASD here is the mean of its two directed averages)")
    bd = None
    if args.breakdown:
        bd = run_worker("breakdown", root, None, 1)
        print()
        print("cardbench score() steps, CPU ms per case (jobs 1, one run):")
        for k, v in bd.items():
            print(f"  {k:40s} {v:7.2f}" if isinstance(v, float) else f"  {k}: {v}")
    if args.json:
        out = {"breakdown_cpu_ms_per_case": bd, "cases": args.cases, "jobs": args.jobs, "repeat": args.repeat, "peer_limit": args.peer_limit,
               "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
               "wall_ms_per_case": {k: 1000 * v for k, v in wall.items()},
               "cpu_ms_per_case": {k: 1000 * v for k, v in cpu.items()},
               "summary": summary, "checks": checks,
               "errors": {k: v["error"] for k, v in results.items() if "error" in v}}
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
