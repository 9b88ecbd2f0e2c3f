"""The seed paper's published leaderboard entries, registered as pre-fill sources.

Importing this module registers two sources with
:func:`cardbench.benchmark.leaderboard.register_prefill_source`; :meth:`Leaderboard.prefill
<cardbench.benchmark.leaderboard.Leaderboard.prefill>` computes them on first use of a folder with
cardbench's own scoring from the published files embedded in the package (never typed-in numbers):

- ``ankenbrand2021-7t``: the seven 7T test-set comparisons, from the per-image confusion tables,
  under both protocols;
- ``ankenbrand2021-kaggle-labels``: the public Kaggle labels (ukbb_cardiac) against the seed's 816
  manual masks, under both protocols.
"""

from __future__ import annotations

from typing import Iterator

from cardbench.benchmark.leaderboard import register_prefill_source
from cardbench.benchmark.results import ScoreResult

DOI_URL = "https://doi.org/10.1002/mrm.28822"


def seven_tesla_entries() -> Iterator[tuple[ScoreResult, str, dict]]:
    """``(result, entry name, submission.yaml fields)`` of the seven 7T comparisons x both protocols."""
    from cardbench.reproductions.ankenbrand2021.seven_tesla import PUBLISHED, reproduce_ankenbrand2021

    _, results = reproduce_ankenbrand2021()
    comps = {c.key: c for c in PUBLISHED}
    for (key, _proto), res in results.items():
        c = comps[key]
        yield res, key, {
            "label": c.label, "team": "Ankenbrand et al. 2021", "method": res.summary["submission"].get("method"),
            "url": DOI_URL,
            "published_values": {"dice_LV": c.published_lv, "dice_MY": c.published_my,
                                  "protocol": "ankenbrand2021", "split": "test"},
        }


def label_quality_entries() -> Iterator[tuple[ScoreResult, str, dict]]:
    """``(result, entry name, submission.yaml fields)`` of the Kaggle label-quality check x both protocols."""
    from cardbench.reproductions.ankenbrand2021.seven_tesla import score_label_quality

    for proto in ("ankenbrand2021", "cardbench-v1"):
        res = score_label_quality(proto)
        yield res, "ukbb_cardiac-labels", {
            "label": "public Kaggle labels (ukbb_cardiac) vs 816 manual masks", "team": "Ankenbrand et al. 2021",
            "method": "ukbb_cardiac", "url": DOI_URL}


register_prefill_source(
    "ankenbrand2021-7t", "Ankenbrand et al. 2021: the seven 7T test-set comparisons, scored from the published "
    "per-image confusion tables under both protocols", seven_tesla_entries)
register_prefill_source(
    "ankenbrand2021-kaggle-labels", "public Kaggle labels (ukbb_cardiac) against the seed's 816 manual masks, "
    "both protocols", label_quality_entries)
