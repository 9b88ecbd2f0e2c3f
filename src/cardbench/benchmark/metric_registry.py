"""The metric registry: one :class:`MetricSpec` per metric, the single source of what a metric is.

Every place that shows or uses a metric reads it from here: the per-case table
(:mod:`cardbench.benchmark.casetable`: which columns exist, the fixed worst value of each),
the surface engine (:mod:`cardbench.benchmark.surface`: the reducer of each boundary metric),
aggregation, printed reports (digits, unit), the leaderboard (ranking direction, digits) and the
dashboard (metric selectors, direction, axis units). A metric without a spec cannot reach a table:
:func:`get_metric` raises for an unknown name, a protocol naming one is refused when it is built,
and :func:`cardbench.benchmark.casetable.per_case_table` refuses a metric column it has no spec for.

Families:

``overlap``
    Computed from the confusion counts of a case (Dice, IoU); ``from_counts(tp, fp, fn)``.
``distance``
    Computed from the directed boundary distances of a case (HD, HD95, ASSD, MASD, NSD); the
    surface engine finds the distances of each (level, case, class) once and ``reducer`` turns
    them into the value (:class:`cardbench.benchmark.surface.DirectedDistances`).
``volume``
    Clinical volumes and indices (EDV, ESV, EF, LV mass in :mod:`cardbench.benchmark.clinical`);
    reserved here for specs of volume-type metrics.

Adding a metric is one :class:`MetricSpec` passed to :func:`register_metric`, its reducer (or
count formula) and its tests; see docs/extending.md, where NSD is the worked example.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from cardbench.benchmark.metrics import (
    BOTH_EMPTY, FAILED, MISSING, NOT_ANNOTATED, OK, PRED_EMPTY, REF_EMPTY, dice_from_counts, iou_from_counts,
)
from cardbench.benchmark import surface as _surface

FAMILIES = ("overlap", "distance", "volume")
#: rules a policy may give a status: keep the value, exclude it (NaN), the metric's worst case, or a number.
POLICY_RULES = ("value", "nan", "worst")


class UnknownMetricError(ValueError):
    """A metric name that has no :class:`MetricSpec` in the registry."""


@dataclass(frozen=True)
class MetricSpec:
    """Everything cardbench needs to know about one metric.

    Attributes:
        name: column name in per_case.csv and aggregates.csv (lower case, e.g. ``hd95``).
        label: display label (``"HD95"``).
        unit: ``""`` (dimensionless, in [0, 1]) or ``"mm"``.
        direction: +1 higher is better, -1 lower is better (leaderboard ranking, dashboard).
        digits: decimals in printed tables, the leaderboard and the dashboard.
        family: ``overlap``, ``distance`` or ``volume`` (see the module docstring).
        worst: the fixed worst value (Dice 0, NSD 0), or None when the worst case is per case (the
            field-of-view diagonal in mm of the image or volume, for distances).
        edge_cases: default policy, status -> rule (``"value"``, ``"nan"``, ``"worst"`` or a
            number); a protocol may override it. Read-only.
        parameters: default parameters (e.g. NSD's ``tolerance_mm``); a protocol may override
            them. Read-only.
        status_group: a group of metrics sharing one status column of the surface engine
            (``distance`` -> ``distance_status``: ``failed`` when the spacing is unknown).
        from_counts: ``(tp, fp, fn) -> values`` for the overlap family.
        reducer: ``(DirectedDistances, params) -> values per group`` for the distance family.
        reference: the source of the definition.
    """

    name: str
    label: str
    unit: str
    direction: int
    digits: int
    family: str
    worst: float | None = None
    edge_cases: Mapping[str, object] = field(default_factory=dict)
    parameters: Mapping[str, object] = field(default_factory=dict)
    status_group: str | None = None
    from_counts: Callable | None = None
    reducer: Callable | None = None
    reference: str = ""

    def __post_init__(self):
        if not self.name or not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"metric name {self.name!r} must be a lower-case identifier (e.g. 'nsd')")
        if self.family not in FAMILIES:
            raise ValueError(f"metric {self.name}: family {self.family!r} is not one of {', '.join(FAMILIES)}")
        if self.direction not in (1, -1):
            raise ValueError(f"metric {self.name}: direction must be +1 or -1, got {self.direction!r}")
        if self.unit not in ("", "mm", "mL", "%", "g"):
            raise ValueError(f"metric {self.name}: unit {self.unit!r} is not one of '', mm, mL, %, g")
        if not isinstance(self.digits, int) or not 0 <= self.digits <= 6:
            raise ValueError(f"metric {self.name}: digits must be an integer 0..6")
        if self.family == "overlap" and self.from_counts is None:
            raise ValueError(f"metric {self.name}: an overlap metric needs from_counts(tp, fp, fn)")
        if self.family == "distance" and self.reducer is None:
            raise ValueError(f"metric {self.name}: a distance metric needs a reducer")
        check_policy(self.name, self.edge_cases, where=f"metric {self.name}")
        object.__setattr__(self, "edge_cases", MappingProxyType(dict(self.edge_cases)))
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    @property
    def in_unit_interval(self) -> bool:
        """Whether the metric's values lie in [0, 1] (dimensionless: Dice, IoU, NSD)."""
        return self.unit == ""

    def bad_value(self, value) -> str | None:
        """Why ``value`` cannot be a value (or an aggregate) of this metric, or None when it can.

        None and NaN (no value) are allowed; otherwise a finite number in [0, 1] for a
        dimensionless metric (Dice, IoU, NSD: ratios of voxel or surface counts, Taha & Hanbury
        2015) and >= 0 for a distance or volume in its unit (HD, HD95, ASSD, MASD: distances).
        """
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if math.isnan(value):
            return None
        if not math.isfinite(value):
            return f"{value!r} is not finite"
        if self.in_unit_interval and not 0.0 <= value <= 1.0:
            return f"{value!r} is outside [0, 1]"
        if value < 0 and self.family in ("overlap", "distance"):
            return f"{value!r} is negative"
        return None

    def format(self, value) -> str:
        """``value`` with the spec's digits; ``-`` for None/NaN."""
        import math

        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{self.digits}f}"


