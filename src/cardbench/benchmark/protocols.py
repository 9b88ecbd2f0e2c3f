"""Scoring protocols: named, versioned rules for which values are computed, what each status
counts as, and how values are aggregated. Edge-case rules are declared as data (one table per
metric and status), in the spirit of panoptica's edge-case handling, so they are printed in every
``summary.json`` and can be read without reading code.

Two protocols (DESIGN.md):

``ankenbrand2021`` (v1.0)
    The seed paper's protocol (Ankenbrand et al., MRM 2021;86:2179, doi:10.1002/mrm.28822, and its
    analysis code chfc-cmi/cmr-seg-tl). One Dice per 2D image (slice x frame) per class from
    confusion counts; an image whose class is empty in both reference and prediction counts as
    Dice 1; the figure is the plain mean over all images of the split. No confidence interval.

``cardbench-v1`` (v1.0, default)
    One value per 3D volume (subject, frame) per class; both empty: NaN, excluded and counted; one
    side empty: Dice 0 (and, for distances, the worst case); values are averaged per subject first,
    then over subjects, with a 95 % percentile bootstrap confidence interval that resamples
    subjects (images and frames of one subject are not independent).

Policy values: ``"value"`` keeps the computed value, a number replaces it, ``"nan"`` excludes it,
``"worst"`` substitutes the metric's worst case (0 for Dice/IoU; the field-of-view diagonal in mm
for distances).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cardbench.benchmark.metrics import (
    BOTH_EMPTY, FAILED, MISSING, NOT_ANNOTATED, OK, PRED_EMPTY, REF_EMPTY,
)

#: direction of each metric: +1 higher is better, -1 lower is better.
METRIC_DIRECTION: dict[str, int] = {"dice": 1, "iou": 1, "hd": -1, "hd95": -1, "assd": -1, "masd": -1}
#: worst value of each bounded metric (distances: computed per case from the field of view).
METRIC_WORST: dict[str, float] = {"dice": 0.0, "iou": 0.0}
#: units for reports.
METRIC_UNITS: dict[str, str] = {"dice": "", "iou": "", "hd": "mm", "hd95": "mm", "assd": "mm", "masd": "mm"}


def _overlap_policy(both_empty) -> dict[str, object]:
    return {OK: "value", BOTH_EMPTY: both_empty, REF_EMPTY: "value", PRED_EMPTY: "value",
            NOT_ANNOTATED: "nan", MISSING: "worst", FAILED: "nan"}


def _distance_policy() -> dict[str, object]:
    """Surface distances (HD, HD95, ASSD, MASD in mm): one side empty or a missing prediction is the
    worst case (the field-of-view diagonal of the image or volume, in mm), both empty is NaN."""
    return {OK: "value", BOTH_EMPTY: "nan", REF_EMPTY: "worst", PRED_EMPTY: "worst",
            NOT_ANNOTATED: "nan", MISSING: "worst", FAILED: "nan"}


@dataclass(frozen=True)
class Protocol:
    """A scoring protocol.

    Attributes:
        name, version: identity written into every result.
        description: one paragraph for reports.
        level: ``"image"`` (one value per 2D image) or ``"volume"`` (per 3D subject-frame volume).
        aggregation: ``"pooled"`` (mean over all values) or ``"subject"`` (per-subject mean first).
        metrics: metric names computed and aggregated, in report order.
        policy: metric -> status -> rule (see module docstring).
        bootstrap: number of bootstrap resamples of subjects for 95 % CIs (0: none).
        seed: random seed of the bootstrap.
        citation: the definition's source.
    """

    name: str
    version: str
    description: str
    level: str
    aggregation: str
    metrics: tuple[str, ...]
    policy: dict[str, dict[str, object]]
    bootstrap: int = 0
    seed: int = 20210421
    citation: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly description (written into summary.json)."""
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "level": self.level, "aggregation": self.aggregation, "metrics": list(self.metrics),
            "policy": {m: dict(p) for m, p in self.policy.items()},
            "bootstrap": {"resamples": self.bootstrap, "seed": self.seed, "unit": "subject",
                          "interval": "95 % percentile"} if self.bootstrap else None,
            "citation": self.citation,
        }


ANKENBRAND2021 = Protocol(
    name="ankenbrand2021",
    version="1.0",
    description=("Seed paper protocol: Dice per 2D image (slice x frame) per class from confusion counts; "
                 "an image empty in both reference and prediction counts as Dice 1; mean over all images."),
    level="image",
    aggregation="pooled",
    metrics=("dice", "iou"),
    policy={"dice": _overlap_policy(1.0), "iou": _overlap_policy(1.0)},
    bootstrap=0,
    citation="Ankenbrand MJ et al. Magn Reson Med 2021;86:2179-2191. doi:10.1002/mrm.28822",
)

CARDBENCH_V1 = Protocol(
    name="cardbench-v1",
    version="1.0",
    description=("Per 3D volume (subject, frame) per class: Dice, IoU, HD95 and ASSD in mm (HD and MASD in the "
                 "per-case table); both empty: NaN, excluded and counted; one side empty: worst value (Dice 0, "
                 "distances the field-of-view diagonal); mean per subject, then over subjects; 95 % bootstrap CI "
                 "over subjects."),
    level="volume",
    aggregation="subject",
    metrics=("dice", "iou", "hd95", "assd"),
    policy={"dice": _overlap_policy("nan"), "iou": _overlap_policy("nan"),
            "hd": _distance_policy(), "hd95": _distance_policy(), "assd": _distance_policy(),
            "masd": _distance_policy()},
    bootstrap=2000,
    citation="cardbench DESIGN.md; subject-level bootstrap, HD95 and MASD as in Maier-Hein et al., Metrics "
             "Reloaded, Nat Methods 2024;21:195; ASSD as in Heimann et al., IEEE TMI 2009;28:1251",
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (CARDBENCH_V1, ANKENBRAND2021)}
DEFAULT_PROTOCOL = CARDBENCH_V1.name


def get_protocol(name: "str | Protocol") -> Protocol:
    """Return a protocol by name.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol '{name}'; use one of {', '.join(PROTOCOLS)}") from None
