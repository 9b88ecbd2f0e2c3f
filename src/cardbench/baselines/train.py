"""Training: the seed's staged one-cycle schedule, logged per epoch, checkpointed, resumable.

Each stage (:func:`cardbench.baselines.config.compute_schedule`) is a one-cycle fit as fastai v1's
``fit_one_cycle`` (torch ``OneCycleLR``: peak ``lr``, warm-up 30 %, cosine annealing, start
``lr/25``, end ``lr/25/1e4``, momentum (Adam beta1) cycled 0.95 -> 0.85 -> 0.95) with AdamW
(weight decay 0.01, betas 0.9/0.99 as fastai's defaults). A new optimizer starts each stage.

Determinism: the weights are initialised after ``torch.manual_seed(seed)``; the shuffling and the
augmentation of global epoch ``e`` use a generator seeded with ``seed * 100003 + e``, so a run
resumed at an epoch boundary continues exactly as an uninterrupted one (same weights, same log).
Deterministic algorithms are requested (on CUDA, cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8``,
set here when unset).

Output folder (``cfg.out``, default ``runs/<name>``)::

    config.json             resolved configuration
    train_log.csv           one row per epoch: epoch, train_loss, valid_loss, acc_seg, diceComb,
                            diceLV, diceMY, time (the seed's columns), then model, stage, lr, seconds
    model.safetensors       latest weights (config in the metadata)
    train_state.safetensors optimizer state (for --resume); train_state.json: progress
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cardbench._util import atomic_write_text
from cardbench.baselines.config import ConfigError, Stage, TrainConfig, compute_schedule, config_from_dict
from cardbench.baselines.subsets import get_subset

LOG_COLUMNS = ["epoch", "train_loss", "valid_loss", "acc_seg", "diceComb", "diceLV", "diceMY", "time",
               "model", "stage", "lr", "seconds"]
_RESUME_IGNORED = {"out", "num_workers", "threads", "device", "preload"}


class TrainError(RuntimeError):
    """Training cannot start or continue (message names the file or setting and the fix)."""


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        out: output folder.
        checkpoint: the final ``model.safetensors``.
        log: the per-epoch log (DataFrame with :data:`LOG_COLUMNS`).
        schedule: the stages run.
        n_train, n_valid: number of 2D training / validation images.
        seconds: wall time of this call.
        step_losses: training loss of every optimizer step of this call (the global batch's, the
            mean over processes under DDP).
    """

    out: Path
    checkpoint: Path
    log: pd.DataFrame
    schedule: list[Stage]
    n_train: int
    n_valid: int
    seconds: float
    step_losses: list = None