def check_policy(metric: str, rules: Mapping, where: str) -> None:
    """Check one metric's status -> rule table.

    Raises:
        ValueError: an unknown status or a rule that is not ``value``, ``nan``, ``worst`` or a
            finite number; the message names ``where``, the key, the bad value and the allowed values.
    """
    from cardbench.benchmark.metrics import STATUSES
    import math

    if not isinstance(rules, Mapping):
        raise ValueError(f"{where}: key 'policy.{metric}': bad value {rules!r}; allowed: a mapping status -> rule")
    for st, rule in rules.items():
        if st not in STATUSES:
            raise ValueError(f"{where}: key 'policy.{metric}': unknown status {st!r}; allowed: {', '.join(STATUSES)}")
        if isinstance(rule, bool) or not (rule in POLICY_RULES or (isinstance(rule, (int, float))
                                                                     and math.isfinite(rule))):
            raise ValueError(f"{where}: key 'policy.{metric}.{st}': bad value {rule!r}; allowed: "
                             f"{', '.join(POLICY_RULES)} or a number")


_REGISTRY: dict[str, MetricSpec] = {}
#: read-only view of the registry: name -> spec, in registration (= report) order.
METRICS: Mapping[str, MetricSpec] = MappingProxyType(_REGISTRY)


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric to the registry.

    Raises:
        ValueError: a metric of that name is already registered.
    """
    if spec.name in _REGISTRY:
        raise ValueError(f"metric {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_metric(name: str) -> MetricSpec:
    """The spec of a metric.

    Raises:
        UnknownMetricError: no spec of that name; the message lists the known metrics.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownMetricError(f"unknown metric {name!r}; known metrics: {', '.join(_REGISTRY)}") from None


def metrics_of_family(family: str) -> tuple[str, ...]:
    """Names of the registered metrics of one family, in registration order."""
    return tuple(n for n, s in _REGISTRY.items() if s.family == family)


