"""Label maps: which integer in a mask means which structure, and remapping to cardbench's map.

cardbench's own label map (the default, docs/scoring.md) is 0 background, 1 LV (left-ventricular blood
pool), 2 MY (left-ventricular myocardium), 3 RV (right-ventricular cavity). Every array is remapped
to it before any metric, so metric code only ever sees cardbench values.

Built-in maps:

============  ==========================================  ===========================================
name          values                                      source
============  ==========================================  ===========================================
cardbench     0 bg, 1 LV, 2 MY, 3 RV                       cardbench; same as the seed's 0/1/2 masks
acdc          0 bg, 1 RV, 2 MY, 3 LV                       ACDC challenge (Bernard et al. 2018)
mnms          0 bg, 1 LV, 2 MY, 3 RV                       M&Ms challenge (Campello et al. 2021)
============  ==========================================  ===========================================

A custom map is a YAML file ``{name: NAME, labels: {background: 0, LV: 1, MY: 2, RV: 3}}``; any
subset of LV/MY/RV may be given. Values outside the declared map are an error
(:class:`LabelValueError`), never a silent zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: cardbench class names in order of their cardbench value (1, 2, 3).
CLASSES: tuple[str, ...] = ("LV", "MY", "RV")
#: cardbench value of each class.
CLASS_VALUES: dict[str, int] = {"LV": 1, "MY": 2, "RV": 3}
#: long names, for reports.
CLASS_LONG_NAMES: dict[str, str] = {
    "LV": "left-ventricular blood pool (cavity)",
    "MY": "left-ventricular myocardium",
    "RV": "right-ventricular cavity",
}


class LabelValueError(ValueError):
    """An array holds a value that the declared label map does not define."""

    def __init__(self, bad_values: list[int], label_map: "LabelMap"):
        self.bad_values = bad_values
        self.label_map = label_map
        super().__init__(
            f"values {bad_values} are not in label map '{label_map.name}' "
            f"(allowed: {sorted(label_map.values)})"
        )


@dataclass(frozen=True)
class LabelMap:
    """A mapping from class name to integer value in a mask.

    Attributes:
        name: short name (``cardbench``, ``acdc``, ``mnms`` or a custom name).
        labels: class name -> value; must contain ``background``; the other keys are a subset of
            :data:`CLASSES`.
        source: where the map is defined (paper, challenge or file).
    """

    name: str
    labels: dict[str, int]
    source: str = ""
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "background" not in self.labels:
            raise ValueError(f"label map '{self.name}': needs a 'background' entry (usually 0)")
        unknown = set(self.labels) - {"background", *CLASSES}
        if unknown:
            raise ValueError(
                f"label map '{self.name}': unknown class names {sorted(unknown)}; "
                f"use background, {', '.join(CLASSES)}"
            )
        vals = list(self.labels.values())
        if len(set(vals)) != len(vals):
            raise ValueError(f"label map '{self.name}': two classes share one value: {self.labels}")
        if any((not isinstance(v, (int, np.integer))) or v < 0 or v > 255 for v in vals):
            raise ValueError(f"label map '{self.name}': values must be integers 0..255: {self.labels}")
        lut = np.full(256, 255, dtype=np.uint8)  # 255 = not in the map
        for cls, v in self.labels.items():
            lut[v] = 0 if cls == "background" else CLASS_VALUES[cls]
        object.__setattr__(self, "_lut", lut)

    @property
    def values(self) -> set[int]:
        """The integer values this map allows."""
        return set(int(v) for v in self.labels.values())

    @property
    def classes(self) -> tuple[str, ...]:
        """The foreground classes of this map, in cardbench order."""
        return tuple(c for c in CLASSES if c in self.labels)

    def check_values(self, values) -> list[int]:
        """Return the sorted values among ``values`` that are not in the map (empty if all fine)."""
        allowed = self.values
        return sorted(int(v) for v in values if int(v) not in allowed)

    def bad_values(self, arr: np.ndarray) -> list[int]:
        """The sorted values of ``arr`` that are not in the map (empty if all fine).

        Fast path: when every integer between the array's minimum and maximum is allowed, no
        value can be outside the map and the array is not scanned for its distinct values.
        """
        arr = np.asarray(arr)
        if arr.size == 0:
            return []
        lo, hi = int(arr.min()), int(arr.max())
        allowed = self.values
        if hi - lo <= 256 and all(v in allowed for v in range(lo, hi + 1)):
            return []
        return self.check_values(np.unique(arr))

    def to_cardbench(self, arr: np.ndarray) -> np.ndarray:
        """Remap an integer array of this map to cardbench values (uint8, same shape).

        Args:
            arr: integer array of any shape.

        Raises:
            LabelValueError: ``arr`` holds a value outside the map.
        """
        arr = np.asarray(arr)
        bad = self.bad_values(arr)
        if bad:
            raise LabelValueError(bad, self)
        if self.is_identity:
            return arr.astype(np.uint8, copy=False)
        return self._lut[arr.astype(np.intp, copy=False)]

    @property
    def is_identity(self) -> bool:
        """True when this map's values already equal cardbench's values."""
        return all(v == (0 if c == "background" else CLASS_VALUES[c]) for c, v in self.labels.items())

    def to_dict(self) -> dict:
        """JSON-friendly form: ``{name, labels, source}``."""
        return {"name": self.name, "labels": dict(self.labels), "source": self.source}


CARDBENCH = LabelMap("cardbench", {"background": 0, "LV": 1, "MY": 2, "RV": 3}, "cardbench (cardbench.labelmaps, docs/scoring.md)")
ACDC = LabelMap("acdc", {"background": 0, "RV": 1, "MY": 2, "LV": 3},
                "ACDC challenge, Bernard et al., IEEE TMI 2018;37:2514")
MNMS = LabelMap("mnms", {"background": 0, "LV": 1, "MY": 2, "RV": 3},
                "M&Ms challenge, Campello et al., IEEE TMI 2021;40:3543")

BUILTIN: dict[str, LabelMap] = {m.name: m for m in (CARDBENCH, ACDC, MNMS)}


def get_label_map(spec: "str | Path | LabelMap | dict | None") -> LabelMap:
    """Return a :class:`LabelMap` from a built-in name, a YAML file path, a dict or a LabelMap.

    Raises:
        ValueError: unknown name, or a YAML file that does not define a valid map.
        FileNotFoundError: a path that does not exist.
    """
    if spec is None:
        return CARDBENCH
    if isinstance(spec, LabelMap):
        return spec
    if isinstance(spec, dict):
        labels = spec.get("labels", spec)
        return LabelMap(str(spec.get("name", "custom")), {str(k): int(v) for k, v in labels.items()},
                        str(spec.get("source", "")))
    s = str(spec)
    if s.lower() in BUILTIN:
        return BUILTIN[s.lower()]
    p = Path(s)
    if p.suffix.lower() in (".yaml", ".yml", ".json") or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"{p}: label map file not found; give a built-in name "
                                    f"({', '.join(BUILTIN)}) or an existing YAML file")
        import yaml

        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({e}); see the README for the label map format") from e
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping like {{name: x, labels: {{background: 0, LV: 1}}}}")
        data.setdefault("name", p.stem)
        data.setdefault("source", str(p))
        try:
            return get_label_map(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from e
    raise ValueError(f"unknown label map '{s}'; use one of {', '.join(BUILTIN)} or a YAML file")
