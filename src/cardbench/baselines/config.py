"""Training configuration and the seed's training schedule (no torch needed).

A run is described by one YAML file (shipped ones live in ``cardbench/baselines/configs``:
``pretrain-kaggle``, ``finetune``, ``cpu-smoke``, ``demo``) plus command-line overrides. The
resolved configuration (every default filled in) is written next to each checkpoint as JSON and
embedded in the checkpoint's safetensors metadata, so a model file always says how it was made.

The schedule reproduces the seed's fine-tuning recipe (Ankenbrand et al., MRM 2021;86:2179, and
``code/7T/segmentation_with_reduced_set.py`` of github chfc-cmi/cmr-seg-tl):

* pretrained initialisation (ImageNet encoder "TL", or the Kaggle base model "TL2"): stage 1 with
  the encoder frozen, one-cycle schedule at lr 1e-4 for E epochs; stage 2 everything unfrozen,
  one-cycle at lr 1e-5 for E epochs;
* random initialisation (plain learning "R"): the same two stages, nothing frozen (2E epochs
  unfrozen);
* E = round(10 * n_all / n_subset), so every training subset sees about the same number of
  iterations (n_all = 5076 training images of the 7T study; Python's round, as the seed's code).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

#: initialisations and what they mean (the paper's names in brackets).
INITS = {
    "random": "random weights everywhere (plain learning, R)",
    "imagenet": "encoder pretrained on ImageNet, decoder random (transfer learning, TL)",
    "checkpoint": "all weights from a cardbench checkpoint, e.g. the Kaggle base model (double TL, TL2)",
}
LOSSES = ("ce", "dice", "focal")


class ConfigError(ValueError):
    """A configuration file or override is invalid (the message names the key and the fix)."""


@dataclass
class AugmentConfig:
    """Random augmentation applied to each training batch (fastai v1 ``get_transforms`` semantics).

    Attributes:
        flip: random horizontal flip (p 0.5).
        flip_vert: also vertical flips and 90 degree turns (fastai's dihedral group).
        max_rotate: rotation angle drawn uniformly in [-max_rotate, max_rotate] degrees.
        max_zoom: zoom factor drawn uniformly in [1, max_zoom] (zooms in).
        max_lighting: brightness and contrast change (fastai: brightness in logit space with
            change in 0.5 +/- max_lighting/2, contrast scale log-uniform in
            [1 - max_lighting, 1 / (1 - max_lighting)]).
        p_affine: probability that rotation/zoom is applied to an image.
        p_lighting: probability that lighting is applied to an image.
    """

    enabled: bool = True
    flip: bool = True
    flip_vert: bool = True
    max_rotate: float = 90.0
    max_zoom: float = 1.2
    max_lighting: float = 0.4
    p_affine: float = 0.75
    p_lighting: float = 0.75


@dataclass
class StageConfig:
    """One training stage: a one-cycle schedule over ``epochs`` epochs.

    Attributes:
        name: label in the log (``frozen``, ``unfrozen``, ...).
        frozen: encoder weights frozen (BatchNorm layers stay trainable, as in fastai).
        lr: peak learning rate of the one-cycle schedule.
        epochs: number of epochs; ``None`` means E (the scaled base epochs, see
            :func:`compute_schedule`).
    """

    name: str = "stage"
    frozen: bool = False
    lr: float = 1e-4
    epochs: int | None = None


@dataclass
class TrainConfig:
    """Everything a training run needs. See the shipped YAML files for commented examples.

    Attributes (main ones):
        name: run name (the ``model`` column of the log, the submission name).
        dataset: dataset folder in the standard layout, or a registered dataset name.
        train_split / valid_split: splits of ``subjects.csv`` used to train / to log validation
            metrics (an empty or absent validation split gives empty valid columns).
        subset: a published training subset (``v7``, ``v3``, ``v1``, ``r7``, ``r3``, ``r1``, ``esed``,
            ``r_esed`` of the 7T study), ``edes`` (ED and ES frames of ``subjects.csv``) or None.
        subset_file: a CSV/TSV with columns subject, frame, slice listing the training images.
        n_all: number of images the epoch scaling refers to (default: the published table's 5076
            for published subsets, else the size of the training split).
        encoder: segmentation-models-pytorch encoder name (resnet34 as the seed).
        classes: foreground classes predicted, in output-channel order after background.
        init: ``random``, ``imagenet`` or ``checkpoint:PATH``.
        encoder_weights: local file with the encoder's weights (for ``init: imagenet`` offline).
        image_size: network input size in pixels (square; images are scaled to fit and padded with
            zeros, never stretched).
        loss: ``ce`` (cross-entropy), ``dice`` (soft Dice) or ``focal``.
        batch_size, base_epochs, scale_epochs, stages: the schedule (see :func:`compute_schedule`).
        seed: random seed (weights, shuffling, augmentation).
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda[:N]``.
        amp: mixed precision: ``auto`` (on for cuda), ``true`` or ``false``.
    """

    name: str = "unet"
    dataset: str | None = None
    train_split: str = "train"
    valid_split: str | None = "val"
    subset: str | None = None
    subset_file: str | None = None
    n_all: int | None = None
    encoder: str = "resnet34"
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    classes: list[str] = field(default_factory=lambda: ["LV", "MY"])
    init: str = "imagenet"
    encoder_weights: str | None = None
    image_size: int = 256
    loss: str = "ce"
    focal_gamma: float = 2.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 8
    base_epochs: int = 10
    scale_epochs: bool = True
    stages: list[StageConfig] = field(default_factory=lambda: [
        StageConfig("frozen", True, 1e-4, None), StageConfig("unfrozen", False, 1e-5, None)])
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    train_bn: bool = True
    seed: int = 42
    device: str = "auto"
    amp: str = "auto"
    num_workers: int = 0
    preload: str = "auto"
    threads: int | None = None
    out: str | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def init_kind(self) -> str:
        """``random``, ``imagenet`` or ``checkpoint``."""
        return self.init.split(":", 1)[0]

    @property
    def init_checkpoint(self) -> str | None:
        """The PATH of ``checkpoint:PATH`` (else None)."""
        return self.init.split(":", 1)[1] if self.init_kind == "checkpoint" else None

    def to_dict(self) -> dict:
        """Plain dict (JSON/YAML ready)."""
        return asdict(self)

    def to_json(self) -> str:
        """The resolved configuration as JSON (sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self) -> "TrainConfig":
        """Check values; returns self.

        Raises:
            ConfigError: unknown init, loss, class, device or amp value; non-positive sizes.
        """
        if self.init_kind not in INITS:
            raise ConfigError(f"init: '{self.init}' is not one of random, imagenet, checkpoint:PATH")
        if self.init_kind == "checkpoint" and not self.init_checkpoint:
            raise ConfigError("init: 'checkpoint:' needs a path, e.g. checkpoint:runs/base/model.safetensors")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: '{self.loss}' is not one of {', '.join(LOSSES)}")
        bad = [c for c in self.classes if c not in ("LV", "MY", "RV")]
        if bad or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes: {self.classes} must be distinct names among LV, MY, RV")
        if self.image_size < 32 or self.image_size % 32:
            raise ConfigError(f"image_size: {self.image_size} must be a multiple of 32 (U-Net with 5 "
                              "down-sampling steps), e.g. 128 or 256")
        if self.batch_size < 1 or self.base_epochs < 1:
            raise ConfigError("batch_size and base_epochs must be at least 1")
        if not self.stages:
            raise ConfigError("stages: at least one stage is needed")
        for s in self.stages:
            if s.epochs is not None and s.epochs < 0:
                raise ConfigError(f"stages: '{s.name}' has negative epochs")
            if s.lr <= 0:
                raise ConfigError(f"stages: '{s.name}' needs a positive lr")
        if str(self.amp).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"amp: '{self.amp}' must be auto, true or false")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device: '{self.device}' must be auto, cpu or cuda[:N]")
        if self.preload not in ("auto", "true", "false", True, False):
            raise ConfigError(f"preload: '{self.preload}' must be auto, true or false")
        if self.subset and self.subset_file:
            raise ConfigError("give either subset or subset_file, not both")
        return self


