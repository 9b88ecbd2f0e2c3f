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
subset of LV/MY/RV may be given, further classes (``LA: 4``, declared with their long name under
``classes: {LA: left atrium}``) are scored like them, and
``regions: {LV+MY: [LV, MY]}`` adds unions of classes scored as one structure (docs/extending.md). Values outside the declared map are an error
(:class:`LabelValueError`), never a silent zero.
"""

from __future__ import annotations

import re
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


_CLASS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


def class_space(*maps: "LabelMap") -> dict[str, int]:
    """cardbench (internal) value of every foreground class of ``maps``.

    LV, MY and RV always keep 1, 2 and 3 (so every 4-class map is scored exactly as before); any
    other class (LA, RVMY, ...) gets the next free value, 4, 5, ..., in the order the maps declare
    them (the first map, usually the reference's, first). Regions have no value of their own: they
    are unions of class values (:meth:`LabelMap.structure_values`).
    """
    space = dict(CLASS_VALUES)
    for m in maps:
        for c in m.labels:
            if c != "background" and c not in space:
                space[c] = max(space.values()) + 1
    return space


@dataclass(frozen=True)
class LabelMap:
    """A mapping from class name to integer value in a mask, plus optional regions.

    Attributes:
        name: short name (``cardbench``, ``acdc``, ``mnms`` or a custom name).
        labels: class name -> value in the file; must contain ``background``. LV, MY and RV are
            cardbench's classes; any other name must be declared in ``class_names``.
        source: where the map is defined (paper, challenge or file).
        class_names: further classes this map declares -> their long name, e.g.
            ``{"LA": "left atrium"}``; a name is a letter then letters, digits or ``_``. A class in
            ``labels`` that is neither LV/MY/RV nor declared here is refused (a typo never becomes
            a new structure).
        regions: region name -> classes, a union of classes scored as one structure (as nnU-Net's
            regions), e.g. ``{"LV+MY": ("LV", "MY")}`` = the epicardial region. Regions are scored
            only when declared here or asked for with ``--classes``.
    """

    name: str
    labels: dict[str, int]
    source: str = ""
    regions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    class_names: dict[str, str] = field(default_factory=dict)
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "background" not in self.labels:
            raise ValueError(f"label map '{self.name}': needs a 'background' entry (usually 0)")
        for c in self.class_names:
            if c in CLASS_VALUES or c == "background" or not _CLASS_NAME.match(str(c)):
                raise ValueError(f"label map '{self.name}': class name {c!r} cannot be declared; a further class is "
                                 "a letter, then up to 31 letters, digits or _, and not LV, MY, RV or background")
        unknown = sorted(set(self.labels) - {"background", *CLASSES, *self.class_names})
        if unknown:
            raise ValueError(
                f"label map '{self.name}': unknown class names {unknown}; use background, {', '.join(CLASSES)}, "
                "or declare a further class with its long name under classes: (e.g. classes: {LA: left atrium})"
            )
        vals = list(self.labels.values())
        if len(set(vals)) != len(vals):
            raise ValueError(f"label map '{self.name}': two classes share one value: {self.labels}")
        if any((not isinstance(v, (int, np.integer))) or v < 0 or v > 255 for v in vals):
            raise ValueError(f"label map '{self.name}': values must be integers 0..255: {self.labels}")
        regions = {}
        for rname, members in dict(self.regions or {}).items():
            members = tuple(members)
            bad = [m for m in members if m not in self.labels or m == "background"]
            if bad or len(members) < 2:
                raise ValueError(f"label map '{self.name}': region {rname!r} must list two or more classes of the "
                                 f"map ({', '.join(self.classes)}); got {list(members)}")
            if rname in self.labels:
                raise ValueError(f"label map '{self.name}': region {rname!r} has the name of a class")
            regions[str(rname)] = members
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "_lut", self._make_lut(class_space(self)))

    def _make_lut(self, space: dict[str, int]) -> np.ndarray:
        lut = np.full(256, 255, dtype=np.uint8)  # 255 = not in the map
        for cls, v in self.labels.items():
            lut[v] = 0 if cls == "background" else space[cls]
        return lut

    @property
    def values(self) -> set[int]:
        """The integer values this map allows."""
        return set(int(v) for v in self.labels.values())

    @property
    def classes(self) -> tuple[str, ...]:
        """The foreground classes of this map, in cardbench order (LV, MY, RV, then further classes
        in declaration order)."""
        space = class_space(self)
        return tuple(sorted((c for c in self.labels if c != "background"), key=space.__getitem__))

    @property
    def structures(self) -> tuple[str, ...]:
        """What is scored by default: the classes, then the declared regions."""
        return self.classes + tuple(self.regions)

    def structure_values(self, name: str, space: dict[str, int] | None = None) -> tuple[int, ...]:
        """cardbench values that make up a class or region (``LV+MY`` -> (1, 2)).

        A name with ``+`` that is not a declared region is read as the union of the classes it
        joins, so ``--classes LV+MY`` works with any map holding LV and MY.

        Raises:
            KeyError: a class that is not in the map (or in ``space``).
        """
        space = space or class_space(self)
        members = self.regions.get(name) or (tuple(name.split("+")) if "+" in name else (name,))
        return tuple(sorted(space[m] for m in members))

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

    def to_cardbench(self, arr: np.ndarray, space: dict[str, int] | None = None) -> np.ndarray:
        """Remap an integer array of this map to cardbench values (uint8, same shape).

        Args:
            arr: integer array of any shape.
            space: class -> cardbench value (:func:`class_space` of the reference's and the
                prediction's maps, so both sides agree on the values of further classes); default
                this map's own.

        Raises:
            LabelValueError: ``arr`` holds a value outside the map.
        """
        arr = np.asarray(arr)
        bad = self.bad_values(arr)
        if bad:
            raise LabelValueError(bad, self)
        lut = self._lut if space is None else self._make_lut(space)
        if all(v == (0 if c == "background" else int(lut[v])) for c, v in self.labels.items()):
            return arr.astype(np.uint8, copy=False)
        return lut[arr.astype(np.intp, copy=False)]

    @property
    def is_identity(self) -> bool:
        """True when this map's values already equal cardbench's values."""
        space = class_space(self)
        return all(v == (0 if c == "background" else space[c]) for c, v in self.labels.items())

    def to_dict(self) -> dict:
        """JSON-friendly form: ``{name, labels, source}`` (and ``regions`` when declared)."""
        d = {"name": self.name, "labels": dict(self.labels), "source": self.source}
        if self.class_names:
            d["classes"] = dict(self.class_names)
        if self.regions:
            d["regions"] = {k: list(v) for k, v in self.regions.items()}
        return d


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
        regions = spec.get("regions") or {} if "labels" in spec else {}
        names = spec.get("classes") or {} if "labels" in spec else {}
        if isinstance(names, (list, tuple)):
            names = {str(c): str(c) for c in names}
        if not isinstance(names, dict):
            raise ValueError("classes: expected a mapping of further classes to long names, like {LA: left atrium}")
        if isinstance(regions, (list, tuple)):  # ["LV+MY"]: the name says the classes
            regions = {str(r): tuple(str(r).split("+")) for r in regions}
        if not isinstance(regions, dict):
            raise ValueError("regions: expected a mapping like {LV+MY: [LV, MY]} or a list like [LV+MY]")
        if not isinstance(labels, dict):
            raise ValueError("labels: expected a mapping of class names to integer values, like {background: 0, LV: 1}")
        values = {}
        for k, v in labels.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"labels: class {k!s} has value {v!r}; give a whole number 0..255 "
                                 "(e.g. LV: 1)")
            values[str(k)] = v
        return LabelMap(str(spec.get("name", "custom")), values,
                        str(spec.get("source", "")), {str(k): tuple(str(c) for c in v) for k, v in regions.items()},
                        {str(k): str(v) for k, v in names.items()})
    s = str(spec)
    if s.lower() in BUILTIN:
        return BUILTIN[s.lower()]
    p = Path(s)
    if p.suffix.lower() in (".yaml", ".yml", ".json") or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"{p}: label map file not found; give a built-in name "
                                    f"({', '.join(BUILTIN)}) or an existing YAML file")
        from cardbench._yamlsafe import _load_small_yaml, _YamlRefused
        from cardbench.limits import get_limits

        try:  # bounded (max_meta_bytes), regular files only, safe_load: as submission.yaml
            data = _load_small_yaml(p, get_limits(), noun="a label map file",
                                    doc="docs/extending.md, Adding a label map")
        except _YamlRefused as e:
            raise ValueError(f"{p}: label map file: {e.what}. Fix: {e.fix}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping like {{name: x, labels: {{background: 0, LV: 1}}}}")
        data.setdefault("name", p.stem)
        data.setdefault("source", str(p))
        try:
            return get_label_map(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from e
    raise ValueError(f"unknown label map '{s}'; use one of {', '.join(BUILTIN)} or a YAML file")
