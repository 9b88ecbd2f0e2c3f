"""Where pretrained weights come from, and reading weight files safely.

ImageNet encoder weights: segmentation-models-pytorch 0.6 downloads ``model.safetensors`` from the
Hugging Face Hub repository ``smp-hub/<encoder>.imagenet`` at a pinned revision. On a machine
without internet this fails (after about 23 s of retries, or at once with ``HF_HUB_OFFLINE=1``).
:func:`resolve_imagenet` decides *before* any model is built, in well under a second and without
importing torch: a local file given with ``--encoder-weights`` wins; else the Hub cache; else, when
the Hub cannot be reached, :class:`WeightsUnavailable` names the file to fetch and the flag that
takes a local copy.

Weight files are read without pickle: ``.safetensors`` with safetensors; ``.pt``/``.pth``/``.bin``
only with ``torch.load(..., weights_only=True)`` (tensors and plain containers only).

Accepted encoder weight files (keys are normalised by :func:`encoder_state_from`):

* smp-hub ``model.safetensors`` (keys as smp's encoder, e.g. ``conv1.weight``, ``layer1.0.conv1.weight``);
* torchvision's ImageNet checkpoints (e.g. ``resnet34-b627a593.pth``): the classifier ``fc.*`` is dropped;
* a cardbench checkpoint or any state dict with ``encoder.`` prefixes (the encoder part is used);
* the state dict of a fastai v1 ``DynamicUnet`` built on a torchvision ResNet (keys ``layers.0.N...``):
  its encoder ``layers.0`` is ``Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4)``.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

#: torchvision ImageNet checkpoints that carry the same ResNet/VGG weights smp's encoders use.
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}


#: smp 0.6.0's ImageNet weight repositories (``segmentation_models_pytorch.encoders.encoders[name]
#: ["pretrained_settings"]["imagenet"]``) for the encoders cardbench ships configs or benchmarks for, so
#: the offline check needs no torch import; a test checks them against the installed smp.
SMP_HUB = {
    "resnet18": ("smp-hub/resnet18.imagenet", "3f2325ff978283d47aa6a1d6878ca20565622683"),
    "resnet34": ("smp-hub/resnet34.imagenet", "7a57b34f723329ff020b3f8bc41771163c519d0c"),
    "resnet50": ("smp-hub/resnet50.imagenet", "00cb74e366966d59cd9a35af57e618af9f88efe9"),
    "vgg16_bn": ("smp-hub/vgg16_bn.imagenet", "2c186d02fb519e93219a99a1c2af6295aef0bf0d"),
    "mobilenet_v2": ("smp-hub/mobilenet_v2.imagenet", "e67aa804e17f7b404b629127eabbd224c4e0690b"),
    "efficientnet-b0": ("smp-hub/efficientnet-b0.imagenet", "1bbe7ecc1d5ea1d2058de1a2db063b8701aff314"),
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are needed but cannot be obtained (message names the file and the flag)."""


class WeightsError(ValueError):
    """A weight file cannot be read or does not fit the model (message names the file)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where encoder weights will come from: ``local`` (a file), ``hub-cache`` or ``hub-download``."""

    kind: str
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None


def hub_source(encoder: str) -> tuple[str, str]:
    """(repo_id, revision) smp downloads ImageNet weights for ``encoder`` from.

    Raises:
        WeightsUnavailable: smp knows no ImageNet weights for that encoder.
    """
    if encoder in SMP_HUB:
        return SMP_HUB[encoder]
    from segmentation_models_pytorch.encoders import encoders

    if encoder not in encoders:
        raise WeightsUnavailable(f"encoder '{encoder}' is not a segmentation-models-pytorch encoder")
    s = encoders[encoder]["pretrained_settings"].get("imagenet")
    if not s:
        raise WeightsUnavailable(f"segmentation-models-pytorch has no ImageNet weights for encoder '{encoder}'")
    return s["repo_id"], s["revision"]


