"""DDP training on CPU: 2 gloo processes under torchrun take the same steps as 1 process with the
same global batch (losses within 1e-5), only rank 0 writes, and a DDP run resumes. The launches use
torchrun's own code in the test process (see ``_torchrun``).

Real data: 12 images of the Sunnybrook sample (2 subjects), 64 px, the ``cpu-smoke`` config
(resnet18 U-Net, random init, cross-entropy, augmentation on, global batch 4 = 2 processes x 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cardbench.baselines.config import load_config
from helpers import LazyModule, has_modules

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not has_modules("torch", "segmentation_models_pytorch"),
                                 reason="needs torch and segmentation-models-pytorch (the [baselines] extra)")]
torch = LazyModule("torch")  # imported when a test first uses it, not when the file is collected


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_prepared):
    return sunnybrook_prepared  # prepared once per test run (conftest); read only


def _subset(sb: Path, path: Path) -> Path:
    rows = ["subject,frame,slice"]
    for s in ("SCD0000101", "SCD0000201"):
        for f in sorted((sb / "labels" / s).glob("*.nii.gz")):
            frame = int(f.name.split("_frame")[1][:2])
            rows += [f"{s},{frame},{k}" for k in range(2, 5)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _start_forkserver() -> None:
    """Start this process's forkserver with torch, smp and the training module imported (no-op when
    it runs): the DDP workers are forked from it."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.set_forkserver_preload(["torch", "segmentation_models_pytorch", "cardbench.baselines.train"])
    forkserver.ensure_running()


def _torchrun(args: list[str]) -> None:
    """``torchrun --standalone --nproc-per-node 2 -m cardbench.baselines.train ARGS``, launched in this
    process through torchrun's own code: its argument parser, its ``--standalone`` settings
    (``torch.distributed.run.run``) and ``config_from_args``, then ``elastic_launch``, the launcher
    torchrun calls. One difference: the two workers are forked from a forkserver that has imported
    torch, smp and the training module once, instead of two fresh interpreters that each import them
    (about 7 s of CPU each, every launch), so they run ``cardbench.baselines.train.main(ARGS)``, what
    ``-m cardbench.baselines.train`` runs. The command line the CLI's ``--nproc`` builds is tested in
    ``test_cli_nproc_launches_torchrun_with_the_same_config``.

    Raises:
        torch.distributed.elastic.multiprocessing.errors.ChildFailedError: a worker failed.
    """
    import uuid

    import torch.distributed.run as torchrun
    from torch.distributed.launcher.api import elastic_launch

    from cardbench.baselines import train as train_module

    ns = torchrun.get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", "2", "-m", "cardbench.baselines.train", *args])
    ns.rdzv_backend, ns.rdzv_endpoint, ns.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())  # as run() does
    ns.master_port = 29500 if ns.master_port is None else ns.master_port
    config, _cmd, cmd_args = torchrun.config_from_args(ns)
    assert cmd_args[-len(args):] == args
    config.start_method = "forkserver"
    _start_forkserver()
    result = elastic_launch(config, entrypoint=train_module.main)(args)
    assert result == {0: 0, 1: 0}  # exit code 0 (main's return value) on both ranks


def test_two_gloo_processes_equal_one_process(sunnybrook, tmp_path):
    from cardbench.baselines.model import read_checkpoint
    from cardbench.baselines.train import train

    _start_forkserver()  # it imports torch while the 1-process run trains
    sub = _subset(sunnybrook, tmp_path / "subset.csv")
    # encoder depth 5 (every parameter used): the losses agree within 1e-5 at this depth; at depth 3
    # (cpu-smoke's default) the synchronised BatchNorm's float64 statistics already move the first
    # loss by 1e-5, before any step
    sets = {"dataset": str(sunnybrook), "subset_file": str(sub), "image_size": 64, "batch_size": 4,
            "threads": 1, "valid_split": "test", "decoder_channels": [64, 32, 16, 16, 8]}
    one = train(load_config("cpu-smoke", {**sets, "out": str(tmp_path / "one")}), progress=False)
    assert len(one.step_losses) == 6  # 12 images / global batch 4 = 3 steps, 2 epochs

    ddp_out = tmp_path / "ddp"
    argv = ["--config", "cpu-smoke", *sum((["--set", f"{k}={v}"] for k, v in {**sets, "out": ddp_out}.items()), [])]
    _torchrun([*argv, "--stop-after", "1", "--step-losses", str(tmp_path / "steps1.json")])
    first = json.loads((tmp_path / "steps1.json").read_text())
    assert len(first) == 3
    assert first == pytest.approx(one.step_losses[:3], abs=1e-5, rel=0)
    log = pd.read_csv(ddp_out / "train_log.csv")
    assert len(log) == 1  # one writer: one row per epoch
    # resume the DDP run in its second epoch (second stage): the same steps as the 1-process run
    _torchrun([*argv, "--resume", "--step-losses", str(tmp_path / "steps2.json")])
    second = json.loads((tmp_path / "steps2.json").read_text())
    assert second == pytest.approx(one.step_losses[3:], abs=1e-5, rel=0)
    log = pd.read_csv(ddp_out / "train_log.csv")
    assert log["epoch"].tolist() == [0, 1]
    assert log["train_loss"].tolist() == pytest.approx(one.log["train_loss"].tolist(), abs=1e-5, rel=0)
    wa, _ = read_checkpoint(one.checkpoint)
    wb, _ = read_checkpoint(ddp_out / "model.safetensors")
    assert set(wa) == set(wb)  # same state-dict keys (BatchNorm synchronised, saved as plain BatchNorm)
    # weights: Adam turns rounding-level gradient differences of near-zero gradients into small
    # steps, so compare the whole weight vector (relative L2), not the largest element
    fl = [k for k in wa if wa[k].is_floating_point()]
    diff = sum(float(((wa[k].double() - wb[k].double()) ** 2).sum()) for k in fl) ** 0.5
    norm = sum(float((wa[k].double() ** 2).sum()) for k in fl) ** 0.5
    assert diff / norm < 1e-3


