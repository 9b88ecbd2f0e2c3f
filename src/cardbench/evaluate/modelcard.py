"""``model.yaml``: what a submitted model expects as input and what it returns.

Example (cardbench's own baseline, as ``cardbench baseline export-onnx`` writes it)::

    cardbench_model_card: 1
    name: unet-resnet18
    format: onnx                     # onnx | cardbench-checkpoint
    input:
      channels: 3                    # the grey image is copied into every channel
      size: [256, 256]               # network in-plane size (H, W) in pixels
      axis_order: NCHW               # NCHW | NHWC
      spatial_order: xy              # H = NIfTI axis x (i), W = y (j); yx: H = y, W = x (PNG rows)
      fit: resize-pad                # resize | pad | crop | resize-pad
      interpolation: bilinear        # nearest | bilinear (image in, scores back out)
      intensity:
        method: percentile           # none | min-max | percentile | z-score
        p_low: 0.5                   # percentile clip: p_low/p_high in %, mapped to 0 and 1, clipped
        p_high: 99.5
        over: stack                  # image (each 2D slice) | stack (the 3D volume of one frame)
      channel_mean: [0.485, 0.456, 0.406]   # optional: (x - mean) / std per channel, after fit
      channel_std: [0.229, 0.224, 0.225]
    output:
      kind: logits                   # logits | probabilities
      labels: [background, LV, MY]   # output channel -> class (background, LV, MY, RV)
    postprocessing:
      argmax: true                   # the class of each pixel is the arg-max over channels
      largest_component: false       # keep only the largest 3D connected component of each class

Fit: ``resize`` scales the slice to ``size`` (aspect not kept); ``resize-pad`` scales the longest
side to the size and zero-pads the other centrally (the aspect kept; the baseline's); ``pad``
zero-pads centrally (the slice must not be larger than ``size``); ``crop`` centre-crops, zero-padding
an axis that is smaller. The model's scores are brought back to the slice's grid by the inverse
(un-pad, resize back with ``interpolation``; pixels cropped away are background).

Bilinear resizing is the triangle filter of Pillow and of ``torch.nn.functional.interpolate(...,
mode="bilinear", align_corners=False, antialias=True)`` (antialiased when shrinking); nearest picks
``floor(i * in / out)`` as torch's ``mode="nearest"``.

The file is bounded (64 KiB), read with ``yaml.safe_load`` (no tags), and every field is checked
before any image is read: an invalid card is one :class:`ModelCardError` line naming the file, the
field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cardbench.labelmaps import CLASSES

MAX_CARD_BYTES = 64 * 1024
FORMATS = ("onnx", "cardbench-checkpoint")
FITS = ("resize", "pad", "crop", "resize-pad")
INTERPOLATIONS = ("nearest", "bilinear")
INTENSITY = ("none", "min-max", "percentile", "z-score")
CHANNEL_NAMES = ("background", *CLASSES)


class ModelCardError(ValueError):
    """model.yaml (or the model it describes) is invalid; the message is one line: file, problem, fix."""


@dataclass(frozen=True)
class Limits:
    """Limits on a submitted model (documented defaults; ``cardbench evaluate-model --max-...``).

    Attributes:
        max_model_bytes: model file size (default 256 MiB).
        seconds_per_image: wall time per 2D image (slice) of one forward pass (default 10 s): a batch
            of n slices may take ``n * seconds_per_image``; onnxruntime is stopped when it runs over.
        total_seconds: wall time for all images (default 3600 s).
    """

    max_model_bytes: int = 256 * 1024 * 1024
    seconds_per_image: float = 10.0
    total_seconds: float = 3600.0


@dataclass(frozen=True)
class ModelCard:
    """A validated model.yaml (see the module docstring for the fields)."""

    path: Path | None
    format: str
    name: str | None
    channels: int
    size: tuple[int, int]
    axis_order: str = "NCHW"
    spatial_order: str = "xy"
    fit: str = "resize-pad"
    interpolation: str = "bilinear"
    intensity: str = "percentile"
    p_low: float = 0.5
    p_high: float = 99.5
    over: str = "stack"
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None
    output_kind: str = "logits"
    labels: tuple[str, ...] = ("background", "LV", "MY")
    largest_component: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The card as model.yaml content."""
        inp = {"channels": self.channels, "size": list(self.size), "axis_order": self.axis_order,
               "spatial_order": self.spatial_order, "fit": self.fit, "interpolation": self.interpolation,
               "intensity": {"method": self.intensity, "over": self.over}}
        if self.intensity == "percentile":
            inp["intensity"].update(p_low=self.p_low, p_high=self.p_high)
        if self.channel_mean is not None:
            inp["channel_mean"] = list(self.channel_mean)
            inp["channel_std"] = list(self.channel_std)
        d = {"cardbench_model_card": 1}
        if self.name:
            d["name"] = self.name
        d.update({"format": self.format, "input": inp,
                  "output": {"kind": self.output_kind, "labels": list(self.labels)},
                  "postprocessing": {"argmax": True, "largest_component": self.largest_component}})
        return d


