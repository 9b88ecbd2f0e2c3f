"""Mask formats: the one place where file formats are registered.

=========  ======================  =====  ===================================================
name       suffixes                dims   module
=========  ======================  =====  ===================================================
nifti      ``.nii.gz``, ``.nii``   3      :mod:`cardbench.datasets.formats.nifti`
png        ``.png``                2      :mod:`cardbench.datasets.formats.png`
nrrd       ``.nrrd``               3      :mod:`cardbench.datasets.formats.nrrd` (``[nrrd]`` extra)
=========  ======================  =====  ===================================================

The seed's confusion tables are detected by :mod:`cardbench.datasets.formats.confusion`.

Everything that lists, names or reads mask files goes through this registry: reference and
submission listing (:func:`format_for`), case keys (:func:`parse_case_name`), reading
(:func:`read_mask`) and the messages that list the accepted suffixes (:func:`suffix_list`). A new
format is one module with a :class:`~cardbench.datasets.formats.base.MaskFormat` subclass and one
:func:`register` call here (docs/extending.md).
"""

from __future__ import annotations

from pathlib import Path

from cardbench.datasets.formats.base import LabelImage, MaskFormat, MaskReadError, read_file_bytes
from cardbench.datasets.formats.nifti import NiftiFormat
from cardbench.datasets.formats.nrrd import NrrdFormat
from cardbench.datasets.formats.png import PngFormat
from cardbench.datasets.naming import CaseKey
from cardbench.limits import Limits, get_limits

#: name -> format, in lookup order.
FORMATS: dict[str, MaskFormat] = {}


def register(fmt: MaskFormat) -> MaskFormat:
    """Add a format to the registry (its name must be new, its suffixes unused).

    Raises:
        ValueError: the name or a suffix is taken.
    """
    if fmt.name in FORMATS:
        raise ValueError(f"mask format '{fmt.name}' is already registered")
    taken = {s for f in FORMATS.values() for s in f.suffixes}
    clash = sorted(set(fmt.suffixes) & taken)
    if clash:
        raise ValueError(f"mask format '{fmt.name}': suffixes {clash} are already registered")
    FORMATS[fmt.name] = fmt
    return fmt


for _f in (NiftiFormat(), PngFormat(), NrrdFormat()):
    register(_f)


def format_for(path: str | Path) -> MaskFormat | None:
    """The format a file name belongs to (by suffix, case-insensitive), or None (not a mask)."""
    name = Path(path).name
    best = None
    for f in FORMATS.values():
        for s in f.suffixes:
            if name.lower().endswith(s) and (best is None or len(s) > best[1]):
                best = (f, len(s))
    return best[0] if best else None


def suffix_list() -> str:
    """``.nii.gz, .nii, .png or .nrrd``: the accepted suffixes, for messages."""
    sufs = [s for f in FORMATS.values() for s in f.suffixes]
    return ", ".join(sufs[:-1]) + " or " + sufs[-1]


def parse_case_name(path: str | Path) -> CaseKey:
    """Parse a mask file name into a :class:`~cardbench.datasets.naming.CaseKey`.

    Raises:
        ValueError: a name the format does not recognise, or a file that is no registered format;
            the message names the file and the accepted patterns.
    """
    fmt = format_for(path)
    if fmt is None:
        raise ValueError(f"{path}: not a mask file; use {suffix_list()}")
    return fmt.parse_case(fmt.strip_suffix(Path(path).name), Path(path))


def read_mask(path: str | Path, expected_shape: tuple[int, ...] | None = None,
              limits: Limits | None = None) -> LabelImage:
    """Read a label mask in any registered format, chosen by name and checked by its bytes.

    Args:
        path: the file.
        expected_shape: the reference's array shape, compared with the header before decoding.
        limits: size limits (default :func:`cardbench.limits.get_limits`).

    Returns:
        :class:`LabelImage` (axis order and geometry as documented by the format's module).

    Raises:
        MaskReadError: not a registered format, content not retrieved (git-annex), empty file,
            magic bytes of another format, above a limit, or any problem the reader reports.
    """
    path = Path(path)
    fmt = format_for(path)
    if fmt is None:
        raise MaskReadError(path, "not a mask file", f"use {suffix_list()}")
    limits = limits or get_limits()
    data = read_file_bytes(path, limits, check_head=fmt.check_head)
    fmt.check_bytes(data, path)
    return fmt.read(path, data, expected_shape=expected_shape, limits=limits)


__all__ = ["FORMATS", "LabelImage", "MaskFormat", "MaskReadError", "format_for", "parse_case_name", "read_mask",
           "read_file_bytes", "register", "suffix_list"]
