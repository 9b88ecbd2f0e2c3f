"""``evaluate_model``: run a submitted model on a reference's images and score its predictions."""

from __future__ import annotations

import datetime as _dt
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardbench._util import sha256_file
from cardbench._version import __version__
from cardbench.evaluate.modelcard import Limits, ModelCard, ModelCardError
from cardbench.evaluate.runners import ModelRunError, open_runner


class EvaluationError(ValueError):
    """The reference has no images to run the model on, or they cannot be read; one line."""


@dataclass
class EvaluateResult:
    """What :func:`evaluate_model` did: the :class:`ScoreResult`, the prediction folder (when kept),
    the number of volumes and images, the wall time in s, and the runner's provider."""

    result: object
    predictions: Path | None
    n_volumes: int
    n_images: int
    seconds: float
    provider: str


def reference_volumes(reference: str | Path, split: str | None) -> list[tuple[str, Path, Path]]:
    """(subject, image file, label file) of every reference label volume of ``split``.

    The image of ``labels/<s>/<name>`` is ``images/<s>/<name>`` (the standard layout).

    Raises:
        EvaluationError: not a standard-layout folder with NIfTI labels and images, or no volume.
    """
    from cardbench.datasets.reference import ReferenceError, load_reference

    root = Path(reference)
    try:
        ref = load_reference(root)
    except ReferenceError as e:
        raise EvaluationError(str(e)) from None
    if not (root / "images").is_dir():
        raise EvaluationError(f"{root}: no images/ folder; evaluate-model needs a reference in the standard layout "
                              "(images/<subject>/..., labels/<subject>/...)")
    if split is not None and len(ref.subjects) and split not in set(ref.subjects["split"]):
        raise EvaluationError(f"{root}: no subject of split '{split}' (splits: "
                              f"{', '.join(sorted(set(ref.subjects['split'])))})")
    out = []
    for key, files in sorted(ref.files.items(), key=lambda kv: (kv[0].subject, kv[0].frame or 0)):
        if split is not None and ref.split_of(key.subject) != split:
            continue
        for lab in files:
            if not lab.name.endswith((".nii.gz", ".nii")):
                raise EvaluationError(f"{lab}: evaluate-model runs models on NIfTI volumes; this reference has PNG "
                                      "masks")
            img = root / "images" / lab.relative_to(root / "labels")
            if not img.is_file():
                raise EvaluationError(f"{lab}: no image {img.relative_to(root)} for this label; the reference "
                                      "must hold the image of every label volume")
            out.append((key.subject, img, lab))
    if not out:
        raise EvaluationError(f"{root}: no label volume{' in split ' + split if split else ''} to run the model on")
    return out


def _write_nifti(path: Path, arr: np.ndarray, template) -> None:
    from cardbench.datasets.io import write_label_nifti  # the one NIfTI label writer

    write_label_nifti(path, arr, template)


