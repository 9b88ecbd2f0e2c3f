"""NIfTI-1/2 label volumes (``.nii``, ``.nii.gz``), read with bounded memory and checked geometry.

Order of work, each step before the next one's cost:

1. on the file's first KiB and its size, before the rest is read (:meth:`NiftiFormat.check_head`):
   the magic bytes, gzip ``1f 8b`` for ``.gz``; ``sizeof_hdr`` 348 with magic ``n+1``/``ni1``
   (NIfTI-1) or 540 with ``n+2`` (NIfTI-2); then, for an uncompressed ``.nii``, the declared data
   size against the limits and the file's size against ``vox_offset`` + the declared data;
2. only the header is decompressed; its declared shape is compared with the reference's shape and
   its declared data size with :attr:`cardbench.limits.Limits.max_mask_bytes`;
3. the data is decompressed with a cap of exactly the declared size (a gzip that expands beyond
   it is refused, never allocated);
4. the geometry: the transform is the one the NIfTI standard says is best, the sform when
   ``sform_code > 0``, else the qform when ``qform_code > 0``, else the pixdim scaling (nibabel's
   ``get_best_affine``). Every element must be finite; the voxel spacing is ``pixdim[1:4]``
   and must equal the column norms of that transform within :data:`SPACING_RTOL` (a stale pixdim
   next to a correct sform is refused with both values); when sform and qform are both set and
   disagree by more than :data:`QFORM_SFORM_TOL` mm, a note names the one used.

Axis order: the array exactly as stored, ``(x, y, slice)`` (voxel axes i, j, k of the affine); a 2D
NIfTI becomes ``(x, y, 1)``, a 4D image with one volume is squeezed to 3D.
"""

from __future__ import annotations

import io
import logging
import struct
import threading
from pathlib import Path

import numpy as np

from cardbench._util import sha256_bytes
from cardbench.datasets.formats.base import (
    HEAD_BYTES, LabelImage, MaskFormat, MaskReadError, capped_gunzip, check_declared, integral,
)
from cardbench.datasets.naming import _NIFTI_FRAME, CaseKey
from cardbench.limits import Limits, get_limits

#: relative tolerance between pixdim and the column norms of the transform in use.
SPACING_RTOL = 1e-3
#: absolute tolerance (mm) on any element between qform and sform before a note is made.
QFORM_SFORM_TOL = 1e-2

_HEADER_BYTES = 540  # NIfTI-2 header; NIfTI-1 is 348 (+4 extension flag)
#: most bytes of header extensions before the data (vox_offset) accepted in a label mask.
_MAX_VOX_OFFSET = 16 * 1024 * 1024


_QUIET = threading.local()


class _QuietWhileReading(logging.Filter):
    """Drops nibabel's own header-repair messages (``pixdim[1,2,3] should be non-zero; setting 0 dims
    to 1`` on its ``nibabel.global`` logger) in the thread reading a mask: cardbench checks the header
    itself and reports a problem in its one line, with the header's values as stored."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "on", False)


_FILTER = _QuietWhileReading()


def _quiet_nibabel():
    """Context manager: nibabel's header-check log lines are dropped in this thread while it is open."""
    import contextlib

    logger = logging.getLogger("nibabel.global")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)

    @contextlib.contextmanager
    def cm():
        before = getattr(_QUIET, "on", False)
        _QUIET.on = True
        try:
            yield
        finally:
            _QUIET.on = before
    return cm()


def parse_volume_stem(stem: str) -> CaseKey:
    """Case key of a volume file name without suffix: ``<subject>_frame<FF>`` or just ``<subject>``."""
    m = _NIFTI_FRAME.match(stem)
    if m:
        return CaseKey(m["subject"], int(m["frame"]))
    return CaseKey(stem)


def _nifti_version(head: bytes) -> int | None:
    """1 or 2 from the first bytes of an uncompressed header, None when it is not NIfTI."""
    if len(head) >= 348:
        for e in "<>":
            (n,) = struct.unpack(e + "i", head[:4])
            if n == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
                return 1
            if n == 540 and head[4:8] == b"n+2\x00":
                return 2
    return None