# ---------------------------------------------------------------------- loading
def _from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for k, v in data.items():
        if k == "augment":
            v = _from_dict(AugmentConfig, v or {}, f"{where}.augment")
        elif k == "stages":
            if not isinstance(v, list):
                raise ConfigError(f"{where}.stages: expected a list of stages")
            v = [_from_dict(StageConfig, s, f"{where}.stages[{i}]") for i, s in enumerate(v)]
        kwargs[k] = v
    return cls(**kwargs)


def shipped_configs() -> dict[str, str]:
    """Names of the configs shipped with cardbench -> their first comment line."""
    out = {}
    root = resources.files("cardbench.baselines") / "configs"
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.endswith(".yaml"):
            first = p.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            out[p.name[:-5]] = first
    return out


def read_config_text(name_or_path: str | Path) -> tuple[str, str]:
    """YAML text of a shipped config (by name) or a file; returns (text, where).

    A shipped config name (``demo``, ``finetune``, ...) wins over a file of that name in the current
    folder: the argument is read as a file first only when it looks like a path, i.e. it contains a
    path separator (``./demo``, ``configs/demo``) or ends in ``.yaml``, ``.yml`` or ``.json``. Any
    other existing file is read when no shipped config has that name.

    Raises:
        ConfigError: neither a shipped name nor an existing file.
    """
    s = str(name_or_path)
    p = Path(name_or_path)
    looks_like_path = ("/" in s or os.sep in s or (os.altsep is not None and os.altsep in s)
                       or p.suffix.lower() in (".yaml", ".yml", ".json"))
    if looks_like_path and p.is_file():
        return p.read_text(encoding="utf-8"), str(p)
    res = resources.files("cardbench.baselines") / "configs" / f"{s}.yaml"
    if not looks_like_path and res.is_file():
        return res.read_text(encoding="utf-8"), f"shipped:{s}"
    if p.is_file():
        return p.read_text(encoding="utf-8"), str(p)
    raise ConfigError(f"{name_or_path}: no such config file and not a shipped config "
                      f"(shipped: {', '.join(shipped_configs())})")


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {key}: '{p}' is not a mapping")
    cur[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value parsed as YAML, dotted keys for nested ones, e.g. ``augment.max_rotate=20``).

    Raises:
        ConfigError: no ``=``.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}': write KEY=VALUE, e.g. batch_size=16 or augment.enabled=false")
    k, v = text.split("=", 1)
    try:
        val = yaml.safe_load(v) if v.strip() else None
    except yaml.YAMLError:
        val = v
    return k.strip(), val