def _err(where, msg: str) -> ModelCardError:
    return ModelCardError(f"{where}: {msg}")


def parse_model_card(d, where: str = "model.yaml") -> ModelCard:
    """Validate a model card given as a dict (e.g. from :func:`yaml.safe_load`).

    Raises:
        ModelCardError: the first invalid field, one line.
    """
    if not isinstance(d, dict):
        raise _err(where, "not a mapping; write model.yaml as key: value pairs (see docs/private.md)")
    known = {"cardbench_model_card", "name", "format", "input", "output", "postprocessing", "description",
             "team", "method", "training_data", "url", "label"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise _err(where, f"unknown key(s) {unknown}; allowed: {sorted(known)}")
    if d.get("cardbench_model_card", 1) != 1:
        raise _err(where, f"cardbench_model_card {d.get('cardbench_model_card')!r} is not supported; use 1")
    fmt = d.get("format", "onnx")
    if fmt not in FORMATS:
        raise _err(where, f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    name = d.get("name")
    if name is not None and not isinstance(name, str):
        raise _err(where, "name must be a string")
    inp = d.get("input")
    if not isinstance(inp, dict):
        raise _err(where, "input is missing; declare input: channels, size, fit, intensity (see docs/private.md)")
    bad = sorted(set(inp) - {"channels", "size", "axis_order", "spatial_order", "fit", "interpolation", "intensity",
                             "channel_mean", "channel_std"})
    if bad:
        raise _err(where, f"unknown input key(s) {bad}")
    ch = inp.get("channels")
    if not isinstance(ch, int) or isinstance(ch, bool) or not 1 <= ch <= 16:
        raise _err(where, f"input.channels must be an integer 1..16, not {ch!r}")
    size = inp.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool)
                                                              and 8 <= s <= 4096 for s in size)):
        raise _err(where, f"input.size must be [H, W] with integers 8..4096, not {inp.get('size')!r}")

    def choice(sect: dict, key: str, options, default, prefix: str):
        v = sect.get(key, default)
        if v not in options:
            raise _err(where, f"{prefix}{key} {v!r} is not supported; use one of {', '.join(options)}")
        return v
    axis_order = choice(inp, "axis_order", ("NCHW", "NHWC"), "NCHW", "input.")
    spatial_order = choice(inp, "spatial_order", ("xy", "yx"), "xy", "input.")
    fit = choice(inp, "fit", FITS, "resize-pad", "input.")
    interp = choice(inp, "interpolation", INTERPOLATIONS, "bilinear", "input.")
    it = inp.get("intensity", {"method": "none"})
    if isinstance(it, str):
        it = {"method": it}
    if not isinstance(it, dict):
        raise _err(where, "input.intensity must be a mapping with method (none, min-max, percentile, z-score)")
    bad = sorted(set(it) - {"method", "p_low", "p_high", "over"})
    if bad:
        raise _err(where, f"unknown input.intensity key(s) {bad}")
    method = choice(it, "method", INTENSITY, "none", "input.intensity.")
    over = choice(it, "over", ("image", "stack"), "stack", "input.intensity.")
    p_low, p_high = it.get("p_low", 0.5), it.get("p_high", 99.5)
    if method == "percentile":
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in (p_low, p_high)) or \
                not 0 <= p_low < p_high <= 100:
            raise _err(where, f"input.intensity p_low/p_high must be numbers with 0 <= p_low < p_high <= 100, "
                              f"not {p_low!r}/{p_high!r}")
    mean, std = inp.get("channel_mean"), inp.get("channel_std")
    if (mean is None) != (std is None):
        raise _err(where, "give input.channel_mean and input.channel_std together")
    if mean is not None:
        for k, v in (("channel_mean", mean), ("channel_std", std)):
            if not (isinstance(v, list) and len(v) == ch and all(isinstance(x, (int, float)) and not
                                                                 isinstance(x, bool) for x in v)):
                raise _err(where, f"input.{k} must be a list of {ch} numbers (one per channel)")
        if any(x <= 0 for x in std):
            raise _err(where, "input.channel_std must be positive")
        mean, std = tuple(float(x) for x in mean), tuple(float(x) for x in std)
    out = d.get("output")
    if not isinstance(out, dict):
        raise _err(where, "output is missing; declare output: kind (logits|probabilities) and labels")
    bad = sorted(set(out) - {"kind", "labels"})
    if bad:
        raise _err(where, f"unknown output key(s) {bad}")
    kind = choice(out, "kind", ("logits", "probabilities"), "logits", "output.")
    labels = out.get("labels")
    if not (isinstance(labels, list) and 2 <= len(labels) <= len(CHANNEL_NAMES)
            and all(isinstance(x, str) for x in labels)):
        raise _err(where, f"output.labels must list the class of each output channel, e.g. [background, LV, MY], "
                          f"not {labels!r}")
    names = [x if x == "background" else x.upper() for x in labels]
    if any(x not in CHANNEL_NAMES for x in names) or len(set(names)) != len(names) or names[0] != "background":
        raise _err(where, f"output.labels {labels!r}: channel 0 must be background, then distinct classes from "
                          f"{', '.join(CLASSES)}")
    pp = d.get("postprocessing", {}) or {}
    if not isinstance(pp, dict) or sorted(set(pp) - {"argmax", "largest_component"}):
        raise _err(where, "postprocessing takes argmax: true and largest_component: true|false")
    if pp.get("argmax", True) is not True:
        raise _err(where, "postprocessing.argmax must be true (the class of a pixel is its arg-max channel)")
    lcc = pp.get("largest_component", False)
    if not isinstance(lcc, bool):
        raise _err(where, "postprocessing.largest_component must be true or false")
    extra = {k: d[k] for k in ("description", "team", "method", "training_data", "url", "label") if k in d}
    return ModelCard(None, fmt, name, ch, (size[0], size[1]), axis_order, spatial_order, fit, interp, method,
                     float(p_low), float(p_high), over, mean, std, kind, tuple(names), lcc, extra)


