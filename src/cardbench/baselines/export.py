"""Export a cardbench baseline checkpoint to ONNX, with the model.yaml that runs it like
``cardbench baseline predict`` (``cardbench baseline export-onnx``).

The ONNX graph is the U-Net alone: input ``image`` ``(N, 3, S, S)`` float32 (ImageNet-normalised),
output ``logits`` ``(N, 1 + len(classes), S, S)``, dynamic batch axis, exported with
``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter). The preprocessing the
baseline does in Python (0.5/99.5 percentile clip over the volume, resize the longest side to S
bilinearly and zero-pad, ImageNet normalisation) and the postprocessing (un-pad, bilinear resize of the
logits, arg-max) are declared in model.yaml and done by :mod:`cardbench.evaluate`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from cardbench._util import atomic_write_text


def baseline_model_card(cfg, name: str | None = None) -> dict:
    """The model.yaml content for a baseline of config ``cfg`` (see :mod:`cardbench.evaluate.modelcard`)."""
    from cardbench.baselines.data import IMAGENET_MEAN, IMAGENET_STD, PERCENTILES

    return {
        "cardbench_model_card": 1,
        "name": name or cfg.name,
        "format": "onnx",
        "method": f"U-Net (segmentation-models-pytorch), {cfg.encoder} encoder, {cfg.image_size} px, exported to ONNX",
        "input": {"channels": 3, "size": [cfg.image_size, cfg.image_size], "axis_order": "NCHW",
                  "spatial_order": "xy", "fit": "resize-pad", "interpolation": "bilinear",
                  "intensity": {"method": "percentile", "p_low": PERCENTILES[0], "p_high": PERCENTILES[1],
                                "over": "stack"},
                  "channel_mean": list(IMAGENET_MEAN), "channel_std": list(IMAGENET_STD)},
        "output": {"kind": "logits", "labels": ["background", *cfg.classes]},
        "postprocessing": {"argmax": True, "largest_component": False},
    }


def export_onnx(checkpoint: str | Path, out: str | Path, card_out: str | Path | None = None,
                opset: int = 17) -> tuple[Path, Path]:
    """Write ``out`` (ONNX) and its model.yaml (default: ``model.yaml`` next to ``out``), atomically.

    Raises:
        WeightsError: unreadable checkpoint.
    """
    import torch
    import yaml

    from cardbench.baselines.model import load_model_from_checkpoint

    out = Path(out)
    card_out = Path(card_out) if card_out is not None else out.with_name("model.yaml")
    model, cfg, _ = load_model_from_checkpoint(checkpoint, "cpu")
    x = torch.zeros((1, 3, cfg.image_size, cfg.image_size), dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=opset, dynamo=False)
    tmp.replace(out)
    atomic_write_text(card_out, yaml.safe_dump(baseline_model_card(cfg), sort_keys=False))
    return out, card_out
