"""How reading a leaderboard scales with the number of entries of one benchmark.

What it does:

1. Pre-fills a leaderboard in a temporary folder (:func:`open_leaderboard`: the published entries,
   computed by cardbench) and takes one real entry (``--entry``, default ``base`` of
   ``cmr-7t__test__cardbench-v1``: a summary.json with subject-bootstrap CIs and a per-case table).
2. For every size N asked for (default 10, 100, 400) builds a leaderboard holding that benchmark with
   N copies of the entry folder, named ``e0000`` ... (the folder name is the entry name; the copy's
   submission.yaml ``name`` and summary.json ``submission.name`` are set to it, so every summary.json
   has its own bytes), without index.json.
3. Times, per entry:

   * **baseline**: reading and parsing every entry's summary.json once (``json.loads``), the least a
     check of every entry can cost;
   * ``index() cold``: the first read (no index.json: every entry checked, its per-case table read,
     index.json written);
   * ``index() warm, new object``: a fresh :class:`Leaderboard` (what each ``cardbench`` command
     does) reading the folder with its index.json (each summary.json parsed and checked against it);
   * ``index() again, same object``: the same object reading again (a long-running process, such
     as the dashboard after an entry changed);
   * ``ranked()`` (index + :func:`rank_table`), and ``cardbench leaderboard show -b BENCH -f csv``
     run in this process (CliRunner) on the warm folder;

   each the best of ``--repeat`` runs, in ms per entry, and as a ratio to the baseline measured
   in the same run; then ms per entry at the largest size over that at the smallest (1.0: linear,
   clearly above: superlinear).

Run (repository root, the project's virtual environment)::

    python benchmarks/bench_leaderboard.py                  # 10, 100, 400 entries
    python benchmarks/bench_leaderboard.py --sizes 10 100 --repeat 5 --json lb.json

Timings are wall-clock on whatever machine runs it, and the load average is printed with them:
on a shared machine only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def build(src_root: Path, bench: str, entry: str, n: int, dst: Path) -> Path:
    """A leaderboard folder ``dst`` with ``bench`` holding ``n`` copies of ``entry`` (no index.json)."""
    import yaml

    from cardbench.benchmark.leaderboard import BENCHMARK_FILE, ENTRIES, MARKER

    (dst / bench / ENTRIES).mkdir(parents=True)
    shutil.copy2(src_root / MARKER, dst / MARKER)  # every source pre-filled: nothing is added on open
    shutil.copy2(src_root / bench / BENCHMARK_FILE, dst / bench / BENCHMARK_FILE)
    one = src_root / bench / ENTRIES / entry
    for i in range(n):
        name = f"e{i:04d}"
        shutil.copytree(one, dst / bench / ENTRIES / name)
        sub = dst / bench / ENTRIES / name / "submission.yaml"
        meta = yaml.safe_load(sub.read_text(encoding="utf-8"))
        meta["name"] = name
        sub.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        summ = dst / bench / ENTRIES / name / "summary.json"  # distinct bytes per entry, as real entries have
        d = json.loads(summ.read_text(encoding="utf-8"))
        d.setdefault("submission", {})["name"] = name
        summ.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dst


def measure(root: Path, bench: str, n: int, repeat: int) -> dict:
    from typer.testing import CliRunner

    from cardbench.benchmark.leaderboard import ENTRIES, INDEX_FILE, Leaderboard
    from cardbench.cli import app

    summaries = sorted((root / bench / ENTRIES).glob("*/summary.json"))
    assert len(summaries) == n

    def baseline():
        for f in summaries:
            json.loads(f.read_text(encoding="utf-8"))

    def cold():
        (root / bench / INDEX_FILE).unlink(missing_ok=True)
        assert len(Leaderboard(root).index(bench)) == n

    same = Leaderboard(root)
    same.index(bench)
    runner = CliRunner()

    def show():
        r = runner.invoke(app, ["leaderboard", "show", "-L", str(root), "-b", bench, "-f", "csv"])
        assert r.exit_code == 0, r.output

    t = {
        "baseline: parse every summary.json": _best(baseline, repeat),
        "index() cold (no index.json)": _best(cold, max(1, repeat // 2)),
        "index() warm, new object": _best(lambda: Leaderboard(root).index(bench), repeat),
        "index() again, same object": _best(lambda: same.index(bench), repeat),
        "ranked() (index + rank_table)": _best(lambda: Leaderboard(root).ranked(bench, "dice_lv"), repeat),
        "cardbench leaderboard show": _best(show, repeat),
    }
    base = t["baseline: parse every summary.json"]
    return {k: {"ms_per_entry": 1000 * v / n, "x_baseline": v / base} for k, v in t.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 400])
    ap.add_argument("--bench", default="cmr-7t__test__cardbench-v1")
    ap.add_argument("--entry", default="base")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    a = ap.parse_args(argv)

    from cardbench.benchmark.leaderboard import open_leaderboard

    try:
        import cardbench.reproductions  # noqa: F401  (registers the published sources)
    except ImportError:
        pass
    out: dict = {"load_average": os.getloadavg(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="cardbench-bench-lb-") as tmp:
        src = Path(tmp) / "prefilled"
        open_leaderboard(src)
        for n in a.sizes:
            root = build(src, a.bench, a.entry, n, Path(tmp) / f"lb{n}")
            res = measure(root, a.bench, n, a.repeat)
            out["sizes"][n] = res
            print(f"\n{n} entries of {a.bench} (copies of {a.entry}); load average {os.getloadavg()[0]:.2f}")
            for k, v in res.items():
                print(f"  {k:42s} {v['ms_per_entry']:8.3f} ms/entry  {v['x_baseline']:8.2f} x baseline")
            shutil.rmtree(root)
    lo, hi = min(a.sizes), max(a.sizes)
    if lo != hi:
        print(f"\nms per entry at {hi} / at {lo} entries (1.0 = linear):")
        for k in out["sizes"][lo]:
            r = out["sizes"][hi][k]["ms_per_entry"] / out["sizes"][lo][k]["ms_per_entry"]
            print(f"  {k:42s} {r:6.2f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
