"""Data-parallel training with ``torch.distributed`` (DDP): process group set-up, BatchNorm
synchronised across processes on CPU, and the shard of a global batch each process trains on.

Launch with ``torchrun --nproc-per-node N -m cardbench.baselines.train ...`` (or
``cardbench baseline train --nproc N``, which runs torchrun). torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup` reads them. Backend:
``nccl`` when training on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on CPU.

The seed's schedule is kept: ``batch_size`` of the config is the **global** batch; each of the N
processes trains on ``batch_size / N`` images of it (global batch = per-process batch x N), so the
number of steps per epoch, the one-cycle schedule and the learning rates do not change with N.
Every process draws the same shuffling and augmentation (the epoch generator of
:mod:`cardbench.baselines.train`) for the whole global batch and keeps its own contiguous slice;
gradients are averaged by DDP, and BatchNorm statistics are computed over the global batch
(``torch.nn.SyncBatchNorm`` on CUDA; :class:`CpuSyncBatchNorm` on CPU, where torch's
SyncBatchNorm is not supported). With a loss that is a mean over pixels (``ce``, ``focal``) one
step of N processes therefore equals one step of one process on the global batch (up to
floating-point rounding); ``dice`` is computed per process shard and differs.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class DistInfo:
    """rank, world size, local rank and backend of this process (world size 1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """The process that writes checkpoints and logs (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device_spec: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1).

    Args:
        device_spec: ``auto``, ``cpu`` or ``cuda[:N]`` (CUDA processes use ``cuda:LOCAL_RANK``).

    Returns:
        :class:`DistInfo` (world size 1 without torchrun: nothing is initialised).
    """
    ws = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if ws <= 1:
        return DistInfo()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_spec != "cpu"
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(rank, ws, local, backend)


def teardown(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        dist.barrier()


def mean_over_processes(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a scalar tensor over all processes (no gradient); itself when not distributed."""
    if not info.active:
        return value
    import torch.distributed as dist

    v = value.detach().clone().reshape(1).to(torch.float64 if value.device.type == "cpu" else value.dtype)
    dist.all_reduce(v)
    return (v / info.world_size).reshape(())


def shard(batch: torch.Tensor, info: DistInfo) -> slice:
    """The contiguous rows of a global batch of ``len(batch)`` images this process trains on."""
    n = len(batch)
    if not info.active:
        return slice(0, n)
    bounds = torch.linspace(0, n, info.world_size + 1).round().long().tolist()
    return slice(bounds[info.rank], bounds[info.rank + 1])


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are the mean and (biased) variance over the
    batches of all processes, by differentiable all-reduces of the per-channel sums
    (``torch.distributed.nn.functional.all_reduce``), so gradients are those of the global batch.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; running statistics use the
    unbiased variance as torch does. In eval mode, or outside a process group, it is plain
    BatchNorm2d. Input ``(B, C, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xd = x.double()
        local = torch.cat([xd.sum(dim=(0, 2, 3)), (xd * xd).sum(dim=(0, 2, 3)),
                           torch.full((1,), float(x.numel() // c), dtype=torch.float64)])
        with warnings.catch_warnings():  # deprecated in favour of a private API; still the autograd one
            warnings.simplefilter("ignore", FutureWarning)
            tot = all_reduce(local)
        count = tot[-1]
        mean = tot[:c] / count
        var = (tot[c:2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (xd - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def has_unused_parameters(model: nn.Module, image_size: int, device: torch.device | str = "cpu") -> bool:
    """True when a forward pass leaves a trainable parameter without a gradient.

    smp builds every stage of an encoder and calls only the first ``encoder_depth`` of them, so a
    U-Net with fewer than 5 decoder channels has parameters no loss depends on; DDP then needs
    ``find_unused_parameters=True`` (without it the second step stops with "Expected to have
    finished reduction in the prior iteration"). One forward and backward pass of a zero image
    ``(1, 3, image_size, image_size)`` in eval mode (no batch statistics change), gradients
    cleared afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, image_size, image_size, device=device)
        model(x).float().sum().backward()
        return any(p.requires_grad and p.grad is None for p in model.parameters())
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)


def convert_batchnorm(model: nn.Module, info: DistInfo, cuda: bool) -> nn.Module:
    """BatchNorm layers synchronised over the processes (SyncBatchNorm on CUDA, CpuSyncBatchNorm
    on CPU); the model itself when not distributed."""
    if not info.active:
        return model
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