def resolve_device(spec: str):
    """``auto`` -> cuda when available, else cpu."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {spec}: CUDA is not available here; use --device cpu (or auto)")
    return torch.device(spec)


def _amp_settings(cfg: TrainConfig, device):
    import torch

    use = str(cfg.amp).lower()
    on = device.type == "cuda" if use == "auto" else use == "true"
    if not on or device.type != "cuda":
        return False, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return True, dtype


def _fmt_time(sec: float) -> str:
    sec = int(round(sec))
    return f"{sec // 60:02d}:{sec % 60:02d}"


def epoch_generator(seed: int, global_epoch: int):
    """The CPU generator for shuffling and augmentation of one epoch (see the module docstring)."""
    import torch

    return torch.Generator().manual_seed(int(seed) * 100003 + int(global_epoch))


def prepare_data(cfg: TrainConfig, progress: bool = False):
    """Index the training and validation images and build their datasets.

    Returns:
        dict with ``train_index``, ``valid_index`` (or None), ``train`` and ``valid`` datasets (lazy
        or preloaded tensors), ``n_all`` (for epoch scaling) and ``notes``.

    Raises:
        TrainError: no dataset configured. DatasetError, SubsetError: see their modules.
    """
    from cardbench.baselines.data import EmptySelectionError, estimate_bytes, index_dataset, make_slice_dataset, preload

    if not cfg.dataset:
        raise TrainError("no dataset: pass --dataset FOLDER (a dataset in the standard layout)")
    subset = get_subset(cfg.subset, cfg.subset_file)
    train_index = index_dataset(cfg.dataset, [cfg.train_split], subset=subset, classes=tuple(cfg.classes))
    valid_index = None
    if cfg.valid_split:
        try:
            valid_index = index_dataset(cfg.dataset, [cfg.valid_split], classes=tuple(cfg.classes))
        except EmptySelectionError:
            valid_index = None
    train_ds = make_slice_dataset(train_index, cfg.image_size, cfg.classes)
    valid_ds = make_slice_dataset(valid_index, cfg.image_size, cfg.classes) if valid_index else None
    n_train = len(train_ds)
    n_all = cfg.n_all or (subset.n_all if subset is not None and subset.n_all else None)
    if n_all is None and subset is not None and cfg.scale_epochs:
        n_all = len(make_slice_dataset(index_dataset(cfg.dataset, [cfg.train_split], classes=tuple(cfg.classes)),
                                       cfg.image_size, cfg.classes))
    want = str(cfg.preload).lower()
    total = n_train + (len(valid_ds) if valid_ds else 0)
    do_preload = want == "true" or (want == "auto" and estimate_bytes(total, cfg.image_size) < 2 * 1024 ** 3)
    if do_preload:
        train = preload(train_ds, progress, "loading training images")
        valid = preload(valid_ds, progress, "loading validation images") if valid_ds else None
    else:
        train, valid = train_ds, valid_ds
    notes = list(train_index.notes)
    if valid_index is None and cfg.valid_split:
        notes.append(f"no labelled images in split '{cfg.valid_split}': the valid_* columns of the log stay empty")
    return {"train_index": train_index, "valid_index": valid_index, "train": train, "valid": valid,
            "n_train": n_train, "n_valid": len(valid_ds) if valid_ds else 0, "n_all": n_all or n_train,
            "preloaded": do_preload, "notes": notes}


def _fetch(data, idx):
    """A batch (x float32 (B,1,S,S), y int64 (B,S,S), annotated bool (B,C)) from preloaded tensors
    or a lazy dataset."""
    import torch

    if isinstance(data, tuple):
        xs, ys, an = data
        return xs[idx].float(), ys[idx].long(), an[idx]
    items = [data[int(i)] for i in idx]
    return (torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items]),
            torch.stack([it[2] for it in items]))


def _n(data) -> int:
    return 0 if data is None else (len(data[0]) if isinstance(data, tuple) else len(data))


class _Loader:
    """Yields batches for an epoch from index batches; with ``num_workers`` > 0 and a lazy dataset it
    uses a torch DataLoader over a fixed batch sampler (order still set by the epoch generator)."""

    def __init__(self, data, num_workers: int):
        self.data = data
        self.num_workers = num_workers

    def batches(self, index_batches):
        if isinstance(self.data, tuple) or self.num_workers <= 0:
            for idx in index_batches:
                yield _fetch(self.data, idx)
            return
        import torch.utils.data

        dl = torch.utils.data.DataLoader(self.data, batch_sampler=[[int(i) for i in b] for b in index_batches],
                                         num_workers=self.num_workers, persistent_workers=False)
        yield from dl


def evaluate(model, data, cfg: TrainConfig, device, amp=(False, None), batch_size: int | None = None) -> dict:
    """Validation loss and the seed's metrics (means over images) on ``data``; NaN when empty."""
    import torch

    from cardbench.baselines.data import chunks, network_input
    from cardbench.baselines.losses import compute_loss, image_metrics

    res = {k: float("nan") for k in ("valid_loss", "acc_seg", "diceComb", "diceLV", "diceMY")}
    n = _n(data)
    if n == 0:
        return res
    bs = batch_size or max(cfg.batch_size, 8)
    model.eval()
    tot_loss, tot_n = 0.0, 0
    per = {}
    with torch.no_grad():
        for r in chunks(n, bs):
            idx = torch.tensor(list(r))
            x, y, a = _fetch(data, idx)
            x, y, a = x.to(device), y.to(device), a.to(device)
            with torch.autocast(device_type=device.type, dtype=amp[1], enabled=amp[0]):
                logits = model(network_input(x))
            logits = logits.float()
            loss = compute_loss(cfg.loss, logits, y, a, cfg.focal_gamma)
            tot_loss += float(loss) * len(idx)
            tot_n += len(idx)
            for k, v in image_metrics(logits, y, a, tuple(cfg.classes)).items():
                per.setdefault(k, []).append(v.cpu().numpy())
    res["valid_loss"] = tot_loss / tot_n
    for k, parts in per.items():
        arr = np.concatenate(parts)
        res[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
    return res


def _set_threads(cfg: TrainConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))