def load_model_card(path: str | Path) -> ModelCard:
    """Read and validate ``model.yaml`` (at most 64 KiB, ``yaml.safe_load``: no tags).

    Raises:
        ModelCardError: missing, too large, not YAML, or an invalid field (one line).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise _err(p, "model card not found; give the model.yaml that describes the model (--model-card)")
    if p.stat().st_size > MAX_CARD_BYTES:
        raise _err(p, f"model card larger than {MAX_CARD_BYTES // 1024} KiB; a model.yaml is a few lines")
    from cardbench._yamlsafe import _yaml_limits_problem
    from cardbench.limits import Limits, get_limits

    try:
        text = p.read_bytes()[:MAX_CARD_BYTES + 1].decode("utf-8")
        bad = _yaml_limits_problem(text, get_limits())  # nesting and alias expansion, before anything is built
        if bad is not None:
            raise _err(p, f"{bad[0]}; a model.yaml is a few plain key: value lines, or raise "
                          f"{Limits.env_name(bad[1])}")
        d = yaml.safe_load(text)
    except RecursionError:
        raise _err(p, "nested too deeply; a model.yaml is a few plain key: value lines") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        from cardbench._yamlsafe import yaml_tag_problem

        tag = yaml_tag_problem(e, "a model card")
        if tag is not None:
            raise _err(p, f"not valid YAML for cardbench: {tag[0]}; {tag[1]}") from None
        raise _err(p, f"not valid YAML ({str(e).splitlines()[0]}); plain key: value YAML without tags") from None
    card = parse_model_card(d, str(p))
    return ModelCard(**{**card.__dict__, "path": p})
