"""cardbench: an open benchmark and data-release toolkit for cardiac cine MRI segmentation.

Subpackages (dependencies flow one way: dashboard -> benchmark -> datasets):

- :mod:`cardbench.datasets`  dataset cards, download, splits, converters, readers
- :mod:`cardbench.benchmark` validation, metrics, protocols, scoring, reports
- :mod:`cardbench.baselines` segmentation-models-pytorch U-Net baselines (needs ``[baselines]``)
- :mod:`cardbench.dashboard` Streamlit leaderboard (needs ``[dashboard]``)

Seed paper: Ankenbrand MJ et al., Deep learning-based cardiac cine segmentation: Transfer learning
application to 7T ultrahigh-field MRI. Magn Reson Med 2021;86:2179-2191, doi:10.1002/mrm.28822.
"""

from cardbench._version import __version__

__all__ = ["__version__"]