def _check_resume(out: Path, cfg: TrainConfig) -> dict:
    state_json = out / "train_state.json"
    if not state_json.exists():
        raise TrainError(f"{state_json}: nothing to resume (no training state); start without --resume")
    state = json.loads(state_json.read_text(encoding="utf-8"))
    old = config_from_dict(state["config"]).to_dict()
    new = cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUME_IGNORED and old.get(k) != new.get(k))
    if diff:
        raise TrainError(f"{state_json}: the run was started with a different configuration ({', '.join(diff)} "
                         "differ); resume with the same config and overrides, or choose a new --out")
    return state


def _save_train_state(out: Path, cfg: TrainConfig, optimizer, progress: dict) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {}
    meta_state = {}
    for pid, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta_state[f"{pid}.{k}"] = v
    tmp = out / ".train_state.safetensors.tmp"
    if tensors:
        save_file(tensors, str(tmp))
        os.replace(tmp, out / "train_state.safetensors")
    payload = dict(progress, config=cfg.to_dict(), optimizer_scalars=meta_state)
    atomic_write_text(out / "train_state.json", json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _load_optimizer_state(out: Path, optimizer, state: dict) -> None:
    from safetensors.torch import load_file

    sd = optimizer.state_dict()
    path = out / "train_state.safetensors"
    tensors = load_file(str(path)) if path.exists() else {}
    new_state: dict = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        new_state.setdefault(int(pid), {})[k] = v
    for key, v in state.get("optimizer_scalars", {}).items():
        pid, k = key.split(".", 1)
        new_state.setdefault(int(pid), {})[k] = v
    sd["state"] = new_state
    optimizer.load_state_dict(sd)


def _make_optimizer(model, cfg: TrainConfig, stage: Stage, steps_total: int):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=stage.lr / cfg.div_factor, betas=tuple(cfg.betas),
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=stage.lr, total_steps=max(1, steps_total), pct_start=cfg.pct_start,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, anneal_strategy="cos",
        cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)
    return opt, sched


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, console=None,
          data: dict | None = None, overwrite: bool = False, stop_after: int | None = None,
          channels_last: bool = False) -> TrainResult:
    """Train (or resume) a run described by ``cfg``.

    Args:
        cfg: resolved configuration (``cfg.dataset`` must be set).
        resume: continue the run in ``cfg.out`` from its last completed epoch.
        progress: show rich progress bars on stderr.
        console: a rich Console for messages (default: stderr).
        data: the result of :func:`prepare_data` (to reuse loaded images); built when None.
        overwrite: start afresh in an output folder that holds a finished run.
        stop_after: stop once this many epochs (in total) are done, leaving a resumable run (as an
            interruption would).
        channels_last: keep the network and its input in ``torch.channels_last`` memory format
            (faster convolutions on recent GPUs; same values).

    Under torchrun (``WORLD_SIZE`` > 1) this is one process of a DDP run, see
    :mod:`cardbench.baselines.distributed`: ``cfg.batch_size`` is the global batch (each process
    trains on ``batch_size / N`` of it), only rank 0 writes the output folder and shows progress.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainError, ConfigError, DatasetError, SubsetError, WeightsUnavailable, WeightsError.
    """
    t0 = time.time()
    out = Path(cfg.out or Path("runs") / cfg.name)
    cfg.out = str(out)
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    _set_threads(cfg)
    from cardbench.baselines import distributed as ddp

    dist_info = ddp.setup(cfg.device)
    try:
        return _train(cfg, resume, progress and dist_info.main, console, data, overwrite, stop_after,
                      channels_last, dist_info, out, t0)
    finally:
        ddp.teardown(dist_info)


