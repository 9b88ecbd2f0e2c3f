"""Datasets: readers, case naming, reference sets, dataset cards, download, splits, converters.

Imports without torch, streamlit or datalad.
"""

from cardbench.datasets.io import LabelImage, MaskReadError, read_mask
from cardbench.datasets.naming import CaseKey, parse_case_name
from cardbench.datasets.reference import Reference, ReferenceError, load_reference

__all__ = ["CaseKey", "LabelImage", "MaskReadError", "Reference", "ReferenceError", "load_reference",
           "parse_case_name", "read_mask"]
