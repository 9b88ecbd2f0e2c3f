"""What NSD costs in ``cardbench.benchmark.score()``: cardbench-v1 with and without NSD, in one run.

The protocol without NSD is cardbench-v1 with ``nsd`` removed from its policy and metrics (exactly
the v1.0 work); both are timed alternately on the same synthetic data set as
``bench_scoring.py`` (``synthetic_hearts.py``), each in this process with one thread, keeping the
fastest of ``--repeat`` runs. Only the ratio means anything.

Run (from the repository root)::

    python benchmarks/bench_nsd.py --cases 40 --repeat 3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(v, "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(".benchmarks/scoring-data"))
    args = ap.parse_args(argv)

    from bench_scoring import build_dataset

    from cardbench.benchmark.protocols import CARDBENCH_V1
    from cardbench.benchmark.scoring import score

    root = build_dataset(args.data.resolve(), args.cases)
    policy = {m: dict(r) for m, r in CARDBENCH_V1.policy.items() if m != "nsd"}
    without = dataclasses.replace(CARDBENCH_V1, added_metrics=(), policy=policy, parameters={})
    score(root / "warm" / "pred", root / "warm" / "ref", progress=False)
    best = {"with NSD": float("inf"), "without NSD": float("inf")}
    for _ in range(max(1, args.repeat)):
        for label, proto in (("without NSD", without), ("with NSD", CARDBENCH_V1)):
            t0 = time.process_time()
            score(root / "pred", root / "ref", protocol=proto, progress=False)
            best[label] = min(best[label], time.process_time() - t0)
    for label, t in best.items():
        print(f"{label:12s} CPU {1000 * t / args.cases:8.2f} ms/case")
    print(f"NSD adds {100 * (best['with NSD'] / best['without NSD'] - 1):+.1f} % CPU to score() "
          f"({args.cases} cases, best of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