def load_config(name_or_path: str | Path = "finetune", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a config (shipped name or YAML file), apply overrides, fill defaults and validate.

    Args:
        name_or_path: ``finetune``, ``pretrain-kaggle``, ``cpu-smoke``, ``demo`` or a YAML file.
        overrides: dotted key -> value (None values are ignored), e.g.
            ``{"init": "random", "augment.max_rotate": 20}``.

    Raises:
        ConfigError: unreadable YAML, unknown keys, invalid values.
    """
    text, where = read_config_text(name_or_path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e})") from e
    data = copy.deepcopy(data)
    for k, v in (overrides or {}).items():
        if v is not None:
            _set_dotted(data, k, v)
    return _from_dict(TrainConfig, data, where).validate()


def config_from_dict(data: dict) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from its dict / JSON form (e.g. a checkpoint's metadata)."""
    return _from_dict(TrainConfig, data, "config").validate()


# --------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Stage:
    """A resolved stage: ``epochs`` epochs of one-cycle training at peak ``lr``."""

    name: str
    epochs: int
    lr: float
    frozen: bool


def scaled_epochs(base_epochs: int, n_all: int, n_subset: int) -> int:
    """E = round(base_epochs * n_all / n_subset) (Python's round, as in the seed's code).

    Source: Ankenbrand et al. 2021, Methods ("number of epochs scaled so that every subset sees about
    the same number of iterations"); ``int(round(10 * len(subsets[redset]) / subsets[redset].sum()))``
    in chfc-cmi/cmr-seg-tl ``code/7T/segmentation_with_reduced_set.py``.

    Raises:
        ValueError: n_subset < 1 or n_all < n_subset.
    """
    if n_subset < 1:
        raise ValueError("the training subset is empty: no images to train on")
    if n_all < n_subset:
        raise ValueError(f"n_all ({n_all}) is smaller than the subset ({n_subset})")
    return int(round(base_epochs * n_all / n_subset))


def compute_schedule(cfg: TrainConfig, n_subset: int, n_all: int | None = None) -> list[Stage]:
    """Resolve the configured stages for a training set of ``n_subset`` images.

    E = :func:`scaled_epochs` (base_epochs, n_all, n_subset) when ``cfg.scale_epochs`` and n_all is
    given, else ``cfg.base_epochs``. A stage with ``epochs: null`` runs E epochs. With random
    initialisation nothing is frozen (plain learning: the seed's ``standard_training(freeze=False)``
    runs the same two one-cycle fits unfrozen, 2E epochs in total).

    Returns:
        The stages in order (stages with 0 epochs are dropped).
    """
    n_all = n_all if n_all is not None else n_subset
    e = scaled_epochs(cfg.base_epochs, n_all, n_subset) if cfg.scale_epochs else cfg.base_epochs
    out = []
    for s in cfg.stages:
        epochs = e if s.epochs is None else int(s.epochs)
        frozen = s.frozen and cfg.init_kind != "random"
        if epochs > 0:
            name = s.name if frozen == s.frozen else f"unfrozen-lr{s.lr:g}"
            out.append(Stage(name, epochs, float(s.lr), frozen))
    return out
