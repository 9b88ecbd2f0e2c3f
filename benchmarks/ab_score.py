"""A/B timing of ``cardbench.benchmark.score()`` between two source trees, interleaved in one run.

On a shared machine the load changes between two runs of ``bench_scoring.py``, so two runs one after
the other can differ by tens of percent on identical code. This script alternates the two trees
(and, for a tree that has NSD, the protocol with and without it) round by round, each in a fresh
process with one thread, and keeps the fastest CPU time of each. The data set is the one of
``bench_scoring.py`` (``--data``, built there).

Run (from the repository root)::

    python benchmarks/ab_score.py --a ../main/src --b src --data .benchmarks/scoring-data --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import dataclasses, json, sys, time
import scipy.spatial, scipy.stats  # imported lazily by cardbench; import time is not scoring time
from cardbench.benchmark.scoring import score
from cardbench.benchmark import protocols as P
root, variant = sys.argv[1], sys.argv[2]
proto = P.CARDBENCH_V1
if variant == "no-nsd":
    proto = dataclasses.replace(proto, added_metrics=(), parameters={},
                                policy={m: dict(r) for m, r in proto.policy.items() if m != "nsd"})
score(root + "/warm/pred", root + "/warm/ref", protocol=proto, progress=False)
t0 = time.process_time(); w0 = time.perf_counter()
res = score(root + "/pred", root + "/ref", protocol=proto, progress=False)
print(json.dumps({"cpu": time.process_time() - t0, "wall": time.perf_counter() - w0,
                  "n": int((res.per_case["level"] == "volume").sum() // 3)}))
"""


def run(src: Path, data: Path, variant: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", CHILD, str(data.resolve()), variant], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", type=Path, required=True, help="source tree A (the old commit's src/)")
    ap.add_argument("--b", type=Path, required=True, help="source tree B (the new commit's src/)")
    ap.add_argument("--data", type=Path, default=Path(".benchmarks/scoring-data"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    plan = [("A", args.a, "default"), ("B", args.b, "default"), ("B without NSD", args.b, "no-nsd")]
    best: dict[str, dict] = {}
    every: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for label, src, variant in (plan if r % 2 == 0 else plan[::-1]):
            res = run(src, args.data, variant)
            if label not in best or res["cpu"] < best[label]["cpu"]:
                best[label] = res
            every.setdefault(label, []).append(res["cpu"] / res["n"])
            print(f"round {r + 1}: {label:14s} CPU {1000 * res['cpu'] / res['n']:7.2f} ms/case", flush=True)
    print()
    for label, res in best.items():
        print(f"{label:14s} best CPU {1000 * res['cpu'] / res['n']:7.2f} ms/case ({res['n']} cases)")
    a, b, b0 = best["A"]["cpu"], best["B"]["cpu"], best["B without NSD"]["cpu"]
    print(f"best: B / A = {b / a:.3f} (full score(), default protocol); B without NSD / A = {b0 / a:.3f}; "
          f"NSD adds {100 * (b / b0 - 1):+.1f} %")
    med = {k: statistics.median(v) for k, v in every.items()}
    print(f"median: B / A = {med['B'] / med['A']:.3f}; B without NSD / A = {med['B without NSD'] / med['A']:.3f}; "
          f"NSD adds {100 * (med['B'] / med['B without NSD'] - 1):+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