def test_batch_not_divisible_is_refused(sunnybrook, tmp_path, monkeypatch):
    from cardbench.baselines import distributed as ddp
    from cardbench.baselines.train import TrainError, train

    monkeypatch.setattr(ddp, "setup", lambda spec: ddp.DistInfo(rank=0, world_size=2, local_rank=0, backend="gloo"))
    monkeypatch.setattr(ddp, "teardown", lambda info: None)
    cfg = load_config("cpu-smoke", {"dataset": str(sunnybrook), "batch_size": 3, "out": str(tmp_path / "x")})
    with pytest.raises(TrainError, match="not divisible by 2 processes"):
        train(cfg, progress=False)
    assert not (tmp_path / "x").exists()  # nothing written


def test_shard_covers_the_global_batch_once():
    from cardbench.baselines.distributed import DistInfo, shard

    x = torch.arange(8)
    parts = [x[shard(x, DistInfo(r, 2, r, "gloo"))].tolist() for r in range(2)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7]]
    parts = [x[:5][shard(x[:5], DistInfo(r, 2, r, "gloo"))].tolist() for r in range(2)]
    assert sum(parts, []) == [0, 1, 2, 3, 4]


def test_cli_nproc_launches_torchrun_with_the_same_config(sunnybrook, tmp_path, monkeypatch):
    import subprocess as sp

    from typer.testing import CliRunner

    from cardbench.baselines.config import parse_override
    from cardbench.cli import app

    calls = []
    monkeypatch.setattr(sp, "run", lambda cmd, **k: calls.append(cmd) or sp.CompletedProcess(cmd, 0))
    args = ["baseline", "train", "--config", "cpu-smoke", "--dataset", str(sunnybrook), "--batch-size", "4",
            "--set", "augment.max_rotate=12", "--out", str(tmp_path / "run"), "--nproc", "2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (cmd,) = calls
    i = cmd.index("torch.distributed.run")
    assert cmd[i + 1:i + 4] == ["--standalone", "--nproc-per-node", "2"]
    assert cmd[cmd.index("-m", i) + 1] == "cardbench.baselines.train"
    sets = [cmd[j + 1] for j, c in enumerate(cmd) if c == "--set"]
    got = load_config("cpu-smoke", dict(parse_override(t) for t in sets))
    want = load_config("cpu-smoke", {"dataset": str(sunnybrook), "batch_size": 4, "augment.max_rotate": 12,
                                     "out": str(tmp_path / "run")})
    assert got.to_dict() == want.to_dict()
    r = CliRunner().invoke(app, [*args[:-1], "3"])  # 4 images per step cannot be split over 3 processes
    assert r.exit_code == 2 and "not divisible by --nproc 3" in r.output


def test_unused_encoder_stages_are_detected_for_ddp():
    """smp builds all 5 ResNet stages and calls only ``encoder_depth`` of them: with 3 decoder channels
    layer3 and layer4 get no gradient, and DDP must be told (the 2-process test above trains such a model)."""
    from cardbench.baselines.distributed import has_unused_parameters
    from cardbench.baselines.model import build_model

    shallow = build_model(load_config("cpu-smoke", {"decoder_channels": [32, 16, 8]}))
    deep = build_model(load_config("cpu-smoke", {"decoder_channels": [64, 32, 16, 16, 8]}))
    shallow.train()
    assert has_unused_parameters(shallow, 64) is True
    assert has_unused_parameters(deep, 64) is False
    assert shallow.training and all(p.grad is None for p in shallow.parameters())  # state left as found
    for p in shallow.encoder.layer3.parameters():
        p.requires_grad_(False)
    for p in shallow.encoder.layer4.parameters():
        p.requires_grad_(False)
    assert has_unused_parameters(shallow, 64) is False  # frozen parameters are not DDP's concern