def _train(cfg, resume, progress, console, data, overwrite, stop_after, channels_last, dist_info, out, t0):
    import torch

    from cardbench.baselines import distributed as ddp
    from cardbench.baselines._progress import progress_bar
    from cardbench.baselines.augment import augment_batch
    from cardbench.baselines.data import batches_for_epoch, n_steps, network_input
    from cardbench.baselines.losses import compute_loss
    from cardbench.baselines.model import build_model, save_checkpoint, set_encoder_frozen

    main = dist_info.main
    if dist_info.active and cfg.batch_size % dist_info.world_size:
        raise TrainError(f"batch_size {cfg.batch_size} (the global batch) is not divisible by {dist_info.world_size} "
                         "processes; choose a batch size that is a multiple of --nproc")
    device = resolve_device(cfg.device)
    if dist_info.active and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    amp = _amp_settings(cfg, device)
    state = _check_resume(out, cfg) if resume else None
    if not resume and (out / "train_state.json").exists():
        prev = json.loads((out / "train_state.json").read_text(encoding="utf-8"))
        if not prev.get("complete") and not overwrite:
            raise TrainError(f"{out}: holds an unfinished run; continue it with --resume, or pass --overwrite, "
                             "or choose another --out")
        if prev.get("complete") and not overwrite:
            raise TrainError(f"{out}: holds a finished run; pass --overwrite to replace it or choose another --out")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    model = build_model(cfg)  # fails fast on missing ImageNet weights
    if data is None:
        data = prepare_data(cfg, progress)
    from rich.markup import escape

    for note in data["notes"] if main else []:
        console.print(f"note: {escape(note)}", highlight=False)
    schedule = compute_schedule(cfg, data["n_train"], data["n_all"])
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # noqa: BLE001
        pass
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model.to(device)
    model = ddp.convert_batchnorm(model, dist_info, device.type == "cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp.barrier(dist_info)  # every process has checked the folder before rank 0 changes it
    if main:
        if not resume and overwrite:
            for f in ("train_state.json", "train_state.safetensors", "train_log.csv", "model.safetensors"):
                (out / f).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    ddp.barrier(dist_info)
    log_rows: list[dict] = []
    done_epochs = 0
    if state is not None:
        from cardbench.baselines.model import read_checkpoint

        st, _ = read_checkpoint(out / "model.safetensors")
        model.load_state_dict(st)
        done_epochs = int(state["epochs_done"])
        if (out / "train_log.csv").exists():
            log_rows = pd.read_csv(out / "train_log.csv").iloc[:done_epochs].to_dict("records")
    train_data, valid_data = data["train"], data["valid"]
    loader = _Loader(train_data, cfg.num_workers)
    n_train = data["n_train"]
    steps = n_steps(n_train, cfg.batch_size)
    total_epochs = sum(s.epochs for s in schedule)
    scaler = torch.amp.GradScaler("cuda") if amp[0] and amp[1] == torch.float16 else None
    global_epoch = 0
    step_losses: list[float] = []
    with progress_bar(progress, console) as bar:
        # log_every=0: one line per epoch where stderr is not a terminal (loss, validation Dice, times)
        ep_task = bar.add_task(f"training {cfg.name}: epoch", total=total_epochs, completed=done_epochs,
                               log_every=0)
        for si, stage in enumerate(schedule):
            if global_epoch + stage.epochs <= done_epochs:
                global_epoch += stage.epochs
                continue
            set_encoder_frozen(model, stage.frozen, cfg.train_bn)
            net = model
            if dist_info.active:  # re-wrapped per stage: the trainable parameters change
                from torch.nn.parallel import DistributedDataParallel

                unused = ddp.has_unused_parameters(model, cfg.image_size, device)  # encoder_depth < 5
                net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=unused)
            opt, sched = _make_optimizer(model, cfg, stage, stage.epochs * steps)
            start_in_stage = max(0, done_epochs - global_epoch)
            if start_in_stage:
                _load_optimizer_state(out, opt, state)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for _ in range(start_in_stage * steps):
                        sched.step()
            for e in range(start_in_stage, stage.epochs):
                ge = global_epoch + e
                if stop_after is not None and ge >= stop_after:
                    break
                te = time.time()
                gen = epoch_generator(cfg.seed, ge)
                model.train()
                batches = batches_for_epoch(n_train, cfg.batch_size, gen)
                losses = []
                step_task = bar.add_task(f"  epoch {ge + 1}/{total_epochs} ({stage.name})", total=len(batches),
                                         log_every=None)
                for x, y, a in loader.batches(batches):
                    x, y = augment_batch(x.float(), y, cfg.augment, gen)
                    if dist_info.active:  # this process's slice of the global batch (same draws everywhere)
                        sl = ddp.shard(x, dist_info)
                        x, y, a = x[sl], y[sl], a[sl]
                    x, y, a = x.to(device, non_blocking=True), y.to(device, non_blocking=True), a.to(device)
                    xin = network_input(x)
                    if channels_last:
                        xin = xin.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device_type=device.type, dtype=amp[1], enabled=amp[0]):
                        logits = net(xin)
                    loss = compute_loss(cfg.loss, logits.float(), y, a, cfg.focal_gamma)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    sched.step()
                    lv = float(ddp.mean_over_processes(loss.detach(), dist_info))
                    if not math.isfinite(lv):
                        raise TrainError(f"epoch {ge + 1}: the training loss became {lv}; lower the learning rate "
                                         f"(stage {stage.name}, lr {stage.lr:g}) or check the images")
                    losses.append(lv)
                    step_losses.append(lv)
                    bar.advance(step_task)
                    bar.update(step_task, info=f"loss {lv:.4f}")
                bar.remove_task(step_task)
                if main:
                    metrics = evaluate(model, valid_data, cfg, device, amp)
                else:
                    metrics = {k: float("nan") for k in ("valid_loss", "acc_seg", "diceComb", "diceLV", "diceMY")}
                sec = time.time() - te
                row = {"epoch": ge, "train_loss": float(np.mean(losses)) if losses else float("nan"), **metrics,
                       "time": _fmt_time(sec), "model": cfg.name, "stage": stage.name, "lr": stage.lr,
                       "seconds": round(sec, 3)}
                log_rows.append(row)
                complete = ge + 1 == total_epochs
                if main:  # rank 0 writes; the others wait, so a resume sees a consistent folder
                    _write_log(out, log_rows)
                    save_checkpoint(out / "model.safetensors", model, cfg, {"epochs_done": ge + 1})
                    _save_train_state(out, cfg, opt, {"epochs_done": ge + 1, "total_epochs": total_epochs,
                                                      "schedule": [s.__dict__ for s in schedule],
                                                      "n_train": n_train, "n_all": data["n_all"],
                                                      "complete": complete})
                ddp.barrier(dist_info)
                info = f"loss {row['train_loss']:.4f}"
                if not math.isnan(row["valid_loss"]):
                    info += (f" | valid loss {row['valid_loss']:.4f}, Dice LV {row['diceLV']:.3f} "
                             f"MY {row['diceMY']:.3f}")
                bar.update(ep_task, advance=1, info=info)
            global_epoch += stage.epochs
            if stop_after is not None and global_epoch >= stop_after:
                break
    return TrainResult(out, out / "model.safetensors", pd.DataFrame(log_rows, columns=LOG_COLUMNS), schedule,
                       n_train, data["n_valid"], time.time() - t0, step_losses)


