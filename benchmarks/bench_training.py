"""Training throughput of the baselines' U-Nets and the data-loading overhead, measured in one run.

What it measures (a benchmark script, not a test; only ratios within one run mean anything):

1. Throughput (training images per second) of one full training step (forward, cross-entropy,
   backward, AdamW step) of ``segmentation_models_pytorch.Unet`` for each encoder (default: the
   shipped ones, resnet34 and resnet18, plus mobilenet_v2 and efficientnet-b0) at 128 and 256 px,
   batch 8, on tensors already in memory; the ratio to the seed's setting (resnet34 at 256 px) is
   printed next to each. Settings are timed in interleaved rounds (one step of each per round,
   median over ``--steps`` rounds) so that load from other processes hits all of them alike.
2. Data-loading overhead: time per step with cardbench's real loader (each item read from its NIfTI
   file and preprocessed on the fly, volume cache disabled, as for a large data set in random
   order; plus batch augmentation) over the time per step with preloaded tensors (plus the same
   augmentation), on the prepared Sunnybrook sample (or ``--dataset``), for the encoders given by
   ``--loader-encoders`` at both sizes.

Run (repository root, project venv with the [baselines] extra)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_training.py            # CPU, 2 threads
    python benchmarks/bench_training.py --device cuda --steps 20 --amp     # unchanged on a GPU machine
    python benchmarks/bench_training.py --json bench_training.json

On a GPU every timed region ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_fn(model, device, amp: bool):
    import torch
    import torch.nn.functional as F

    from cardbench.baselines.data import network_input

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16

    def step(x, y):
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp and device.type == "cuda"):
            logits = model(network_input(x))
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def time_steps(step, batches, device, warmup: int = 1) -> list[float]:
    """Seconds per step for each batch after ``warmup`` untimed steps (batches: callables giving (x, y))."""
    out = []
    for i, get in enumerate(batches):
        _sync(device)
        t = time.perf_counter()
        x, y = get()
        step(x.to(device), y.to(device))
        _sync(device)
        if i >= warmup:
            out.append(time.perf_counter() - t)
    return out


class _Setting:
    """One (encoder, size) model with its optimizer and a fixed batch in memory."""

    def __init__(self, encoder: str, size: int, batch: int, device, amp: bool):
        import segmentation_models_pytorch as smp
        import torch

        torch.manual_seed(0)
        self.model = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=3).to(device).train()
        self.step = train_step_fn(self.model, device, amp)
        self.x = torch.rand(batch, 1, size, size)
        self.y = torch.randint(0, 3, (batch, size, size))


def bench_throughput(settings: dict, steps: int, device, batch: int) -> dict:
    """Images/s per setting: one warm-up step each, then ``steps`` rounds in which every setting runs one
    timed step (interleaved, so a change of machine load hits every setting alike); median per setting."""
    times: dict = {k: [] for k in settings}
    for r in range(steps + 1):
        for k, st in settings.items():
            t = time_steps(st.step, [lambda st=st: (st.x, st.y)], device, warmup=0)[0]
            if r > 0:
                times[k].append(t)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def bench_loader(encoder: str, size: int, batch: int, steps: int, device, amp: bool, dataset: Path,
                 num_workers: int) -> dict:
    """Seconds per training step with preloaded tensors and with the real loader, interleaved step by step."""
    import segmentation_models_pytorch as smp
    import torch

    from cardbench.baselines.augment import augment_batch
    from cardbench.baselines.config import AugmentConfig
    from cardbench.baselines.data import batches_for_epoch, index_dataset, make_slice_dataset, preload
    from cardbench.baselines.train import _Loader

    idx = index_dataset(dataset, ["train"])
    lazy = make_slice_dataset(idx, size, ("LV", "MY"), cache_volumes=0)
    mem = preload(make_slice_dataset(idx, size, ("LV", "MY")))
    aug = AugmentConfig()
    torch.manual_seed(0)
    model = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=3).to(device).train()
    step = train_step_fn(model, device, amp)
    n = len(lazy)
    g = torch.Generator().manual_seed(1)
    idx_batches = []
    while len(idx_batches) < steps + 1:
        idx_batches += batches_for_epoch(n, batch, g)
    idx_batches = idx_batches[: steps + 1]
    iters = {name: iter(_Loader(data, num_workers).batches(idx_batches))
             for name, data in (("preloaded", mem), ("real loader", lazy))}
    ga = torch.Generator().manual_seed(2)
    times: dict = {k: [] for k in iters}
    for r in range(steps + 1):
        for name, it in iters.items():
            def get(it=it):
                x, y, _a = next(it)
                return augment_batch(x.float(), y, aug, ga)

            t = time_steps(step, [get], device, warmup=0)[0]
            if r > 0:
                times[name].append(t)
    res = {k: statistics.median(v) for k, v in times.items()}
    res["ratio"] = res["real loader"] / res["preloaded"]
    res["n_images"] = n
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoders", default="resnet34,resnet18,mobilenet_v2,efficientnet-b0")
    ap.add_argument("--loader-encoders", default="resnet34,resnet18")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for the real loader")
    ap.add_argument("--dataset", type=Path, default=None, help="dataset in the standard layout (default: the "
                    "Sunnybrook sample, prepared to a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from cardbench.baselines.train import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    con = Console()
    sizes = [int(s) for s in args.sizes.split(",")]
    encoders = [e for e in args.encoders.split(",") if e]
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "batch": args.batch,
            "steps": args.steps, "amp": args.amp,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    con.print(f"device {info['device']}{' (' + info['gpu'] + ')' if info['gpu'] else ''}, torch {info['torch']}, "
              f"{info['threads']} threads, batch {args.batch}, median of {args.steps} steps", highlight=False)
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    settings = {(enc, s): _Setting(enc, s, args.batch, device, args.amp) for enc in encoders for s in sizes}
    thr = bench_throughput(settings, args.steps, device, args.batch)
    del settings
    ref = thr.get(("resnet34", 256))
    t = Table(title="training throughput (images/s, tensors in memory)", title_justify="left")
    t.add_column("encoder")
    for s in sizes:
        t.add_column(f"{s} px", justify="right")
        t.add_column(f"{s} px / resnet34@256", justify="right")
    for enc in encoders:
        row = [enc]
        for s in sizes:
            row += [f"{thr[(enc, s)]:.1f}", f"{thr[(enc, s)] / ref:.1f}x" if ref else "-"]
        t.add_row(*row)
    con.print(t)

    tmp = None
    dataset = args.dataset
    if dataset is None:
        from cardbench.datasets.prepare import prepare_dataset

        tmp = tempfile.TemporaryDirectory(prefix="cardbench-bench-")
        dataset = Path(tmp.name) / "sunnybrook-sample"
        prepare_dataset("sunnybrook-sample", dataset)
    load = {}
    for enc in [e for e in args.loader_encoders.split(",") if e]:
        for s in sizes:
            load[(enc, s)] = bench_loader(enc, s, args.batch, args.steps, device, args.amp, dataset, args.num_workers)
    t2 = Table(title=f"data-loading overhead ({args.num_workers} workers): seconds per training step",
               title_justify="left")
    for c in ("encoder", "size", "preloaded", "real loader", "real / preloaded"):
        t2.add_column(c, justify="left" if c == "encoder" else "right")
    for (enc, s), r in load.items():
        t2.add_row(enc, f"{s} px", f"{r['preloaded']:.3f}", f"{r['real loader']:.3f}", f"{r['ratio']:.2f}")
    con.print(t2)
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load0:
        con.print(f"1-minute load average: {load0[0]:.1f} at the start, {load1[0]:.1f} at the end "
                  f"({os.cpu_count()} CPUs; other processes slow every setting alike, the ratios are what counts)",
                  highlight=False)
    info["loadavg_start"], info["loadavg_end"] = (load0 or [None])[0], (load1 or [None])[0]
    if args.json:
        payload = {"info": info,
                   "throughput": [{"encoder": e, "size": s, "images_per_s": v} for (e, s), v in thr.items()],
                   "loader": [{"encoder": e, "size": s, **r} for (e, s), r in load.items()]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        con.print(f"written to {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
