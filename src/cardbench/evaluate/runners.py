"""Model runners: onnxruntime (no code of the submission runs) and cardbench baseline checkpoints.

A runner is validated when it is built (file size, readable model, declared input and output shapes
against model.yaml), before any image is read; :meth:`predict` then segments one image volume.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from cardbench.evaluate.modelcard import Limits, ModelCard, ModelCardError


class ModelRunError(RuntimeError):
    """The model failed while running (NaN or wrong-shape output, over a time limit); one line."""


def _lut(card: ModelCard) -> np.ndarray:
    from cardbench.labelmaps import CLASS_VALUES

    return np.array([0] + [CLASS_VALUES[c] for c in card.labels[1:]], dtype=np.uint8)


def _check_size(path: Path, limits: Limits) -> None:
    if not path.is_file():
        raise ModelCardError(f"{path}: model file not found; give the .onnx file (or model.safetensors)")
    n = path.stat().st_size
    if n > limits.max_model_bytes:
        raise ModelCardError(f"{path}: model file is {n / 2**20:.1f} MiB, over the limit of "
                             f"{limits.max_model_bytes / 2**20:.0f} MiB (--max-model-mb)")


class OnnxRunner:
    """An ONNX model run with onnxruntime (CUDA provider when available, else CPU).

    Args:
        path: the ``.onnx`` file (read into memory; external data files are not allowed).
        card: its validated :class:`ModelCard` (``format: onnx``).
        limits: :class:`Limits`.

    Raises:
        ModelCardError: onnxruntime missing, file too large or not a readable ONNX model, or its
            declared input/output (one float tensor of rank 4 each) does not fit the card.
    """

    def __init__(self, path: str | Path, card: ModelCard, limits: Limits = Limits()):
        self.path = Path(path)
        self.card = card
        self.limits = limits
        if card.format != "onnx":
            raise ModelCardError(f"{card.path or 'model.yaml'}: format is {card.format!r} but {self.path.name} is "
                                 "run as ONNX; set format: onnx")
        _check_size(self.path, limits)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelCardError("running ONNX models needs onnxruntime: pip install 'cardbench[onnx]'") from None
        self._ort = ort
        data = self.path.read_bytes()
        so = ort.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit():
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        avail = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        try:
            self.session = ort.InferenceSession(data, sess_options=so, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelCardError(f"{self.path}: not a model onnxruntime can load ({first[:300]}); export it with "
                                 "torch.onnx.export or check it with onnx.checker") from None
        self.provider = self.session.get_providers()[0]
        self._check_io()

    def _check_io(self) -> None:
        c = self.card
        where = f"{self.path}"
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1:
            raise ModelCardError(f"{where}: the model has {len(ins)} inputs ({', '.join(i.name for i in ins)}); "
                                 "cardbench feeds one image tensor")
        i = ins[0]
        if i.type != "tensor(float)":
            raise ModelCardError(f"{where}: input '{i.name}' is {i.type}; cardbench feeds tensor(float) (float32)")
        want = self._want_shape(c.channels)
        self._check_shape(where, "input", i.name, i.shape, want)
        if not outs:
            raise ModelCardError(f"{where}: the model has no output")
        o = outs[0]
        if o.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise ModelCardError(f"{where}: output '{o.name}' is {o.type}; expected float scores per class")
        self._check_shape(where, "output", o.name, o.shape, self._want_shape(len(c.labels)))
        self.input_name, self.output_name = i.name, o.name
        self.batch_fixed = i.shape[0] if isinstance(i.shape[0], int) else None

    def _want_shape(self, channels: int) -> list:
        h, w = self.card.size
        return [None, channels, h, w] if self.card.axis_order == "NCHW" else [None, h, w, channels]

    def _check_shape(self, where, role, name, shape, want) -> None:
        card = self.card.path or "model.yaml"
        if shape is None or len(shape) != 4:
            raise ModelCardError(f"{where}: {role} '{name}' has shape {shape}; expected rank 4 "
                                 f"({self.card.axis_order}), as {card} declares")
        for k, (have, exp) in enumerate(zip(shape, want)):
            if isinstance(have, int) and have > 0 and exp is not None and have != exp:
                raise ModelCardError(f"{where}: {role} '{name}' has shape {list(shape)} but {card} declares "
                                     f"{['N' if e is None else e for e in want]} ({self.card.axis_order}); fix "
                                     f"input.channels/size or output.labels in {card}, or re-export the model")
            if k == 0 and isinstance(have, int) and have not in (1,) and have > 0:
                raise ModelCardError(f"{where}: {role} '{name}' has a fixed batch size {have}; export it with "
                                     "batch size 1 or a dynamic batch axis")

    def predict(self, volume: np.ndarray, deadline: float) -> np.ndarray:
        """Segment one ``(x, y, slice)`` volume; uint8 ``(x, y, slice)`` cardbench values.

        Raises:
            ModelRunError: NaN/inf or wrong-shape output, or over the time per image or the total time.
        """
        from cardbench.evaluate.preprocess import prepare_slices, scores_to_labels

        x, g = prepare_slices(volume, self.card)
        n = x.shape[0]
        step = 1 if self.batch_fixed == 1 else min(n, 16)
        outs = []
        for s in range(0, n, step):
            xb = x[s:s + step]
            budget = min(self.limits.seconds_per_image * xb.shape[0], deadline - time.monotonic())
            if budget <= 0:
                raise ModelRunError(f"{self.path}: over the total time limit of {self.limits.total_seconds:g} s "
                                    "(--max-total-seconds); nothing was scored")
            opts = self._ort.RunOptions()
            timer = threading.Timer(budget, lambda o=opts: setattr(o, "terminate", True))
            t0 = time.monotonic()
            timer.start()
            try:
                y = self.session.run([self.output_name], {self.input_name: xb}, run_options=opts)[0]
            except Exception as e:  # noqa: BLE001
                if time.monotonic() - t0 >= budget * 0.99:
                    raise ModelRunError(f"{self.path}: a forward pass of {xb.shape[0]} image(s) ran over "
                                        f"{budget:.1f} s ({self.limits.seconds_per_image:g} s per image, "
                                        "--max-seconds-per-image); nothing was scored") from None
                raise ModelRunError(f"{self.path}: onnxruntime failed on an input of shape {list(xb.shape)} "
                                    f"({str(e).splitlines()[0][:200]}); nothing was scored") from None
            finally:
                timer.cancel()
            outs.append(self._check_output(np.asarray(y), xb.shape[0]))
        return scores_to_labels(np.concatenate(outs), g, self.card, _lut(self.card))

    def _check_output(self, y: np.ndarray, n: int) -> np.ndarray:
        want = [n] + self._want_shape(len(self.card.labels))[1:]
        if list(y.shape) != want:
            raise ModelRunError(f"{self.path}: output has shape {list(y.shape)}, expected {want} "
                                f"({self.card.axis_order}, {len(self.card.labels)} channels as output.labels "
                                "declares); nothing was scored")
        if not np.isfinite(y).all():
            bad = int((~np.isfinite(y)).sum())
            raise ModelRunError(f"{self.path}: output holds {bad} NaN or infinite values; nothing was scored")
        return y.astype(np.float32, copy=False)


class CheckpointRunner:
    """cardbench's own baseline checkpoint (``model.safetensors`` + its config; needs torch).

    Predictions are exactly ``cardbench baseline predict``'s (:func:`cardbench.baselines.predict.predict_volume`).
    """

    def __init__(self, path: str | Path, card: ModelCard | None = None, limits: Limits = Limits(),
                 device: str = "auto"):
        self.path = Path(path)
        self.limits = limits
        _check_size(self.path, limits)
        if card is not None and card.format != "cardbench-checkpoint":
            raise ModelCardError(f"{card.path or 'model.yaml'}: format is {card.format!r} but {self.path.name} is a "
                                 "checkpoint; set format: cardbench-checkpoint or give the .onnx file")
        try:
            import torch  # noqa: F401

            from cardbench.baselines.model import load_model_from_checkpoint
            from cardbench.baselines.train import resolve_device
            from cardbench.baselines.weights import WeightsError
        except ImportError:
            raise ModelCardError(f"{self.path}: running a baseline checkpoint needs torch: pip install "
                                 "'cardbench[baselines]' (or export it with `cardbench baseline export-onnx`)") from None
        self.device = resolve_device(device)
        try:
            self.model, self.cfg, self.meta = load_model_from_checkpoint(self.path, self.device)
        except WeightsError as e:
            raise ModelCardError(str(e)) from None
        self.provider = str(self.device)
        self.card = card

    def predict(self, volume: np.ndarray, deadline: float) -> np.ndarray:
        """Segment one ``(x, y, slice)`` volume (see :func:`cardbench.baselines.predict.predict_volume`)."""
        from cardbench.baselines.predict import predict_volume

        if deadline - time.monotonic() <= 0:
            raise ModelRunError(f"{self.path}: over the total time limit of {self.limits.total_seconds:g} s; "
                                "nothing was scored")
        t0 = time.monotonic()
        out = predict_volume(self.model, self.cfg, volume, self.device)
        dt = time.monotonic() - t0
        if dt > self.limits.seconds_per_image * volume.shape[2]:
            raise ModelRunError(f"{self.path}: {dt:.1f} s for {volume.shape[2]} images, over "
                                f"{self.limits.seconds_per_image:g} s per image; nothing was scored")
        return out


def open_runner(model: str | Path, card: ModelCard | None, limits: Limits = Limits(), device: str = "auto"):
    """The runner for ``model``: a ``.onnx`` file (needs ``card``) or a ``.safetensors`` checkpoint.

    Raises:
        ModelCardError: unknown model file type, missing card for ONNX, or any validation problem.
    """
    p = Path(model)
    head = b""
    if p.is_file():
        with open(p, "rb") as fh:
            head = fh.read(16)
    if p.suffix == ".safetensors" or (card is not None and card.format == "cardbench-checkpoint"):
        return CheckpointRunner(p, card, limits, device)
    if p.suffix == ".onnx" or (card is not None and card.format == "onnx"):
        if card is None:
            raise ModelCardError(f"{p}: an ONNX model needs its model.yaml (--model-card) declaring input, output "
                                 "and postprocessing")
        return OnnxRunner(p, card, limits)
    if not p.is_file():
        raise ModelCardError(f"{p}: model file not found")
    raise ModelCardError(f"{p}: unknown model type (first bytes {head[:8]!r}); give a .onnx file with its model.yaml "
                         "or a cardbench model.safetensors")