def _hub_reachable(timeout: float = 2.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    u = urlparse(endpoint)
    host = u.hostname or "huggingface.co"
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def missing_message(encoder: str, repo_id: str | None, revision: str | None) -> str:
    """The one-paragraph error for missing ImageNet weights."""
    hub = (f"model.safetensors of https://huggingface.co/{repo_id} (revision {revision}), e.g. "
           f"`huggingface-cli download {repo_id} model.safetensors --revision {revision}`") if repo_id else ""
    tv = TORCHVISION_URLS.get(encoder)
    alt = f" or torchvision's {tv.rsplit('/', 1)[-1]} ({tv})" if tv else ""
    return (f"ImageNet weights for encoder '{encoder}' are not available offline: cardbench needs {hub}{alt}. "
            "Download it on a machine with internet and pass the file with --encoder-weights PATH "
            "(or use --init random, or --init checkpoint:PATH).")


def resolve_imagenet(encoder: str, encoder_weights: str | None = None, check_network: bool = True) -> WeightsSource:
    """Find ImageNet encoder weights without downloading anything (no torch import).

    Args:
        encoder: smp encoder name.
        encoder_weights: a local weight file (takes precedence).
        check_network: when not cached, test whether the Hub is reachable (2 s timeout).

    Returns:
        :class:`WeightsSource`.

    Raises:
        WeightsUnavailable: the local file does not exist, or the weights are neither cached nor
            downloadable (HF_HUB_OFFLINE set, or the Hub unreachable).
    """
    if encoder_weights:
        p = Path(encoder_weights).expanduser()
        if not p.is_file():
            raise WeightsUnavailable(f"{p}: encoder weights file not found (--encoder-weights); give the path of "
                                     "a downloaded model.safetensors or torchvision .pth file")
        return WeightsSource("local", str(p))
    repo_id, revision = hub_source(encoder)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
        if isinstance(cached, str) and Path(cached).is_file():
            return WeightsSource("hub-cache", cached, repo_id, revision)
    except Exception:  # noqa: BLE001  (no cache, old huggingface_hub: fall through)
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline or (check_network and not _hub_reachable()):
        raise WeightsUnavailable(missing_message(encoder, repo_id, revision))
    return WeightsSource("hub-download", None, repo_id, revision)


# ---------------------------------------------------------------- reading state dicts
def read_state_dict(path: str | Path) -> dict:
    """Tensors of a weight file, without unpickling code.

    ``.safetensors`` is read with safetensors; anything else with ``torch.load(weights_only=True)``
    (a fastai ``.pkl`` export holds pickled fastai objects and is refused: see docs/baselines.md).
    A top-level ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        WeightsError: unreadable file, or not a mapping of tensors.
    """
    import torch

    p = Path(path)
    try:
        if p.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(str(p), device="cpu")
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{p}: cannot read weights safely ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
                           "cardbench reads .safetensors, or .pt/.pth state dicts with torch.load(weights_only=True); "
                           "pickled objects (e.g. a fastai .pkl export) are refused: save model.state_dict() "
                           "instead (README, baselines section)") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p}: not a state dict (a mapping of parameter names to tensors)")
    return dict(sd)


_FASTAI_BODY = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_FASTAI_KEY = re.compile(r"^(?:module\.)?layers\.0\.(\d+)\.(.+)$")


def fastai_unet_encoder(state: dict) -> dict:
    """Encoder weights of a fastai v1 ``DynamicUnet`` (ResNet body) in smp/torchvision key names.

    fastai's ``create_body(resnet34, cut=-2)`` is ``Sequential(conv1, bn1, relu, maxpool, layer1,
    layer2, layer3, layer4)``, stored as ``layers.0.<i>.`` in the U-Net's state dict; indices 0, 1,
    4-7 map to ``conv1``, ``bn1``, ``layer1``-``layer4``. The decoder is not mapped: fastai's
    DynamicUnet decoder (PixelShuffle/ICNR up-sampling, middle conv, final residual block) has no
    counterpart in smp's Unet.

    Raises:
        WeightsError: no ``layers.0.`` keys.
    """
    out = {}
    for k, v in state.items():
        m = _FASTAI_KEY.match(k)
        if m and m.group(1) in _FASTAI_BODY:
            out[f"{_FASTAI_BODY[m.group(1)]}.{m.group(2)}"] = v
    if not out:
        raise WeightsError("not a fastai DynamicUnet state dict: no 'layers.0.<i>.' encoder keys found")
    return out


def encoder_state_from(state: dict, expected_keys: set[str]) -> tuple[dict, str]:
    """Normalise a state dict to the encoder's keys; returns (state, detected format).

    Formats: ``smp-encoder`` (keys already match), ``prefixed`` (``encoder.`` prefix: a whole U-Net),
    ``torchvision`` (extra ``fc.*`` classifier dropped), ``fastai-dynamicunet``.

    Raises:
        WeightsError: the keys match none of these (names a few missing and unexpected keys).
    """
    keys = set(state)
    if keys == expected_keys:
        return state, "smp-encoder"
    if any(k.startswith("encoder.") for k in keys):
        sub = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        if set(sub) == expected_keys:
            return sub, "prefixed"
    if any(_FASTAI_KEY.match(k) for k in keys):
        sub = fastai_unet_encoder(state)
        if set(sub) == expected_keys:
            return sub, "fastai-dynamicunet"
    extra = keys - expected_keys
    if extra and all(k.split(".")[0] in ("fc", "classifier", "head") for k in extra) and expected_keys <= keys:
        return {k: state[k] for k in expected_keys}, "torchvision"
    missing = sorted(expected_keys - keys)[:3]
    unexpected = sorted(keys - expected_keys)[:3]
    raise WeightsError(f"the weights do not fit the encoder: missing keys {missing}..., unexpected keys "
                       f"{unexpected}...; use a file made for the same encoder (e.g. torchvision resnet34 for "
                       "encoder resnet34)")
