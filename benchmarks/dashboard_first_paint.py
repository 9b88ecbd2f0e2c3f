"""First paint of the dashboard with a big leaderboard (200 submissions x 2000 cases), against the
pre-filled published leaderboard (16 entries) measured in the same run.

    python benchmarks/dashboard_first_paint.py [--entries 200] [--cases 2000] [--keep DIR]

What it does:

1. Generates a leaderboard of ``--entries`` submissions on one benchmark (protocol cardbench-v1), each
   with ``--cases`` scored cases (subject x frame volumes; LV, MY, RV), through cardbench's own
   scoring path (counts -> ``per_case_table`` -> ``build_result``: aggregation with the subject
   bootstrap, clinical indices) and ``Leaderboard.add``. Counts are random but realistic (Dice
   around 0.75 to 0.95). Generation is not timed.
2. Measures, for the big leaderboard and for the pre-filled one (the peer):
   - ``store``: reading the benchmark's tables (``Leaderboard.tables``) from ``index.json``, and
     rebuilding the index from every entry folder (what happens once after entries change);
   - ``script``: one cold run of the Leaderboard page in Streamlit's AppTest (fresh process, empty
     cache);
   - ``browser``: first paint in headless Chromium (Playwright driving Debian's ``chromium``): from
     navigation start until the ranked table shows the top entry, on the first load after the
     server starts (cold cache) and on a reload (warm cache); also the Submission page of an
     entry (its 2000-case table is read lazily, only there).
   Each figure is the median of ``--repeat`` runs; the ratio big / peer is printed.

Needs the [dashboard] extra, ``pip install playwright`` (no browser download: it uses Debian's
chromium) and ``apt-get install chromium``. Without Playwright the browser rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cardbench.benchmark.casetable import COUNT_COLUMNS, per_case_table
import cardbench.reproductions  # noqa: F401  (registers the published pre-fill sources)
from cardbench.benchmark.leaderboard import Leaderboard, open_leaderboard
from cardbench.benchmark.protocols import CARDBENCH_V1
from cardbench.benchmark.scoring import build_result

CLASSES = ["LV", "MY", "RV"]


def synthetic_counts(n_cases: int, quality: float, rng: np.random.Generator) -> pd.DataFrame:
    """One 2D image per (subject, frame) volume: 10 frames per subject, ED = frame 0, ES = frame 4."""
    n_subj = max(1, n_cases // 10)
    subj = np.repeat([f"S{i:04d}" for i in range(n_subj)], 10)[:n_cases]
    frame = np.tile(np.arange(10), n_subj)[:n_cases]
    conf = np.zeros((n_cases, 4, 4), np.int64)
    conf[:, 0, 0] = 60000
    for k, size in ((1, 9000), (2, 6000), (3, 8000)):
        ref = rng.normal(size, size * 0.25, n_cases).clip(200).astype(np.int64)
        q = np.clip(rng.normal(quality - (0.08 if k == 2 else 0.0), 0.06, n_cases), 0.2, 1.0)
        tp = (ref * q).astype(np.int64)
        fp = (ref * (1 - q) * rng.uniform(0.5, 1.5, n_cases)).astype(np.int64)
        conf[:, k, k] = tp
        conf[:, k, 0] = ref - tp
        conf[:, 0, k] = fp
    df = pd.DataFrame(conf.reshape(n_cases, 16), columns=COUNT_COLUMNS)
    df.insert(0, "subject", subj)
    df.insert(1, "frame", frame)
    df.insert(2, "slice", 0)
    df["missing"] = False
    df["voxel_ml"] = 1.4 * 1.4 * 8.0 / 1000.0
    df["fov_diag_mm"] = 500.0
    return df


def synthetic_extra(counts: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame | None:
    """Distance metrics for the protocol's metrics beyond Dice and IoU (HD95, ASSD... when present)."""
    dist = [m for m in CARDBENCH_V1.metrics if m not in ("dice", "iou")]
    if not dist:
        return None
    rows = []
    for level in ("image", "volume"):
        for cls in CLASSES:
            d = pd.DataFrame({"level": level, "subject": counts["subject"], "frame": counts["frame"],
                              "slice": counts["slice"] if level == "image" else pd.NA, "class": cls})
            for m in dist:
                d[m] = rng.gamma(2.0, 2.0, len(counts))
            rows.append(d)
    return pd.concat(rows, ignore_index=True)


