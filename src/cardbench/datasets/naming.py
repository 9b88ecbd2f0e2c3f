"""Case names: how a mask file's name maps to a (subject, frame, slice) case key.

Recognised names (``FF``/``SSS`` are decimal integers of any width):

======================================================  =========================================
pattern                                                 source
======================================================  =========================================
``<subject>_frame<FF>.nii[.gz]``                        cardbench standard layout (docs/datasets.md),
                                                        also ACDC (``patient001_frame01``)
``<anything>.nii[.gz]``                                 any other NIfTI: the stem is the subject,
                                                        the frame is unknown
``<subject>_frame<FF>.nrrd``, ``<anything>.nrrd``        NRRD volumes, named like NIfTI
``<subject>_slice<SSS>_frame<FFF>[-mask].png``          the seed's 7T masks (Ankenbrand 2021)
``<subject>-frame<FFF>-slice<SSS>[-mask].png``          the seed's Kaggle manual masks
======================================================  =========================================

Each format parses its own names (:mod:`cardbench.datasets.formats`); the patterns live here.
Matching between a submission and a reference uses the parsed key, never the folder a file is in,
so a flat folder and a nested ``<subject>/`` layout are both accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")

_NIFTI_FRAME = re.compile(r"^(?P<subject>.+?)_frame(?P<frame>[0-9]+)$")
_PNG_SEED = re.compile(r"^(?P<subject>.+?)_slice(?P<slice>[0-9]+)_frame(?P<frame>[0-9]+)(?:-mask)?$")
_PNG_KAGGLE = re.compile(r"^(?P<subject>.+?)-frame(?P<frame>[0-9]+)-slice(?P<slice>[0-9]+)(?:-mask)?$")


@dataclass(frozen=True)
class CaseKey:
    """Identity of one reference case.

    Attributes:
        subject: subject (patient, volunteer) identifier as a string.
        frame: cardiac frame (phase) index as written in the file name, or None when unknown.
        slice: slice index for a 2D image, or None for a 3D volume (all slices of the frame).
    """

    subject: str
    frame: int | None = None
    slice: int | None = None

    def _order(self) -> tuple:
        return (self.subject, -1 if self.frame is None else self.frame, -1 if self.slice is None else self.slice)

    def __lt__(self, other: "CaseKey") -> bool:
        """Order by subject, frame, slice (unknown frame/slice first)."""
        return self._order() < other._order()

    @property
    def volume(self) -> "CaseKey":
        """The (subject, frame) key of the volume this case belongs to."""
        return CaseKey(self.subject, self.frame, None)

    def __str__(self) -> str:
        s = self.subject
        if self.slice is not None:
            s += f"_slice{self.slice:03d}"
        if self.frame is not None:
            s += f"_frame{self.frame:03d}" if self.slice is not None else f"_frame{self.frame:02d}"
        return s


def strip_nifti_suffix(name: str) -> str | None:
    """Return ``name`` without ``.nii``/``.nii.gz`` (case-insensitive), or None if not NIfTI."""
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return None


def mask_format(path: str | Path) -> str | None:
    """The registered mask format of a file name (``"nifti"``, ``"png"``, ``"nrrd"``) or None (not a
    mask file); see :mod:`cardbench.datasets.formats`."""
    from cardbench.datasets.formats import format_for

    fmt = format_for(path)
    return fmt.name if fmt is not None else None


def parse_case_name(path: str | Path) -> CaseKey:
    """Parse a mask file name into a :class:`CaseKey` (by the file's registered format).

    Raises:
        ValueError: a PNG whose name follows neither of the seed's namings, or a file that is no
            registered mask format; the message names the file and the accepted patterns.
    """
    from cardbench.datasets.formats import parse_case_name as _parse

    return _parse(path)


def png_name(key: CaseKey, style: str = "seed") -> str:
    """File name of a 2D mask in the seed's 7T (``seed``) or Kaggle (``kaggle``) naming.

    Raises:
        ValueError: the key has no frame or slice, or an unknown style.
    """
    if key.frame is None or key.slice is None:
        raise ValueError(f"{key}: a PNG name needs both frame and slice")
    if style == "seed":
        return f"{key.subject}_slice{key.slice:03d}_frame{key.frame:03d}-mask.png"
    if style == "kaggle":
        return f"{key.subject}-frame{key.frame:03d}-slice{key.slice:03d}.png"
    raise ValueError(f"unknown PNG naming style '{style}' (use seed or kaggle)")


def nifti_name(key: CaseKey) -> str:
    """File name of a 3D label volume in the standard layout: ``<subject>_frame<FF>.nii.gz``."""
    if key.frame is None:
        return f"{key.subject}.nii.gz"
    return f"{key.subject}_frame{key.frame:02d}.nii.gz"
