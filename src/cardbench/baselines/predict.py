"""Prediction: a checkpoint applied to a dataset, written as a cardbench submission.

For each selected image volume ``images/<s>/<s>_frame<FF>.nii.gz`` the model segments every slice
(preprocessed as in training, :mod:`cardbench.baselines.data`); the logits inside the unpadded part
of the canvas are resized back to the slice's ``(x, y)`` shape (bilinear) and the arg-max class is
written in cardbench values (0 bg, 1 LV, 2 MY, 3 RV) as uint8.

Output (a submission folder ``cardbench score`` accepts unchanged):

* NIfTI (default): ``<out>/<s>/<s>_frame<FF>.nii.gz`` on the grid of the reference label file when
  there is one (its affine and header, data type uint8), else of the image;
* PNG (``fmt="png"``): ``<out>/<s>_slice<SSS>_frame<FFF>-mask.png`` per slice (the seed's naming),
  8-bit grey values 0/1/2; PNG row = NIfTI axis y (j), PNG column = NIfTI axis x (i), i.e.
  ``volume[:, :, k].T``;
* ``submission.yaml``: name, method, training data, the resolved config, the checkpoint's sha256.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardbench._util import atomic_dir, sha256_file
from cardbench._version import __version__
from cardbench.labelmaps import CLASS_VALUES


@dataclass
class PredictResult:
    """What :func:`predict_dataset` wrote: the folder, the files, and the number of volumes/slices."""

    out: Path
    files: list[Path]
    n_volumes: int
    n_slices: int
    meta: dict


def channel_to_cardbench(classes) -> np.ndarray:
    """Lookup table output channel -> cardbench value (uint8)."""
    return np.array([0] + [CLASS_VALUES[c] for c in classes], dtype=np.uint8)


def predict_volume(model, cfg, volume: np.ndarray, device, batch_size: int = 16) -> np.ndarray:
    """Segment an image volume.

    Args:
        model: U-Net in eval mode on ``device``.
        cfg: its :class:`~cardbench.baselines.config.TrainConfig` (image_size, classes).
        volume: float array ``(x, y, slice)``.
        device: torch device.
        batch_size: slices per forward pass.

    Returns:
        uint8 label volume ``(x, y, slice)`` in cardbench values.
    """
    import torch
    import torch.nn.functional as F

    from cardbench.baselines.data import chunks, intensity_window, network_input, preprocess_slice

    window = intensity_window(volume)
    lut = channel_to_cardbench(cfg.classes)
    out = np.zeros(volume.shape, dtype=np.uint8)
    h, w = volume.shape[:2]
    with torch.no_grad():
        for r in chunks(volume.shape[2], batch_size):
            xs = []
            geo = None
            for k in r:
                x, _, geo = preprocess_slice(volume[:, :, k], window, cfg.image_size)
                xs.append(x)
            x = torch.stack(xs).to(device)
            logits = model(network_input(x)).float()
            logits = logits[:, :, geo.top:geo.top + geo.nh, geo.left:geo.left + geo.nw]
            if (geo.nh, geo.nw) != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            pred = logits.argmax(1).cpu().numpy()
            for j, k in enumerate(r):
                out[:, :, k] = lut[pred[j]]
    return out


def _write_nifti(path: Path, arr: np.ndarray, template) -> None:
    from cardbench.datasets.io import write_label_nifti  # the one NIfTI label writer

    write_label_nifti(path, arr, template)


def _write_png(path: Path, arr2d: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr2d.T.astype(np.uint8)), mode="L").save(path)


def submission_meta(cfg, meta: dict, checkpoint: Path, dataset_name: str, split: str | None, name: str | None) -> dict:
    """The ``submission.yaml`` content for predictions of a checkpoint."""
    init = {"random": "random init (plain learning)", "imagenet": "ImageNet encoder (transfer learning)",
            "checkpoint": f"from checkpoint {Path(cfg.init_checkpoint or '').name} (double transfer learning)"}
    subset = f", subset {cfg.subset}" if cfg.subset else (f", subset file {cfg.subset_file}" if cfg.subset_file else "")
    return {
        "name": name or cfg.name,
        "label": f"U-Net {cfg.encoder}, {cfg.init_kind} init, {cfg.image_size} px ({cfg.name})",
        "team": "cardbench baseline",
        "method": (f"U-Net (segmentation-models-pytorch), {cfg.encoder} encoder, {init[cfg.init_kind]}, "
                   f"{cfg.loss} loss, {cfg.image_size} px, cardbench {__version__}"),
        "training_data": f"{cfg.dataset} split {cfg.train_split}{subset}",
        "model": f"smp.Unet({cfg.encoder}), classes background+{'+'.join(cfg.classes)}",
        "checkpoint": {"file": checkpoint.name, "sha256": sha256_file(checkpoint),
                       "epochs_done": meta.get("epochs_done")},
        "config": {k: v for k, v in cfg.to_dict().items() if k != "out"},
        "dataset": dataset_name,
        "split": split or "all",
        "label_map": "cardbench",
        "cardbench_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def predict_dataset(checkpoint: str | Path, dataset: str | Path, out: str | Path, split: str | None = "test",
                    fmt: str = "nifti", frames: str = "labelled", name: str | None = None, device: str = "auto",
                    batch_size: int = 16, progress: bool = True, console=None, overwrite: bool = True) -> PredictResult:
    """Predict every selected volume of a dataset and write a submission folder (atomically).

    Args:
        checkpoint: a ``model.safetensors`` written by training.
        dataset: dataset folder (standard layout) or prepared dataset name.
        out: submission folder to write.
        split: split of ``subjects.csv`` (None: all subjects).
        fmt: ``nifti`` (one volume per frame) or ``png`` (one mask per slice, the seed's naming).
        frames: ``labelled`` (frames with a reference label file; all frames of subjects without
            labels), ``all``, or ``edes`` (ED and ES frames of subjects.csv).
        name: submission name (default: the run's name).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        batch_size: slices per forward pass.
        progress: rich progress bar on stderr.
        overwrite: replace an existing ``out``.

    Returns:
        :class:`PredictResult`.

    Raises:
        WeightsError: unreadable checkpoint. DatasetError: unusable dataset or empty selection.
        ValueError: unknown fmt or frames.
    """
    import nibabel as nib

    from cardbench.baselines._progress import progress_bar
    from cardbench.baselines.data import DatasetError, index_dataset, load_image_volume
    from cardbench.baselines.model import load_model_from_checkpoint
    from cardbench.baselines.train import resolve_device
    from cardbench.datasets.naming import CaseKey, nifti_name, png_name

    if fmt not in ("nifti", "png"):
        raise ValueError(f"format '{fmt}': use nifti or png")
    if frames not in ("labelled", "all", "edes"):
        raise ValueError(f"frames '{frames}': use labelled, all or edes")
    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    model, cfg, meta = load_model_from_checkpoint(checkpoint, dev)
    index = index_dataset(dataset, [split] if split else None, labelled_only=False, classes=tuple(cfg.classes))
    vols = index.volumes
    labelled_subjects = {v.subject for v in vols if v.label_path is not None}
    if frames == "labelled":
        vols = [v for v in vols if v.label_path is not None or v.subject not in labelled_subjects]
    elif frames == "edes":
        vols = [v for v in vols if v.phase in ("ED", "ES")]
    if not vols:
        raise DatasetError(f"{index.root}: no image volumes selected (split {split}, frames {frames})")
    files: list[Path] = []
    n_slices = 0
    out = Path(out)
    sub_meta = submission_meta(cfg, meta, checkpoint, index.name, split, name)
    import yaml

    with atomic_dir(out, overwrite=overwrite) as tmp, progress_bar(progress, console) as bar:
        task = bar.add_task(f"predicting {len(vols)} volumes", total=len(vols))
        for v in vols:
            vol, img = load_image_volume(v.image_path)
            pred = predict_volume(model, cfg, vol, dev, batch_size)
            n_slices += vol.shape[2]
            key = CaseKey(v.subject, v.frame)
            if fmt == "nifti":
                template = nib.load(str(v.label_path)) if v.label_path is not None else img
                rel = Path(v.subject) / (v.label_path.name if v.label_path is not None else nifti_name(key))
                _write_nifti(tmp / rel, pred, template)
                files.append(out / rel)
            else:
                for k in range(pred.shape[2]):
                    rel = Path(png_name(CaseKey(v.subject, v.frame, k), "seed"))
                    _write_png(tmp / rel, pred[:, :, k])
                    files.append(out / rel)
            bar.advance(task)
        (tmp / "submission.yaml").write_text(yaml.safe_dump(sub_meta, sort_keys=False), encoding="utf-8")
    return PredictResult(out, files, len(vols), n_slices, sub_meta)