def generate(root: Path, n_entries: int, n_cases: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lb = Leaderboard(root)
    bench = None
    t0 = time.monotonic()
    for i in range(n_entries):
        counts = synthetic_counts(n_cases, rng.uniform(0.75, 0.95), rng)
        per_case = per_case_table(counts, CLASSES, CARDBENCH_V1, lambda s: "test",
                                  lambda s, f: {0: "ED", 4: "ES"}.get(f, ""), extra=synthetic_extra(counts, rng))
        res = build_result(per_case, CARDBENCH_V1, dataset={"name": "synthetic", "version": "1"},
                           submission={"name": f"model-{i:03d}", "label": f"synthetic model {i}"},
                           label_map=None, inputs={}, split="test")
        e = lb.add(res, f"model-{i:03d}")
        bench = e.benchmark
        if (i + 1) % 20 == 0:
            print(f"  generated {i + 1}/{n_entries} entries ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return bench


def time_store(root: Path, bench: str, repeat: int) -> dict:
    lb = Leaderboard(root)
    read, rebuild = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        lb.tables(bench)
        read.append(time.perf_counter() - t)
        idx = root / bench / "index.json"
        saved = idx.read_bytes()
        idx.unlink()
        t = time.perf_counter()
        lb.tables(bench)
        rebuild.append(time.perf_counter() - t)
        idx.write_bytes(saved)
    return {"index_read_s": statistics.median(read), "index_rebuild_s": statistics.median(rebuild)}


SCRIPT_TIMER = """
import os, sys, time
os.environ["CARDBENCH_LEADERBOARD"] = sys.argv[1]
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[2], default_timeout=600)
at.query_params["benchmark"] = sys.argv[3]
t = time.perf_counter(); at.run(); dt = time.perf_counter() - t
assert not at.exception, [e.value for e in at.exception]
print(dt)
"""


def time_script(root: Path, bench: str, repeat: int) -> float:
    app = Path(__file__).resolve().parents[1] / "src" / "cardbench" / "dashboard" / "app.py"
    out = []
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-c", SCRIPT_TIMER, str(root), str(app), bench], capture_output=True,
                           text=True, check=True)
        out.append(float(r.stdout.strip().splitlines()[-1]))
    return statistics.median(out)


def time_browser(root: Path, bench: str, entry: str, repeat: int) -> dict | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright not installed: browser timings skipped (pip install playwright)", file=sys.stderr)
        return None
    from cardbench.dashboard.serve import chromium, server

    exe = chromium()
    if exe is None:
        print("chromium not installed: browser timings skipped", file=sys.stderr)
        return None
    cold, warm, sub = [], [], []
    grid = '[data-testid="stDataFrame"] [role="gridcell"]'
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(repeat):
            with server(root) as url:  # fresh server: empty Streamlit cache
                page = browser.new_page(viewport={"width": 1400, "height": 1000})

                def paint(u: str, text: str) -> float:
                    t = time.perf_counter()
                    page.goto(u)
                    page.locator(grid, has_text=text).first.wait_for(state="attached", timeout=300_000)
                    return time.perf_counter() - t

                top = Leaderboard(root).ranked(bench, "dice_lv")["entry"].iloc[0]
                cold.append(paint(f"{url}/?benchmark={bench}", top))
                warm.append(paint(f"{url}/?benchmark={bench}", top))
                sub.append(paint(f"{url}/submission?benchmark={bench}&entry={entry}", "test"))
                page.close()
        browser.close()
    return {"first_paint_cold_s": statistics.median(cold), "first_paint_warm_s": statistics.median(warm),
            "submission_page_s": statistics.median(sub)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (or reuse) this folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="cardbench-first-paint-"))
    try:
        big = args.keep or tmp / "big"
        lb = Leaderboard(big)
        if lb.benchmark_ids():
            bench = max(lb.benchmark_ids(), key=lambda b: len(lb.entry_names(b)))
            print(f"reusing {big} ({len(lb.entry_names(bench))} entries)", file=sys.stderr)
        else:
            print(f"generating {args.entries} entries x {args.cases} cases in {big} ...", file=sys.stderr)
            bench = generate(big, args.entries, args.cases)
        open_leaderboard(big)  # the published entries too (first-use pre-fill, not timed)
        peer = tmp / "published"
        open_leaderboard(peer)
        peer_bench = "cmr-7t__test__cardbench-v1"
        n_big = len(Leaderboard(big).entry_names(bench))
        size_mb = sum(f.stat().st_size for f in big.rglob("*") if f.is_file()) / 1e6
        rows = {}
        for name, root, b, entry in (("big", big, bench, Leaderboard(big).entry_names(bench)[0]),
                                     ("published", peer, peer_bench, "double_tl")):
            r = {"entries": len(Leaderboard(root).entry_names(b))}
            r.update(time_store(root, b, args.repeat))
            r["script_cold_s"] = time_script(root, b, args.repeat)
            r.update(time_browser(root, b, entry, args.repeat) or {})
            rows[name] = r
            print(f"  {name}: {r}", file=sys.stderr)
        table = pd.DataFrame(rows).T
        ratio = (table.loc["big"] / table.loc["published"]).rename("ratio big/published")
        table = pd.concat([table, ratio.to_frame().T])
        print(f"\nleaderboard: {n_big} entries x {args.cases} cases ({size_mb:.0f} MB on disk) vs the pre-filled "
              f"published leaderboard; median of {args.repeat}; seconds\n")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.round(3).to_string())
        if args.json:
            args.json.write_text(json.dumps({"cases": args.cases, "size_mb": size_mb,
                                             "rows": {k: dict(v) for k, v in rows.items()}}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