def _write_log(out: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=LOG_COLUMNS)
    atomic_write_text(out / "train_log.csv", df.to_csv(index=False, float_format="%.6f"))


__all__ = ["ConfigError", "LOG_COLUMNS", "TrainError", "TrainResult", "evaluate", "prepare_data", "train"]


def main(argv: list[str] | None = None) -> int:
    """``python -m cardbench.baselines.train`` / ``torchrun --nproc-per-node N -m cardbench.baselines.train``.

    Options: ``--config NAME|FILE`` (default finetune), ``--set KEY=VALUE`` (repeatable, as
    ``cardbench baseline train --set``), ``--resume``, ``--overwrite``, ``--channels-last``,
    ``--stop-after EPOCHS``, ``--step-losses FILE`` (rank 0 writes the loss of every step as JSON).
    Exit code 2 on a bad configuration or input, with one line naming the problem.
    """
    import argparse
    import sys

    from cardbench.baselines.config import load_config, parse_override

    ap = argparse.ArgumentParser(prog="cardbench.baselines.train", description="Train a cardbench baseline "
                                 "(one process, or one of N under torchrun: DDP).")
    ap.add_argument("--config", default="finetune")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--step-losses", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, dict(parse_override(t) for t in args.sets))
        res = train(cfg, resume=args.resume, progress=sys.stderr.isatty(), overwrite=args.overwrite,
                    stop_after=args.stop_after, channels_last=args.channels_last)
    except (TrainError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.step_losses is not None and int(os.environ.get("RANK", "0") or 0) == 0:
        atomic_write_text(args.step_losses, json.dumps(res.step_losses) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