def digits_of(name: str, default: int = 2) -> int:
    """Decimals of a metric (``default`` for a name that is no metric, e.g. a clinical statistic)."""
    spec = _REGISTRY.get(name)
    return spec.digits if spec is not None else default


def direction_of(name: str, default: int = 1) -> int:
    """+1 (higher is better) or -1 of a metric (``default`` for a name that is no metric)."""
    spec = _REGISTRY.get(name)
    return spec.direction if spec is not None else default


def unit_of(name: str) -> str:
    """Unit of a metric (``""`` for a name that is no metric)."""
    spec = _REGISTRY.get(name)
    return spec.unit if spec is not None else ""


def overlap_policy(both_empty: object) -> dict[str, object]:
    """Edge-case policy of an overlap metric with the given rule for ``both_empty``.

    One side empty keeps the computed value (Dice 0), a missing prediction is the worst case,
    not annotated and failed are excluded.
    """
    return {OK: "value", BOTH_EMPTY: both_empty, REF_EMPTY: "value", PRED_EMPTY: "value",
            NOT_ANNOTATED: "nan", MISSING: "worst", FAILED: "nan"}


def distance_policy() -> dict[str, object]:
    """Edge-case policy of a boundary metric: one side empty or a missing prediction is the worst
    case (distances: the field-of-view diagonal in mm; NSD: 0), both empty is NaN (excluded)."""
    return {OK: "value", BOTH_EMPTY: "nan", REF_EMPTY: "worst", PRED_EMPTY: "worst",
            NOT_ANNOTATED: "nan", MISSING: "worst", FAILED: "nan"}


_MR = "Maier-Hein et al., Metrics Reloaded, Nat Methods 2024;21:195"

register_metric(MetricSpec(
    "dice", "Dice", "", 1, 3, "overlap", worst=0.0, edge_cases=overlap_policy("nan"),
    from_counts=dice_from_counts, reference="2 TP / (2 TP + FP + FN); Dice 1945; MONAI compute_dice, MedPy dc"))
register_metric(MetricSpec(
    "iou", "IoU", "", 1, 3, "overlap", worst=0.0, edge_cases=overlap_policy("nan"),
    from_counts=iou_from_counts, reference="TP / (TP + FP + FN) (Jaccard); MONAI compute_iou, MedPy jc"))
register_metric(MetricSpec(
    "hd", "HD", "mm", -1, 2, "distance", edge_cases=distance_policy(), status_group="distance",
    reducer=_surface.reduce_hd, reference="max of both directed maxima; MONAI HausdorffDistanceMetric"))
register_metric(MetricSpec(
    "hd95", "HD95", "mm", -1, 2, "distance", edge_cases=distance_policy(), status_group="distance",
    reducer=_surface.reduce_hd95,
    reference=f"larger directed 95th percentile; MONAI HausdorffDistanceMetric(percentile=95); {_MR}"))
register_metric(MetricSpec(
    "assd", "ASSD", "mm", -1, 2, "distance", edge_cases=distance_policy(), status_group="distance",
    reducer=_surface.reduce_assd,
    reference="mean of pooled directed distances; Heimann et al., IEEE TMI 2009;28:1251; MONAI "
              "SurfaceDistanceMetric(symmetric=True)"))
register_metric(MetricSpec(
    "masd", "MASD", "mm", -1, 2, "distance", edge_cases=distance_policy(), status_group="distance",
    reducer=_surface.reduce_masd, reference=f"mean of the two directed means; {_MR}"))
register_metric(MetricSpec(
    "nsd", "NSD", "", 1, 3, "distance", worst=0.0, edge_cases=distance_policy(),
    parameters={"tolerance_mm": _surface.DEFAULT_NSD_TOLERANCE_MM}, status_group="distance",
    reducer=_surface.reduce_nsd,
    reference="normalized surface Dice at tolerance tau: Nikolov et al. 2021, arXiv:1809.04430; "
              f"{_MR}; MONAI SurfaceDiceMetric(use_subvoxels=False)"))
