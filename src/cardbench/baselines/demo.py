"""The whole loop on real images, CPU only, in one call (``cardbench demo`` runs it when torch is installed).

1. Prepare the embedded Sunnybrook sample (5 patients, CC0) into the standard layout.
2. Train a U-Net on its 3 training patients (config ``demo``: random initialisation, since ImageNet
   weights cannot be downloaded offline; ResNet18 encoder at 128 px so it runs in minutes on 2 CPU
   cores). MY is annotated at ED only: the partial-annotation loss
   (:mod:`cardbench.baselines.losses`) never trains it as background at ES.
3. Predict the 2 test patients (NIfTI volumes on the reference grid + submission.yaml).
4. Score them (``cardbench-v1`` and ``ankenbrand2021`` protocols) with :func:`cardbench.benchmark.score`.
5. Add both results to a leaderboard folder (pre-filled with the published entries) and print the
   published 7T entries with the new entry next to them (different data sets: the numbers show
   the same metric, they are not a head-to-head comparison).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEMO_DATASET = "sunnybrook-sample"
PROTOCOLS = ("cardbench-v1", "ankenbrand2021")
PUBLISHED_BENCH = "cmr-7t__test__ankenbrand2021"


@dataclass
class DemoResult:
    """What :func:`run_demo_loop` produced.

    Attributes:
        out: the demo folder.
        dataset: prepared dataset folder.
        run: training run folder (model.safetensors, train_log.csv, config.json).
        predictions: submission folder.
        results: protocol -> ScoreResult.
        leaderboard: leaderboard folder (None when the leaderboard module is not installed).
        entries: protocol -> (benchmark id, entry name).
        seconds: step -> wall time in s (prepare, train, predict, score, leaderboard, total).
    """

    out: Path
    dataset: Path
    run: Path
    predictions: Path
    results: dict
    leaderboard: Path | None
    entries: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def run_demo_loop(out: str | Path = "cardbench-demo", *, console: Console | None = None, progress: bool = True,
                  config: str = "demo", overrides: dict | None = None, leaderboard: str | Path | None = None,
                  entry_name: str = "demo-unet-sunnybrook") -> DemoResult:
    """Prepare, train, predict, score, add to a leaderboard, print it.

    Args:
        out: folder for everything the loop writes (sub-folders sunnybrook-sample, baseline-run,
            predictions, scores, leaderboard).
        console: where to print (default: stdout).
        progress: rich progress bars on stderr.
        config: training config (shipped name or YAML file).
        overrides: config overrides (e.g. ``{"base_epochs": 2, "image_size": 64}`` for a quick run).
        leaderboard: leaderboard folder (default ``<out>/leaderboard``).
        entry_name: leaderboard entry name.

    Returns:
        :class:`DemoResult`.

    Raises:
        Any error of the steps (DatasetError, TrainError, ValidationError, LeaderboardError, ...).
    """
    from cardbench.baselines.config import load_config
    from cardbench.baselines.predict import predict_dataset
    from cardbench.baselines.train import train
    from cardbench.benchmark import score
    from cardbench.benchmark.report import print_section, print_summary
    from cardbench.datasets.prepare import prepare_dataset

    con = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    secs: dict[str, float] = {}

    print_section(con, f"[bold]Baseline loop 1/5: prepare {DEMO_DATASET} (embedded raw DICOM + contours -> standard layout)")
    t = time.time()
    ds = out / DEMO_DATASET
    prepare_dataset(DEMO_DATASET, ds, progress=progress, overwrite=True)
    secs["prepare"] = time.time() - t
    con.print(f"prepared to {ds} ({secs['prepare']:.1f} s)", highlight=False)

    ov = {"dataset": str(ds), "out": str(out / "baseline-run"), **(overrides or {})}
    cfg = load_config(config, ov)
    print_section(con, f"[bold]Baseline loop 2/5: train a U-Net ({cfg.encoder}, {cfg.image_size} px, init {cfg.init}) "
                  "on the training split")
    t = time.time()
    tr = train(cfg, progress=progress, overwrite=True, console=Console(stderr=True))
    secs["train"] = time.time() - t
    last = tr.log.iloc[-1]
    con.print(f"{tr.n_train} training images, {len(tr.log)} epochs "
              + "(" + ", ".join(f"{s.name} {s.epochs} @ lr {s.lr:g}" for s in tr.schedule) + "), "
              f"final train loss {last['train_loss']:.4f}; {secs['train']:.0f} s", highlight=False)

    print_section(con, "[bold]Baseline loop 3/5: predict the test split")
    t = time.time()
    pred_dir = out / "predictions"
    pr = predict_dataset(tr.checkpoint, ds, pred_dir, split="test", name=entry_name, progress=progress)
    secs["predict"] = time.time() - t
    con.print(f"{pr.n_volumes} volumes ({pr.n_slices} slices) written to {pred_dir} ({secs['predict']:.1f} s)",
              highlight=False)

    print_section(con, "[bold]Baseline loop 4/5: score the predictions against the reference")
    t = time.time()
    results = {}
    for proto in PROTOCOLS:
        res = score(pred_dir, ds, protocol=proto, split="test", progress=False)
        res.write(out / "scores" / proto)
        results[proto] = res
    secs["score"] = time.time() - t
    print_summary(results["cardbench-v1"], con)

    print_section(con, "[bold]Baseline loop 5/5: leaderboard")
    t = time.time()
    lb_dir = Path(leaderboard) if leaderboard is not None else out / "leaderboard"
    entries: dict = {}
    try:
        import cardbench.reproductions  # noqa: F401  (registers the published pre-fill sources)
        from cardbench.benchmark.leaderboard import add_entry, open_leaderboard
    except ImportError:
        lb_dir = None
        con.print(f"(the leaderboard module is not installed: results are in {out / 'scores'})")
    if lb_dir is not None:
        meta = {"label": f"U-Net {cfg.encoder} {cfg.image_size}px, {cfg.init} init, demo",
                "method": pr.meta["method"], "training_data": f"{DEMO_DATASET} train (3 patients)",
                "team": "cardbench demo"}
        open_leaderboard(lb_dir, prefill=True, progress=progress)
        for proto, res in results.items():
            e = add_entry(res, lb_dir, entry_name, meta=meta, replace=True, prefill=False,
                          source="cardbench demo (baseline loop)")
            entries[proto] = (e.benchmark, e.name)
        print_leaderboard(lb_dir, entries.get("ankenbrand2021"), con)
    secs["leaderboard"] = time.time() - t
    secs["total"] = time.time() - t_all
    con.print(f"loop done in {secs['total']:.0f} s (prepare {secs['prepare']:.0f}, train {secs['train']:.0f}, "
              f"predict {secs['predict']:.0f}, score {secs['score']:.0f}, leaderboard {secs['leaderboard']:.0f})",
              highlight=False)
    return DemoResult(out, ds, tr.out, pred_dir, results, lb_dir, entries, secs)


def _fmt(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else f"{x:.3f}"


def print_leaderboard(lb_dir: Path, new: tuple[str, str] | None, con: Console) -> None:
    """Print the published 7T test-set entries and the new entry in one table (protocol ankenbrand2021)."""
    from cardbench.benchmark.leaderboard import Leaderboard, LeaderboardError

    lb = Leaderboard(lb_dir)
    t = Table(title="Leaderboard, protocol ankenbrand2021 (mean per-image Dice): published 7T entries and the new "
                    "demo entry", title_justify="left")
    for c in ("data", "rank", "entry", "Dice LV", "Dice MY", "images"):
        t.add_column(c, justify="right" if c in ("rank", "Dice LV", "Dice MY", "images") else "left")
    benches = [b for b in (PUBLISHED_BENCH, new[0] if new else None) if b]
    for b in benches:
        try:
            info = lb.benchmark(b)
            df = lb.ranked(b, "dice_lv", metrics=["dice"])
        except LeaderboardError as e:
            con.print(f"(skipped {b}: {e})", highlight=False)
            continue
        data = f"{info.dataset.get('name', b)} {info.split}"
        for _, r in df.iterrows():
            is_new = new is not None and b == new[0] and r["entry"] == new[1]
            t.add_row(data, str(r["rank"]), r["entry"] + (" (new)" if is_new else ""), _fmt(r.get("dice_LV")),
                      _fmt(r.get("dice_MY")), str(r.get("n_values", "")), style="bold green" if is_new else None)
    con.print(t)
    con.print("[dim]The published entries are 7T volunteers (Ankenbrand et al. 2021, test set); the demo entry is "
              "2 Sunnybrook patients at 1.5T scored with the same protocol: same metric, different data.[/dim]")
    con.print(f"[dim]Full leaderboard: cardbench leaderboard show -L {lb_dir}   |   dashboard: cardbench dashboard "
              f"--leaderboard {lb_dir}[/dim]", highlight=False)