def evaluate_model(model: str | Path, reference: str | Path, card: ModelCard | str | Path | None = None, *,
                   split: str | None = "test", protocol: str = "cardbench-v1", limits: Limits = Limits(),
                   name: str | None = None, predictions_out: str | Path | None = None, device: str = "auto",
                   progress: bool = False, runner=None):
    """Run ``model`` on the reference images of ``split`` and score its predictions with
    :func:`cardbench.benchmark.score`.

    Order: the model card and the model (size, loadable, declared input/output shapes) are validated
    first; then the reference is listed; only then are images read. A model that returns NaN or a
    wrong shape, or runs over a limit, stops the run (:class:`ModelRunError`) and nothing is scored.

    Args:
        model: ``.onnx`` file (with ``card``) or a cardbench ``model.safetensors``.
        reference: reference folder in the standard layout (images/ and labels/).
        card: :class:`ModelCard` or the path of model.yaml (required for ONNX).
        split: reference split to run on (None: every labelled volume).
        protocol: scoring protocol.
        limits: :class:`Limits` (model size, time per image, total time).
        name: submission name (default: the card's name, else the model file's stem).
        predictions_out: keep the prediction folder here (default: a temporary folder, removed).
        device: for checkpoints: ``auto``, ``cpu``, ``cuda``.
        progress: progress bar on stderr.
        runner: an already validated runner (from :func:`open_runner`), e.g. by the intake queue.

    Returns:
        :class:`EvaluateResult`.

    Raises:
        ModelCardError: invalid card or model (before any image is read).
        EvaluationError: unusable reference.
        ModelRunError: the model failed while running.
        ValidationError, SubmissionError: from scoring.
    """
    import nibabel as nib
    import yaml

    from cardbench.benchmark import score

    model = Path(model)
    if card is not None and not isinstance(card, ModelCard):
        from cardbench.evaluate.modelcard import load_model_card

        card = load_model_card(card)
    if runner is None:
        runner = open_runner(model, card, limits, device)
    vols = reference_volumes(reference, split)
    sub_name = name or (card.name if card is not None and card.name else model.stem)
    meta = {"name": sub_name, "label_map": "cardbench",
            "method": (card.extra.get("method") if card is not None else None)
            or f"submitted model {model.name} ({'ONNX, onnxruntime' if card is not None and card.format == 'onnx' else 'cardbench checkpoint'})",
            "model": {"file": model.name, "sha256": sha256_file(model),
                      "format": card.format if card is not None else "cardbench-checkpoint",
                      "provider": runner.provider},
            "notes": f"predictions by cardbench evaluate-model {__version__}",
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if card is not None:
        for k in ("team", "training_data", "url", "label"):
            if card.extra.get(k):
                meta[k] = card.extra[k]
        meta["config"] = {"model_card": card.to_dict()}
    t0 = time.monotonic()
    deadline = t0 + limits.total_seconds
    tmpdir = None
    if predictions_out is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="cardbench-evaluate-")
        pred_root = Path(tmpdir.name) / "predictions"
    else:
        pred_root = Path(predictions_out)
        if pred_root.exists() and any(pred_root.iterdir()):
            raise EvaluationError(f"{pred_root}: exists and is not empty; give a new folder for the predictions")
    from rich.console import Console
    from rich.progress import Progress

    n_images = 0
    try:
        with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
            task = bar.add_task(f"running the model on {len(vols)} volumes", total=len(vols))
            for subject, img_path, lab_path in vols:
                try:
                    img = nib.load(str(img_path))
                    vol = np.asarray(img.dataobj, dtype=np.float32)
                except Exception as e:  # noqa: BLE001
                    raise EvaluationError(f"{img_path}: cannot read the image ({e})") from None
                if vol.ndim == 4 and vol.shape[3] == 1:
                    vol = vol[..., 0]
                if vol.ndim == 2:
                    vol = vol[..., None]
                if vol.ndim != 3:
                    raise EvaluationError(f"{img_path}: expected an (x, y, slice) volume, got shape {vol.shape}")
                try:
                    pred = runner.predict(vol, deadline)
                except ValueError as e:  # e.g. pad with a slice larger than the input
                    raise ModelCardError(f"{card.path if card is not None else model}: {e}") from None
                if card is not None and card.largest_component:
                    from cardbench.evaluate.preprocess import largest_component

                    pred = largest_component(pred, [v for v in np.unique(pred) if v != 0])
                if pred.shape != vol.shape:
                    raise ModelRunError(f"{model}: prediction of shape {pred.shape} for an image of shape {vol.shape}")
                n_images += vol.shape[2]
                _write_nifti(pred_root / lab_path.relative_to(Path(reference) / "labels"), pred, nib.load(str(lab_path)))
                bar.advance(task)
        (pred_root / "submission.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        seconds = time.monotonic() - t0
        result = score(pred_root, reference, protocol=protocol, split=split, progress=progress)
        result.summary.setdefault("submission", {})["model"] = meta["model"]
        result.summary["evaluation"] = {"volumes": len(vols), "images": n_images, "seconds": round(seconds, 3),
                                        "provider": runner.provider,
                                        "limits": {"max_model_bytes": limits.max_model_bytes,
                                                   "seconds_per_image": limits.seconds_per_image,
                                                   "total_seconds": limits.total_seconds}}
        return EvaluateResult(result, None if tmpdir else pred_root, len(vols), n_images, seconds, runner.provider)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
