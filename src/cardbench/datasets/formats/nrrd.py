"""NRRD label volumes (``.nrrd``, attached header), read with pynrrd (the ``[nrrd]`` extra).

The worked example of a new format (docs/extending.md): one module and its tests.

- Magic: the file starts with ``NRRD000`` (``NRRD0001`` .. ``NRRD0005``).
- Geometry: ``space directions`` (one vector per axis, in the ``space`` of the header) and
  ``space origin`` give the voxel-to-mm affine, converted to RAS+ like NIfTI's (``left-posterior-
  superior`` flips x and y, ``left-anterior-superior`` flips x); the spacing of each axis is the
  norm of its direction vector. A header with only ``spacings`` gets ``diag(spacings)`` at origin
  0. Every value must be finite.
- Limits: the declared ``sizes`` x type size is compared with the reference's shape and
  :attr:`cardbench.limits.Limits.max_mask_bytes` before any data is read; gzip data is
  decompressed with that cap. Supported encodings: ``raw`` and ``gzip`` (what pynrrd and 3D Slicer
  write); a detached header (``data file``) is refused: a submission file never makes cardbench
  read another file.

Axis order: pynrrd's Fortran order, ``(x, y, slice)`` = the order of ``sizes``, the same as NIfTI's
``(i, j, k)``. Names follow the volume naming (``<subject>_frame<FF>.nrrd``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cardbench._util import sha256_bytes
from cardbench.datasets.formats.base import (
    LabelImage, MaskFormat, MaskReadError, capped_gunzip, check_declared, integral,
)
from cardbench.datasets.formats.nifti import parse_volume_stem
from cardbench.datasets.naming import CaseKey
from cardbench.limits import Limits, get_limits

#: sign flips from a header's ``space`` to RAS+ (x, y, z).
_TO_RAS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "scanner-xyz": (1, 1, 1),
}


class NrrdFormat(MaskFormat):
    """NRRD label volumes ``(x, y, slice)`` with attached header."""

    name = "nrrd"
    suffixes = (".nrrd",)
    dims = 3
    description = "NRRD volume (x, y, slice), affine from space directions + space origin (pynrrd)"

    def parse_case(self, stem: str, path: Path) -> CaseKey:
        return parse_volume_stem(stem)

    def check_head(self, head: bytes, path: Path, size: int, limits: Limits) -> None:
        """The magic bytes, before the rest is read (:meth:`~MaskFormat.check_magic_head`); ``size``
        and ``limits`` are not used: the declared size is checked in :meth:`read`."""
        self.check_magic_head(head, path)

    def check_bytes(self, data: bytes, path: Path) -> None:
        if not data.startswith(b"NRRD000"):
            raise self.not_this_format(data, path, "NRRD (no NRRD000x magic)")

    def read(self, path: Path, data: bytes, expected_shape=None, limits: Limits | None = None) -> LabelImage:
        try:
            import nrrd
        except ImportError:  # pragma: no cover - the [nrrd] extra is part of the test environment
            raise MaskReadError(path, "reading NRRD needs the pynrrd package",
                                "pip install 'cardbench[nrrd]' (or pip install pynrrd)") from None
        lim = limits or get_limits()
        path = Path(path)
        self.check_bytes(data, path)
        digest = sha256_bytes(data)
        fh = io.BytesIO(data)
        try:
            hdr = nrrd.read_header(fh)
        except Exception as e:  # pynrrd raises NRRDError and ValueError for bad headers
            raise MaskReadError(path, f"not a readable NRRD header ({e})", "re-export the mask as NRRD") from e
        if "data file" in hdr or "datafile" in hdr:
            raise MaskReadError(path, "detached NRRD header (data file field): a submission may not point at "
                                      "other files", "save the mask with an attached header (.nrrd, one file)")
        enc = str(hdr.get("encoding", "")).lower()
        if enc not in ("raw", "gzip", "gz"):
            raise MaskReadError(path, f"NRRD encoding '{enc}' not supported", "save with encoding gzip or raw")
        if int(hdr.get("byte skip", hdr.get("byteskip", 0))) or int(hdr.get("line skip", hdr.get("lineskip", 0))):
            raise MaskReadError(path, "NRRD byte skip / line skip not supported", "save the mask with pynrrd or Slicer")
        sizes = tuple(int(s) for s in np.asarray(hdr["sizes"]).ravel())
        if len(sizes) not in (2, 3):
            raise MaskReadError(path, f"expected a 3D label volume, got sizes {sizes}",
                                "save one 3D file per frame (<subject>_frame<FF>.nrrd)")
        shape3 = sizes if len(sizes) == 3 else sizes + (1,)
        try:
            dtype = nrrd.reader._determine_datatype(hdr)
        except Exception as e:
            raise MaskReadError(path, f"NRRD type not understood ({e})", "save the mask as uint8") from e
        nbytes = check_declared(path, shape3, dtype.itemsize, expected_shape, lim)
        body = data[fh.tell():]
        if enc in ("gzip", "gz"):
            body = capped_gunzip(body, nbytes, path, what=f"its header declares (sizes {sizes}, {dtype})")
        if len(body) < nbytes:
            raise MaskReadError(path, f"image data truncated ({len(body)} of {nbytes} bytes)",
                                "re-export or re-copy the file")
        raw_hdr = dict(hdr, encoding="raw")
        try:
            arr = nrrd.read_data(raw_hdr, io.BytesIO(body[:nbytes]), index_order="F")
        except Exception as e:
            raise MaskReadError(path, f"NRRD data cannot be read ({e})", "re-export the mask") from e
        arr = np.asarray(arr).reshape(shape3, order="A")
        arr, notes = integral(arr, path)
        affine, spacing = nrrd_geometry(hdr, len(sizes), path)
        return LabelImage(arr, path, self.name, digest, affine=affine, spacing=spacing,
                          source_dtype=f"NRRD {hdr.get('type')}", notes=notes)


def nrrd_geometry(hdr: dict, ndim: int, path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """RAS+ affine and spacing (mm per array axis) of an NRRD header.

    Raises:
        MaskReadError: no geometry at all, a ``space`` cardbench does not convert, or a
            non-finite value.
    """
    if "space directions" in hdr:
        dirs = np.asarray(hdr["space directions"], dtype=float)
        space = str(hdr.get("space", "right-anterior-superior")).lower()
        if space not in _TO_RAS:
            raise MaskReadError(path, f"NRRD space '{space}' not supported",
                                f"use one of {', '.join(k for k in _TO_RAS if '-' in k)}")
        if dirs.shape[0] != ndim or dirs.shape[1] != 3:
            raise MaskReadError(path, f"space directions of shape {dirs.shape}, expected ({ndim}, 3)",
                                "give one 3D direction per axis")
        origin = np.asarray(hdr.get("space origin", np.zeros(3)), dtype=float).ravel()
        flip = np.asarray(_TO_RAS[space], dtype=float)
        aff = np.eye(4)
        aff[:3, :ndim] = (dirs * flip[None, :]).T
        if ndim == 2:
            aff[:3, 2] = np.cross(aff[:3, 0], aff[:3, 1]) / max(np.linalg.norm(np.cross(aff[:3, 0], aff[:3, 1])), 1e-12)
        aff[:3, 3] = origin[:3] * flip
    elif "spacings" in hdr:
        sp = np.asarray(hdr["spacings"], dtype=float).ravel()
        aff = np.diag(np.append(np.append(sp, [1.0] * (3 - len(sp))), 1.0))
    else:
        raise MaskReadError(path, "NRRD header has neither space directions nor spacings: the voxel size is unknown",
                            "write space directions and space origin (copy the reference's geometry)")
    if not np.all(np.isfinite(aff)):
        raise MaskReadError(path, "NRRD space directions / origin hold NaN or infinite values",
                            "write the reference's geometry into the header")
    spacing = tuple(float(x) for x in np.sqrt((aff[:3, :3] ** 2).sum(axis=0)))
    return aff, spacing
