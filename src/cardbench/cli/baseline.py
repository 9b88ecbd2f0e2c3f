"""``cardbench baseline ...``: train, fine-tune and apply U-Net baselines (segmentation-models-pytorch).

torch is imported inside the commands only, so ``cardbench --help`` works without it.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from cardbench.cli import app
from cardbench.cli import errors as _errors

err = Console(stderr=True)

INSTALL_HINT = ("pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch safetensors "
                "(or: pip install 'cardbench[baselines]')")

baseline_app = typer.Typer(
    name="baseline", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="U-Net baselines (segmentation-models-pytorch): pretrain, fine-tune (transfer learning), predict.",
)
app.add_typer(baseline_app, name="baseline")


def _fail(msg: str, code: int = 1) -> None:
    _errors.fail(msg, code)  # one escaped line; exit codes in cardbench.cli.errors


def torch_missing() -> str | None:
    """None when torch and segmentation-models-pytorch import, else the one-line install message.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch is imported: OpenMP spin-waiting slows
    CPU training 8-10 times when the other cores are busy.
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    missing = []
    for mod in ("torch", "segmentation_models_pytorch", "safetensors"):
        try:
            __import__(mod)
        except Exception as e:  # noqa: BLE001  (ImportError, or a broken torchvision)
            missing.append(f"{mod} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    if not missing:
        return None
    return f"the baselines need torch and segmentation-models-pytorch, missing: {'; '.join(missing)}. Install: {INSTALL_HINT}"


def _require_torch() -> None:
    msg = torch_missing()
    if msg:
        _fail(msg)


def _overrides(dataset, init, subset, subset_file, encoder, encoder_weights, image_size, batch_size, epochs, loss,
               seed, device, out, name, sets) -> dict:
    from cardbench.baselines.config import parse_override

    ov = {"dataset": str(dataset) if dataset else None, "init": init, "subset": subset,
          "subset_file": str(subset_file) if subset_file else None, "encoder": encoder,
          "encoder_weights": str(encoder_weights) if encoder_weights else None, "image_size": image_size,
          "batch_size": batch_size, "base_epochs": epochs, "loss": loss, "seed": seed, "device": device,
          "out": str(out) if out else None, "name": name}
    for s in sets or []:
        k, v = parse_override(s)
        ov[k] = v
    return ov


_CONFIG_HELP = "Shipped config (finetune, pretrain-kaggle, cpu-smoke, demo) or a YAML file."


@baseline_app.command("train")
def train_cmd(
    config: str = typer.Option("finetune", "--config", "-c", help=_CONFIG_HELP),
    dataset: Optional[Path] = typer.Option(None, "--dataset", "-d", help="Dataset folder in the standard layout "
                                           "(images/, labels/, subjects.csv)."),
    init: Optional[str] = typer.Option(None, "--init", help="random | imagenet | checkpoint:PATH "
                                       "(plain learning R, transfer learning TL, double TL TL2)."),
    subset: Optional[str] = typer.Option(None, "--subset", help="Training subset: v7 v3 v1 r7 r3 r1 esed r_esed "
                                         "(7T study, epochs scaled by size) or edes (ED/ES frames)."),
    subset_file: Optional[Path] = typer.Option(None, "--subset-file", help="CSV/TSV with subject, frame, slice "
                                               "of the training images."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="smp encoder (resnet34, resnet18, ...)."),
    encoder_weights: Optional[Path] = typer.Option(None, "--encoder-weights", help="Local ImageNet encoder weights "
                                                   "(smp-hub model.safetensors or torchvision .pth) for --init imagenet."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Network input size (px, multiple of 32)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Base epochs E before subset scaling."),
    loss: Optional[str] = typer.Option(None, "--loss", help="ce, dice or focal."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda[:N]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (log and submission name)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Any config key as KEY=VALUE (repeatable, "
                                             "dotted for nested keys), e.g. --set augment.max_rotate=20; change "
                                             "stages in a YAML file."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in --out."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and schedule; do not train."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train with N data-parallel processes (DDP, launched with "
                              "torchrun; gloo on CPU, nccl on GPU); --batch-size is the global batch, split over them."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last memory format (GPU speed)."),
) -> None:
    """Train a U-Net: the seed's staged one-cycle schedule, a CSV log per epoch, safetensors checkpoints.

    Writes config.json, train_log.csv, model.safetensors (and the state for --resume) to --out.
    """
    from cardbench.baselines.config import ConfigError, load_config

    try:
        ov = _overrides(dataset, init, subset, subset_file, encoder, encoder_weights,
                        image_size, batch_size, epochs, loss, seed, device, out, name, sets)
        cfg = load_config(config, ov)
    except ConfigError as e:
        _fail(str(e), 2)
    if dry_run:  # a plan only: no weights are needed to print it
        _print_plan(cfg)
        return
    if cfg.init_kind == "imagenet":
        from cardbench.baselines.weights import WeightsUnavailable, resolve_imagenet

        try:
            resolve_imagenet(cfg.encoder, cfg.encoder_weights)
        except WeightsUnavailable as e:
            _fail(str(e), 2)
    if cfg.init_kind == "checkpoint" and not Path(cfg.init_checkpoint).is_file():
        _fail(f"{cfg.init_checkpoint}: checkpoint not found (--init checkpoint:PATH takes a model.safetensors)", 2)
    _require_torch()
    if nproc > 1:
        if cfg.batch_size % nproc:
            _fail(f"--batch-size {cfg.batch_size} (the global batch) is not divisible by --nproc {nproc}; "
                  "choose a multiple of --nproc", 2)
        raise typer.Exit(_launch_torchrun(config, {**ov, "out": cfg.out or str(Path("runs") / cfg.name)}, nproc,
                                          resume, overwrite, channels_last))
    from cardbench.baselines.data import DatasetError
    from cardbench.baselines.subsets import SubsetError
    from cardbench.baselines.train import TrainError, train
    from cardbench.baselines.weights import WeightsError, WeightsUnavailable

    try:
        res = train(cfg, resume=resume, overwrite=overwrite, progress=True,  # log lines when not a terminal
                    channels_last=channels_last)
    except (DatasetError, SubsetError, ConfigError) as e:
        _fail(str(e), 2)
    except (TrainError, WeightsError, WeightsUnavailable) as e:
        _fail(str(e), 1)
    con = Console()
    con.print(_log_table(res.log.tail(10), f"{cfg.name}: last epochs of {len(res.log)}"))
    con.print(f"{res.n_train} training images, {res.n_valid} validation images; schedule "
              + ", ".join(f"{s.name} {s.epochs} ep @ {s.lr:g}{' (frozen)' if s.frozen else ''}" for s in res.schedule))
    con.print(f"written to [bold]{escape(str(res.out))}[/bold]: model.safetensors, config.json, train_log.csv "
              f"({res.seconds:.0f} s)")


def _launch_torchrun(config: str, overrides: dict, nproc: int, resume: bool, overwrite: bool,
                     channels_last: bool) -> int:
    """Run ``torchrun --standalone --nproc-per-node N -m cardbench.baselines.train`` with the same
    configuration (overrides passed as ``--set KEY=JSON``); returns its exit code."""
    import json
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "cardbench.baselines.train", "--config", config]
    for k, v in overrides.items():
        if v is not None:
            cmd += ["--set", f"{k}={json.dumps(v)}"]
    cmd += ["--resume"] * resume + ["--overwrite"] * overwrite + ["--channels-last"] * channels_last
    Console(stderr=True).print(f"launching {nproc} processes: torchrun --nproc-per-node {nproc} -m "
                               "cardbench.baselines.train ...", highlight=False)
    rc = subprocess.run(cmd).returncode
    if rc == 0:
        Console().print(f"written to [bold]{overrides['out']}[/bold]: model.safetensors, config.json, train_log.csv")
    return rc


def _log_table(df, title):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    cols = ["epoch", "stage", "train_loss", "valid_loss", "acc_seg", "diceComb", "diceLV", "diceMY", "time"]
    for c in cols:
        t.add_column(c, justify="right")
    for _, r in df.iterrows():
        t.add_row(*[("-" if r[c] != r[c] else f"{r[c]:.4f}") if isinstance(r[c], float) else str(r[c]) for c in cols])
    return t


def _print_plan(cfg, n_images: int | None = None) -> None:
    from rich.table import Table

    from cardbench.baselines.config import compute_schedule
    from cardbench.baselines.subsets import get_subset

    from cardbench.baselines.subsets import SubsetError

    con = Console()
    con.print_json(cfg.to_json())
    try:
        sub = get_subset(cfg.subset, cfg.subset_file)
    except SubsetError as e:
        con.print(f"schedule: {e}", highlight=False)
        return
    n_all = cfg.n_all or (sub.n_all if sub else None)
    n, ok = _n_training_images(cfg, sub, n_images, con)
    if not ok:
        return
    if n is None:
        con.print("schedule: depends on the number of training images (give --subset v7..r_esed, or "
                  "`cardbench baseline schedule --n-images N`)")
        return
    t = Table(title=f"schedule for {n} training images" + (f" of {n_all}" if n_all else ""), title_justify="left")
    for c in ("stage", "epochs", "peak lr", "encoder"):
        t.add_column(c)
    for s in compute_schedule(cfg, n, n_all):
        t.add_row(s.name, str(s.epochs), f"{s.lr:g}", "frozen" if s.frozen else "trainable")
    con.print(t)


@baseline_app.command("schedule")
def schedule_cmd(
    config: str = typer.Option("finetune", "--config", "-c", help=_CONFIG_HELP),
    init: Optional[str] = typer.Option(None, "--init", help="random | imagenet | checkpoint:PATH."),
    subset: Optional[str] = typer.Option(None, "--subset", help="v7 v3 v1 r7 r3 r1 esed r_esed."),
    n_images: Optional[int] = typer.Option(None, "--n-images", help="Training images (instead of a subset)."),
    n_all: Optional[int] = typer.Option(None, "--n-all", help="Images the epoch scaling refers to."),
    as_json: bool = typer.Option(False, "--json", help="Print the stages as JSON."),
) -> None:
    """Show the training schedule (stages, epochs, learning rates) a config gives; no torch needed."""
    import json

    from cardbench.baselines.config import ConfigError, compute_schedule, load_config
    from cardbench.baselines.subsets import SubsetError, get_subset

    try:
        cfg = load_config(config, {"init": init, "subset": subset, "n_all": n_all})
        sub = get_subset(cfg.subset)
    except (ConfigError, SubsetError) as e:
        _fail(str(e), 2)
    n, ok = _n_training_images(cfg, sub, n_images, Console(stderr=True))
    if not ok:
        raise typer.Exit(2)
    if n is None:
        _fail("give --subset (v7 v3 v1 r7 r3 r1 esed r_esed) or --n-images N", 2)
    total = cfg.n_all or (sub.n_all if sub else None)
    stages = compute_schedule(cfg, n, total)
    if as_json:
        typer.echo(json.dumps({"n_images": n, "n_all": total, "stages": [s.__dict__ for s in stages]}, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"{config}, init {cfg.init}: {n} training images" + (f" of {total}" if total else ""),
              title_justify="left")
    for c in ("stage", "epochs", "peak lr", "encoder"):
        t.add_column(c)
    for s in stages:
        t.add_row(s.name, str(s.epochs), f"{s.lr:g}", "frozen" if s.frozen else "trainable")
    Console().print(t)


class Fmt(str, Enum):
    nifti = "nifti"
    png = "png"


class Frames(str, Enum):
    labelled = "labelled"
    all = "all"
    edes = "edes"


@baseline_app.command("predict")
def predict_cmd(
    checkpoint: Path = typer.Argument(..., help="model.safetensors written by `cardbench baseline train`."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset folder (standard layout)."),
    out: Path = typer.Option(..., "--out", "-o", help="Submission folder to write."),
    split: str = typer.Option("test", "--split", help="Split of subjects.csv ('all' for every subject)."),
    fmt: Fmt = typer.Option(Fmt.nifti, "--format", help="nifti (volumes, like the reference) or png (one file per 2D "
                            "image, named as in the seed: subject, slice and frame, e.g. "
                            "s01_slice003_frame020-mask.png)."),
    frames: Frames = typer.Option(Frames.labelled, "--frames", help="labelled (frames with a reference label), "
                                  "all, or edes."),
    name: Optional[str] = typer.Option(None, "--name", help="Submission name (default: the run name)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
) -> None:
    """Segment a dataset split with a checkpoint and write a submission `cardbench score` accepts unchanged."""
    _require_torch()
    from cardbench.baselines.data import DatasetError
    from cardbench.baselines.predict import predict_dataset
    from cardbench.baselines.train import TrainError
    from cardbench.baselines.weights import WeightsError

    try:
        res = predict_dataset(checkpoint, dataset, out, split=None if split == "all" else split, fmt=fmt.value,
                              frames=frames.value, name=name, device=device, progress=True)
    except (DatasetError, ValueError, FileExistsError) as e:
        _fail(str(e), 2)
    except (WeightsError, TrainError) as e:
        _fail(str(e), 1)
    Console().print(f"{res.n_volumes} volumes ({res.n_slices} slices) predicted; {len(res.files)} files and "
                    f"submission.yaml written to [bold]{escape(str(res.out))}[/bold]\nscore them with  cardbench score {res.out} "
                    f"--reference {dataset}" + (f" --split {split}" if split != "all" else ""))


@baseline_app.command("configs")
def configs_cmd() -> None:
    """List the shipped training configs."""
    from cardbench.baselines.config import shipped_configs

    for k, v in shipped_configs().items():
        typer.echo(f"{k:16s} {v}")


@baseline_app.command("import-fastai")
def import_fastai_cmd(
    state_dict: Path = typer.Argument(..., help="state dict of the seed's fastai U-Net (learn.model.state_dict() "
                                      "saved with torch.save), read with weights_only=True."),
    out: Path = typer.Option(..., "--out", "-o", help="Encoder weights to write (.safetensors)."),
    encoder: str = typer.Option("resnet34", "--encoder", help="Encoder of that U-Net."),
) -> None:
    """Extract the ResNet encoder of a fastai v1 U-Net (e.g. the seed's Kaggle base model) for --encoder-weights.

    Only the encoder converts: fastai's DynamicUnet decoder has no counterpart in smp's Unet. The
    .pkl export itself is never unpickled (see docs/baselines.md).
    """
    _require_torch()
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    from cardbench.baselines.weights import WeightsError, encoder_state_from, read_state_dict

    try:
        sd = read_state_dict(state_dict)
        enc = smp.Unet(encoder_name=encoder, encoder_weights=None, classes=3).encoder
        mapped, fmt = encoder_state_from(sd, set(enc.state_dict()))
        enc.load_state_dict(mapped, strict=True)
    except (WeightsError, RuntimeError) as e:
        _fail(str(e), 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in mapped.items()}, str(out),
              metadata={"source": str(state_dict.name), "detected_format": fmt, "encoder": encoder})
    Console().print(f"{len(mapped)} encoder tensors ({fmt}) written to [bold]{escape(str(out))}[/bold]; use them with "
                    f"`cardbench baseline train --init imagenet --encoder-weights {out}`")


def _n_training_images(cfg, sub, n_images, con) -> tuple[int | None, bool]:
    """Number of training images for the schedule: ``--n-images``, else the subset's, else the dataset's
    labelled training images (counted without torch). Returns ``(n or None, ok)``; ``ok`` is False after
    a printed one-line reason (the dataset cannot be indexed)."""
    from cardbench.baselines.subsets import SubsetError

    n = n_images if n_images is not None else (len(sub.keys) if sub is not None and sub.keys is not None else None)
    if n is None and cfg.dataset:
        from cardbench.baselines.data import DatasetError, index_dataset

        try:
            n = index_dataset(cfg.dataset, [cfg.train_split], subset=sub, classes=tuple(cfg.classes)).n_images()
        except (DatasetError, SubsetError, ValueError) as e:
            con.print(f"schedule: {cfg.dataset}: {e}", highlight=False)
            return None, False
    return n, True