def _shape3(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The array shape the reader returns for a declared data shape."""
    s = tuple(int(x) for x in shape)
    while len(s) > 3 and s[-1] == 1:
        s = s[:-1]
    if len(s) == 2:
        s = s + (1,)
    return s


def decode_bounded(fmt: "NiftiFormat", data: bytes, path: Path, declared_bytes, decode, *, noun: str = "mask",
                   check_header=None):
    """Decode NIfTI ``data`` within limits: the header is parsed from the first bytes (no image data
    decompressed yet), ``check_header(hdr)`` may refuse it, the image data must start within
    :data:`_MAX_VOX_OFFSET` bytes, ``declared_bytes(shape, dtype)`` checks the size the header
    declares against the limits (raising :class:`MaskReadError`) and returns it in bytes, a gzip is
    decompressed to at most header + that size (:func:`capped_gunzip`), a truncated file is refused,
    then ``decode(img, shape)`` turns nibabel's image into an array. Used by the mask reader
    (:meth:`NiftiFormat.read`) and the dashboard's image reader. Header layout: NIfTI-1 (``nifti1.h``)
    and NIfTI-2 (``nifti2.h``), read by nibabel.

    Returns:
        (nibabel image, its header as read from the file, declared shape, dtype, what ``decode``
        returned).

    Raises:
        MaskReadError: one line naming the file, the problem and the fix (``noun`` names what to
            re-export: ``mask`` or ``image``).
    """
    import nibabel as nib

    head = fmt._head(data, path)
    version = _nifti_version(head)
    if version is None:
        fmt.check_bytes(data, path)
    hcls, icls = (nib.Nifti1Header, nib.Nifti1Image) if version == 1 else (nib.Nifti2Header, nib.Nifti2Image)
    try:
        hdr = hcls.from_fileobj(io.BytesIO(head), check=False)
        shape = hdr.get_data_shape()
        dtype = hdr.get_data_dtype()
        offset = int(hdr.get_data_offset())
    except Exception as e:  # nibabel raises several types for bad headers
        raise MaskReadError(path, f"not a readable NIfTI header ({e})",
                            f"re-export the {noun} as NIfTI-1 (.nii.gz)") from e
    if check_header is not None:
        check_header(hdr)
    if offset > _MAX_VOX_OFFSET:
        raise MaskReadError(path, f"header puts the image data at byte {offset} (vox_offset), beyond "
                                  f"{_MAX_VOX_OFFSET} bytes of header extensions",
                            f"re-export the {noun} without header extensions")
    nbytes = declared_bytes(shape, dtype)
    raw = data
    if data[:2] == b"\x1f\x8b":
        raw = capped_gunzip(data, max(offset, 352) + nbytes, path,
                            what=f"its header declares (shape {tuple(int(x) for x in shape)}, {dtype})")
    if len(raw) < offset + nbytes:
        raise MaskReadError(path, f"image data truncated ({max(len(raw) - offset, 0)} of {nbytes} bytes)",
                            "re-export or re-copy the file")
    try:
        with _quiet_nibabel():  # nibabel repairs a zero pixdim with a log line; cardbench has its own
            img = icls.from_bytes(raw)
            out = decode(img, shape)
    except Exception as e:  # noqa: BLE001 - nibabel raises several types for bad files
        raise MaskReadError(path, f"not a readable NIfTI file ({e})", f"re-export the {noun} as NIfTI-1 (.nii.gz)") from e
    return img, hdr, shape, dtype, out


class NiftiFormat(MaskFormat):
    """NIfTI-1/2 label volumes, one file per frame ``(x, y, slice)``."""

    name = "nifti"
    suffixes = (".nii.gz", ".nii")
    dims = 3
    description = "NIfTI-1/2 volume (x, y, slice), spacing and affine from the header (sform, else qform)"

    def parse_case(self, stem: str, path: Path) -> CaseKey:
        return parse_volume_stem(stem)

    def _head(self, data: bytes, path: Path) -> bytes:
        if data[:2] == b"\x1f\x8b":
            import zlib

            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                head = d.decompress(data, _HEADER_BYTES)
            except zlib.error as e:
                raise MaskReadError(path, f"truncated or corrupt gzip ({e})",
                                    "re-export or re-copy the file; check that the upload finished") from e
            if len(head) < 348 and not d.eof:
                raise MaskReadError(path, "truncated or corrupt gzip (the stream ends inside the NIfTI header)",
                                    "re-export or re-copy the file; check that the upload finished")
            return head
        if path.name.lower().endswith(".gz"):
            raise MaskReadError(path, f"named .gz but not gzip-compressed (the content is {_what(data)})",
                                _gz_fix(data))
        return data[:_HEADER_BYTES]

    def check_bytes(self, data: bytes, path: Path) -> None:
        self._check_header(self._head(data, path), path)

    def _check_header(self, head: bytes, path: Path) -> None:
        if _nifti_version(head) is None:
            if len(head) < 348:
                raise MaskReadError(path, f"too short to be NIfTI ({len(head)} header bytes: a truncated file?)",
                                    "re-export or re-copy the file")
            raise self.not_this_format(head, path, "NIfTI (no NIfTI magic n+1/n+2 in its header)")

    def check_head(self, head: bytes, path: Path, size: int, limits: Limits) -> None:
        """The checks on the file's first bytes and its size, before the rest of the file is read:
        first the magic bytes, then, for an uncompressed file, the layout its header declares.

        Header layout (NIfTI-1: ``nifti1.h`` of the NIfTI-1 standard, https://nifti.nimh.nih.gov/nifti-1;
        NIfTI-2: ``nifti2.h``, https://nifti.nimh.nih.gov/pub/dist/doc/nifti2.h; read with nibabel's
        ``Nifti1Header`` / ``Nifti2Header``), byte offset and type of each field used, in either
        byte order:

        - ``sizeof_hdr``: NIfTI-1 at 0, int32 = 348; NIfTI-2 at 0, int32 = 540;
        - ``magic``: NIfTI-1 at 344, ``n+1\\0`` (single file) or ``ni1\\0``; NIfTI-2 at 4, ``n+2\\0``;
        - ``dim`` (``dim[0]`` = number of axes, then the size of each): NIfTI-1 at 40, int16[8];
          NIfTI-2 at 16, int64[8];
        - ``datatype`` (gives the bytes per voxel): NIfTI-1 at 70, int16; NIfTI-2 at 12, int16;
        - ``vox_offset`` (byte where the image data starts): NIfTI-1 at 108, float32; NIfTI-2 at
          168, int64.

        1. Magic bytes (what :meth:`check_bytes` refuses on the whole file, with the same message):
           an uncompressed file's header is in ``head``; of a gzip, the header is decompressed
           from ``head`` when it holds all of it. What the first bytes cannot decide (a corrupt
           gzip, a header not yet complete, zeros so far in a ``.gz`` that is no gzip) is left to
           :meth:`check_bytes` on the whole file.
        2. Layout of an uncompressed file (a compressed one is checked in :meth:`read`, where the
           declared size caps the decompression): the declared data ``prod(dim[1:dim[0]+1])``
           voxels x the item size of ``datatype`` must be within ``limits.max_mask_bytes``, and
           the file must be exactly ``vox_offset +`` that many bytes (single-file layout: header,
           extensions, then the image data to the end of the file), where ``vox_offset`` is taken
           as at least 352 (NIfTI-1) or 544 (NIfTI-2). A header nibabel cannot parse, or a
           ``vox_offset`` above the extension limit, is left to :meth:`read`, which names it.

        Args:
            head: the first :data:`HEAD_BYTES` bytes (the whole file when ``len(head) < HEAD_BYTES``).
            path: the file, for messages (a ``.gz`` name must hold gzip).
            size: the file's size in bytes.
            limits: the size limits (``max_mask_bytes``).

        Raises:
            MaskReadError: not NIfTI by its magic bytes (or a named ``.gz`` that is no gzip, or too
                short for a header), as :meth:`check_bytes`; the declared data is above
                ``limits.max_mask_bytes`` (the message of :func:`check_declared`); the file is
                shorter (truncated) or longer (trailing bytes) than its header declares, with both
                byte counts.
        """
        whole = len(head) < HEAD_BYTES
        if head[:2] == b"\x1f\x8b":  # gzip: magic of the decompressed header only
            if whole:
                self.check_bytes(head, path)
                return
            import zlib

            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = d.decompress(head, _HEADER_BYTES)
            except zlib.error:
                return  # the whole file's check names the error
            if d.eof or len(out) >= _HEADER_BYTES:
                self._check_header(out, path)
            return
        if not whole and path.name.lower().endswith(".gz") and not head.strip(b"\x00"):
            return  # zeros so far: whether the content is zeros only needs the rest of the file
        self.check_bytes(head, path)
        # the layout of an uncompressed header (its magic checked above)
        version = _nifti_version(head)
        if version is None:
            return  # not reached: check_bytes refused a header without NIfTI magic
        import nibabel as nib

        hcls = nib.Nifti1Header if version == 1 else nib.Nifti2Header
        try:
            hdr = hcls.from_fileobj(io.BytesIO(head[:_HEADER_BYTES]), check=False)
            shape = hdr.get_data_shape()
            itemsize = hdr.get_data_dtype().itemsize
            offset = int(hdr.get_data_offset())
        except Exception:  # nibabel raises several types for bad headers; :meth:`read` names the error
            return
        if offset > _MAX_VOX_OFFSET:
            return  # :meth:`read` refuses it with its own message
        s3 = _shape3(shape)
        nbytes = check_declared(path, s3, itemsize, None, limits)
        start = max(offset, 352 if version == 1 else 544)
        expected = start + nbytes
        what = (f"its header declares {expected} bytes (vox_offset {start} + shape "
                f"{tuple(int(x) for x in shape)} x {itemsize} bytes per voxel)")
        if size < expected:
            raise MaskReadError(path, f"image data truncated: the file has {size} bytes, {what}; "
                                      f"{max(size - start, 0)} of {nbytes} bytes of image data are there",
                                "re-export or re-copy the file; check that the upload finished")
        if size > expected:
            raise MaskReadError(path, f"{size - expected} bytes after the image data: the file has {size} bytes, "
                                      f"{what}", "re-export the mask (e.g. nibabel.save) so that the file is its "
                                                 "header and image data only; nothing may be appended to it")

    def read(self, path: Path, data: bytes, expected_shape=None, limits: Limits | None = None) -> LabelImage:
        lim = limits or get_limits()
        path = Path(path)
        digest = sha256_bytes(data)

        def declared(shape, dtype) -> int:
            s3 = _shape3(shape)
            return check_declared(path, s3, dtype.itemsize, expected_shape if len(s3) == 3 else None, lim)

        img, hdr, shape, dtype, arr = decode_bounded(
            self, data, path, declared, lambda im, shp: np.asanyarray(im.dataobj),
            check_header=lambda hdr: _check_unscaled(hdr, path))
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3:
            raise MaskReadError(path, f"expected a 3D label volume, got shape {arr.shape}",
                                "save one 3D file per frame (<subject>_frame<FF>.nii.gz)")
        arr, notes = integral(np.asarray(arr), path)
        affine, spacing, gnotes = nifti_geometry(img.header, path, raw_pixdim=hdr["pixdim"][1:4])
        return LabelImage(arr, path, self.name, digest, affine=affine, spacing=spacing,
                          source_dtype=str(img.get_data_dtype()), notes=notes + gnotes,
                          summary_notes=gnotes)


def _check_unscaled(hdr, path: Path) -> None:
    """Refuse a label mask whose header scales its values (``scl_slope``/``scl_inter``).

    nibabel applies ``value * scl_slope + scl_inter`` on reading (NIfTI-1 standard, nifti1.h: a slope
    of 0 means no scaling), so a mask stored with slope 2 would turn label 1 (LV) into 2 (MY). A label
    mask must store its labels as they are: the raw header fields are accepted when the slope is 0,
    1 or NaN and the intercept 0 or NaN (nibabel writes NaN for both by default).

    Raises:
        MaskReadError: any other slope or intercept, naming both values as stored.
    """
    try:
        slope = float(hdr["scl_slope"])
        inter = float(hdr["scl_inter"])
    except (KeyError, TypeError, ValueError):  # a header type without the fields: nothing to apply
        return
    slope_ok = slope != slope or slope in (0.0, 1.0)
    inter_ok = inter != inter or inter == 0.0
    if not (slope_ok and inter_ok):
        raise MaskReadError(path, f"header scales the stored values (scl_slope {slope:g}, scl_inter {inter:g}): "
                                  "labels must be stored unscaled",
                            "save the mask without scl_slope/scl_inter (nibabel: img.header.set_slope_inter(1, 0) "
                            "on an integer array, e.g. uint8)")


def _gz_fix(data: bytes) -> str:
    """The fix for a file named ``.gz`` that is not gzip, following what its content is."""
    if _nifti_version(data[:_HEADER_BYTES]) is not None:
        return "it is an uncompressed NIfTI: rename it to .nii, or gzip it"
    what = _what(data)
    named = {"a PNG image": ".png", "an NRRD file": ".nrrd"}
    if what in named:
        return (f"it is {what}, not NIfTI: name it {named[what]}, or save the mask as NIfTI (.nii.gz) where "
                "the reference is NIfTI")
    return (f"give a NIfTI file: the content is {what}, not a NIfTI image; save the mask as NIfTI-1 "
            "(e.g. nibabel.save(nibabel.Nifti1Image(mask, ref.affine), 'case.nii.gz'))")


def _what(data: bytes) -> str:
    """What a file's first bytes say it is, for messages; a NIfTI header (magic n+1/n+2) is named."""
    from cardbench.datasets.formats.base import _looks_like

    if _nifti_version(data[:_HEADER_BYTES]) is not None:
        return "an uncompressed NIfTI"
    return _looks_like(data)


def nifti_geometry(hdr, path: Path, raw_pixdim=None) -> tuple[np.ndarray, tuple[float, float, float], list[str]]:
    """Affine, spacing and notes of a NIfTI header, on finite, consistent values.

    Rule (NIfTI-1 standard, ``nifti1.h``; nibabel ``get_best_affine``): the sform when
    ``sform_code > 0``, else the qform when ``qform_code > 0``, else ``diag(pixdim)``.

    ``raw_pixdim``: ``pixdim[1:4]`` as stored in the file, before nibabel's repair of the header
    (a zero becomes 1, a negative value its absolute value); messages show these values.

    Returns:
        (4x4 affine in mm, RAS+; spacing ``pixdim[1:4]`` in mm per array axis; notes).

    Raises:
        MaskReadError: a non-finite value in the transform in use or in pixdim; pixdim that differs
            from the column norms of the transform by more than :data:`SPACING_RTOL` (both shown).
    """
    sform_code = int(hdr["sform_code"])
    qform_code = int(hdr["qform_code"])
    zooms = tuple(float(z) for z in hdr.get_zooms()[:3])
    ndim = len(zooms)
    zooms = zooms + (1.0,) * (3 - len(zooms))
    used = "sform" if sform_code > 0 else "qform" if qform_code > 0 else "pixdim"
    shown = zooms[:ndim] if raw_pixdim is None else tuple(float(x) for x in list(raw_pixdim)[:ndim])
    repaired = "" if raw_pixdim is None or np.allclose(shown, zooms[:ndim], equal_nan=True) else \
        " as stored in the header (a zero is no spacing)" if 0.0 in shown else " as stored in the header"
    if not all(np.isfinite(zooms)):
        raise MaskReadError(path, f"pixdim holds a non-finite value {shown}", "write the mask with the reference's "
                                                                             "header (copy its affine)")
    if used == "sform":
        aff = np.asarray(hdr.get_sform(), dtype=float)
    else:
        with np.errstate(all="ignore"):
            try:
                aff = np.asarray(hdr.get_best_affine(), dtype=float)
            except Exception as e:
                raise MaskReadError(path, f"{used} affine cannot be computed ({e})",
                                    "write the mask with the reference's header (copy its affine)") from e
    if not np.all(np.isfinite(aff)):
        raise MaskReadError(path, f"{used} transform (the affine) holds NaN or infinite values: "
                                  f"{tuple(tuple(float(x) for x in row) for row in aff[:3])}",
                            "write the mask with the reference's affine (e.g. nibabel.Nifti1Image(pred, "
                            "ref_img.affine, ref_img.header))")
    norms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    z = np.asarray(zooms)
    if not np.allclose(z[:ndim], norms[:ndim], rtol=SPACING_RTOL, atol=0):
        raise MaskReadError(path, f"pixdim spacing {shown} mm{repaired} disagrees with the "
                                  f"{used} transform's voxel size {tuple(round(float(x), 6) for x in norms[:ndim])} mm",
                            "rewrite the header so pixdim matches the affine (nibabel: img.set_sform(img.affine); "
                            "img.header.set_zooms(...)); cardbench will not guess which one is right")
    notes = []
    if sform_code > 0 and qform_code > 0:
        with np.errstate(all="ignore"):
            q = np.asarray(hdr.get_qform(), dtype=float)
        d = float(np.max(np.abs(q - aff))) if np.all(np.isfinite(q)) else float("inf")
        if d > QFORM_SFORM_TOL:
            notes.append(f"{path.name}: qform and sform differ by up to {d:.6g} mm; the sform (sform_code "
                         f"{sform_code}) was used, as the NIfTI standard says")
    return aff, zooms, notes
