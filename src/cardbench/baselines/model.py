"""The U-Net (segmentation-models-pytorch), its initialisation, freezing, and checkpoints.

Model: ``segmentation_models_pytorch.Unet(encoder, in_channels=3, classes=1 + len(classes),
decoder_channels=...)``; input ``(B, 3, S, S)`` ImageNet-normalised, output logits ``(B, C, S, S)``.
Note: smp's U-Net decoder differs from fastai v1's ``DynamicUnet`` the seed used (up-sampling by
interpolation + convs instead of PixelShuffle/ICNR, no extra middle block); encoders match.

Checkpoints are ``.safetensors`` files (no pickle) whose metadata holds the resolved training
configuration (``cardbench_config``, JSON), the format tag ``cardbench-unet-1``, the cardbench version,
and the training progress (epochs done).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from cardbench._version import __version__
from cardbench.baselines.config import TrainConfig, config_from_dict
from cardbench.baselines.weights import (
    WeightsError, encoder_state_from, read_state_dict, resolve_imagenet,
)

FORMAT = "cardbench-unet-1"


def build_model(cfg: TrainConfig, pretrained: bool = True) -> nn.Module:
    """Build the U-Net and initialise it per ``cfg.init``.

    Args:
        cfg: the configuration (encoder, decoder_channels, classes, init, encoder_weights).
        pretrained: False builds the bare architecture (weights are loaded afterwards, e.g. for
            prediction from a checkpoint).

    Raises:
        WeightsUnavailable: ImageNet weights requested but not available (see
            :func:`cardbench.baselines.weights.resolve_imagenet`).
        WeightsError: a weight file does not fit.
    """
    import segmentation_models_pytorch as smp

    source = None
    if pretrained and cfg.init_kind == "imagenet":
        source = resolve_imagenet(cfg.encoder, cfg.encoder_weights)
    model = smp.Unet(encoder_name=cfg.encoder, encoder_weights=None, in_channels=3,
                     classes=1 + len(cfg.classes), decoder_channels=tuple(cfg.decoder_channels),
                     encoder_depth=len(cfg.decoder_channels))
    if not pretrained or cfg.init_kind == "random":
        return model
    if cfg.init_kind == "imagenet":
        if source.kind == "hub-download":
            from huggingface_hub import hf_hub_download

            hf_hub_download(source.repo_id, filename="config.json", revision=source.revision)
            path = hf_hub_download(source.repo_id, filename="model.safetensors", revision=source.revision)
        else:
            path = source.path
        load_encoder_weights(model, path)
        return model
    # checkpoint:PATH -> every weight from a cardbench checkpoint (double transfer learning)
    state, meta = read_checkpoint(cfg.init_checkpoint)
    src_cfg = meta.get("config") or {}
    for key in ("encoder", "decoder_channels"):
        if key in src_cfg and src_cfg[key] != getattr(cfg, key):
            raise WeightsError(f"{cfg.init_checkpoint}: checkpoint has {key}={src_cfg[key]} but this run uses "
                               f"{getattr(cfg, key)}; set {key} to match the checkpoint")
    if src_cfg.get("classes") and list(src_cfg["classes"]) != list(cfg.classes):
        raise WeightsError(f"{cfg.init_checkpoint}: checkpoint predicts classes {src_cfg['classes']} but this run "
                           f"uses {cfg.classes}; set classes to match")
    _load_strict(model, state, cfg.init_checkpoint)
    return model


def _load_strict(model: nn.Module, state: dict, where) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{where}: weights do not fit the model (missing {sorted(missing)[:3]}, unexpected "
                           f"{sorted(unexpected)[:3]}); was it trained with another encoder or classes?")


def load_encoder_weights(model: nn.Module, path: str | Path) -> str:
    """Load encoder weights from a file into ``model.encoder``; returns the detected format.

    Raises:
        WeightsError: unreadable file or keys/shapes that do not fit the encoder.
    """
    state = read_state_dict(path)
    expected = set(model.encoder.state_dict())
    enc_state, fmt = encoder_state_from(state, expected)
    try:
        model.encoder.load_state_dict(enc_state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: {fmt} weights do not fit encoder ({str(e).splitlines()[0]})") from e
    return fmt


def set_encoder_frozen(model: nn.Module, frozen: bool, train_bn: bool = True) -> None:
    """Freeze or unfreeze the encoder's parameters.

    With ``train_bn`` (fastai's default ``train_bn=True``) BatchNorm weights and biases stay trainable
    in a frozen encoder.
    """
    for m in model.encoder.modules():
        is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False):
            p.requires_grad_(not frozen or (train_bn and is_bn))
    for name, p in model.named_parameters():
        if not name.startswith("encoder."):
            p.requires_grad_(True)


# ----------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: nn.Module, cfg: TrainConfig, extra: dict | None = None) -> Path:
    """Write the model's weights as safetensors (atomically) with the config in its metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "cardbench_version": __version__, "cardbench_config": cfg.to_json()}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state dict, metadata) of a cardbench checkpoint; metadata ``config`` is the parsed config dict.

    Raises:
        WeightsError: file missing, not safetensors, or not a cardbench checkpoint.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: checkpoint not found; give the model.safetensors written by `cardbench baseline train`")
    if not p.name.endswith(".safetensors"):
        raise WeightsError(f"{p}: checkpoints are .safetensors files (no pickle); give model.safetensors")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{p}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{p}: not a cardbench checkpoint (metadata format {meta.get('format')!r}); encoder-only "
                           "weights go to --encoder-weights")
    meta["config"] = json.loads(meta.get("cardbench_config", "{}"))
    return state, meta


def load_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a checkpoint for inference: (model in eval mode, config, metadata)."""
    state, meta = read_checkpoint(path)
    cfg = config_from_dict(meta["config"])
    model = build_model(cfg, pretrained=False)
    _load_strict(model, state, path)
    return model.to(device).eval(), cfg, meta
