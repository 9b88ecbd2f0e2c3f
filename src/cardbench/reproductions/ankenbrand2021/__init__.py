"""Ankenbrand MJ et al., Deep learning-based cardiac cine segmentation: Transfer learning
application to 7T ultrahigh-field MRI. Magn Reson Med 2021;86:2179-2191, doi:10.1002/mrm.28822.

- :mod:`~cardbench.reproductions.ankenbrand2021.seven_tesla`: the 7T test-set Dice table from the
  published per-image confusion tables, and the Kaggle label-quality check;
- :mod:`~cardbench.reproductions.ankenbrand2021.kaggle_volumes`: the Kaggle volume track (EDV/ESV/EF
  against the Kaggle reference volumes);
- :mod:`~cardbench.reproductions.ankenbrand2021.prefill`: the paper's entries as leaderboard pre-fill
  sources.

Importing this package registers the seed's reference observers (confusion tables against them land
in the paper's benchmarks, with the 7T ED/ES frames) and the leaderboard pre-fill sources.
"""

from cardbench.reproductions.ankenbrand2021.seven_tesla import (
    PUBLISHED, esed_phases, reproduce_ankenbrand2021, score_label_quality, score_published,
)

from cardbench.reproductions.ankenbrand2021 import prefill as _prefill  # noqa: E402,F401  (registers)

__all__ = ["PUBLISHED", "esed_phases", "reproduce_ankenbrand2021", "score_label_quality", "score_published"]
