"""Reproductions of published studies with cardbench's generic scoring.

Each study is one subpackage (``cardbench.reproductions.<study>``) holding what is specific to
that paper: its published numbers, the lookups of its data (ED/ES frames, observers) and the
recomputation of its tables. Dependencies flow one way: reproductions -> benchmark -> datasets;
nothing in :mod:`cardbench.benchmark` imports this package.

- :mod:`cardbench.reproductions.ankenbrand2021`: Ankenbrand et al., Magn Reson Med 2021;86:2179
  (doi:10.1002/mrm.28822), the 7T test-set Dice table and the Kaggle volume track.
"""

from cardbench.reproductions.ankenbrand2021 import reproduce_ankenbrand2021, score_label_quality

__all__ = ["reproduce_ankenbrand2021", "score_label_quality"]
