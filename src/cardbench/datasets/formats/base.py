"""The mask-format interface, and the checks every format shares.

A mask format is one subclass of :class:`MaskFormat` registered in :mod:`cardbench.datasets.formats`:
its file-name suffixes, how a case key is parsed from the name, a check of the file's bytes
(formats are what their bytes say, not what their name says) and a reader that returns a
:class:`LabelImage` with the geometry. Before a format sees a file, :func:`read_file_bytes` applies
the checks common to every format: the file exists and is readable, it is not a git-annex pointer
or a dangling annex link (content not retrieved), it is not empty, and it is below the size limit
(:mod:`cardbench.limits`); then it hands the file's first :data:`HEAD_BYTES` bytes and its size to
the format's one early hook, :meth:`MaskFormat.check_head` (magic bytes, declared size against the
limits, file size against the header), before the rest of the file is read.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from cardbench.datasets.naming import CaseKey
from cardbench.limits import Limits, get_limits


class MaskReadError(ValueError):
    """A mask file cannot be read faithfully.

    Attributes:
        path: the file.
        problem: what is wrong, in words.
        fix: what the user should do.
        kind: the problem's category (``unreadable``; ``shape`` when a header's declared shape
            differs from the reference's; ``not_retrieved`` for git-annex content not present).
    """

    def __init__(self, path, problem: str, fix: str, kind: str = "unreadable"):
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        self.kind = kind
        super().__init__(f"{path}: {problem}; {fix}")


@dataclass
class LabelImage:
    """A label mask as read from disk.

    Attributes:
        array: integer array of raw label values; ``(x, y, slice)`` for volumes (NIfTI, NRRD),
            ``(row, col)`` for PNG.
        path: the file it came from.
        fmt: the format's name (``"nifti"``, ``"png"``, ``"nrrd"``).
        sha256: hex sha256 of the file's bytes.
        affine: 4x4 voxel-to-mm affine (RAS+) or None (PNG).
        spacing: voxel size in mm per array axis, or None (PNG).
        source_dtype: the dtype stored in the file (for messages).
        notes: non-fatal remarks made while reading (e.g. a float mask with integral values).
        summary_notes: remarks that belong in the result's notes (e.g. which of a NIfTI's qform
            and sform was used when they disagree).
    """

    array: np.ndarray
    path: Path
    fmt: str
    sha256: str
    affine: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    source_dtype: str = ""
    notes: list[str] = field(default_factory=list)
    summary_notes: list[str] = field(default_factory=list)


#: what a git-annex pointer file holds instead of the content: one line naming an annex object
#: (``/annex/objects/SHA256E-s123--ab...nii.gz`` for an unlocked file, ``../.git/annex/objects/...`` for a
#: link copied as text)
_ANNEX_POINTER = re.compile(rb"^[\w./-]*annex/objects/\S+$")


def annex_fix(path: Path) -> str:
    return f"run `datalad get {path}` (or `git annex get {path}`) in the dataset, then score again"


#: bytes read first, before the rest of a file: enough for a git-annex pointer and every format's header
#: (NIfTI-2: 540 bytes, PNG signature + IHDR: 33 bytes, NRRD magic: 8 bytes)
HEAD_BYTES = 1024


def special_file_kind(path: str | Path) -> str:
    """What a path that is not a regular file is, for messages: ``a FIFO (named pipe)``, ``a character
    device``, ``a symbolic link to a character device (/dev/zero)``... (``stat``, following links)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot be examined: {e.strerror}"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "a special file")
    if path.is_symlink():
        return f"a symbolic link to {kind}: {os.readlink(path)}"
    return kind


def read_file_bytes(path: str | Path, limits: Limits | None = None, check_head=None) -> bytes:
    """The bytes of a mask file, after the checks every format shares.

    Args:
        path: the file.
        limits: the size limits (default :func:`cardbench.limits.get_limits`).
        check_head: optional ``check_head(head, path, size, limits)`` (e.g. :meth:`MaskFormat.check_head`),
            called with the file's first :data:`HEAD_BYTES` bytes (the whole file when it is shorter),
            the file's size in bytes (``os.stat``) and the limits, before the rest is read: content of
            another format, a header that declares more data than the limits, or a file size that
            differs from what the header declares is refused after reading the first KiB only, never
            the whole file (up to ``max_file_bytes``).

    Raises:
        MaskReadError: a dangling symlink (an annex link whose content is not retrieved, or any
            other broken link), a git-annex pointer file, an empty file, a file above
            ``limits.max_file_bytes``, a read error, or whatever ``check_head`` raises.
    """
    path = Path(path)
    lim = limits or get_limits()
    if path.is_symlink() and not path.exists():
        target = os.readlink(path)
        if "annex/objects" in target:
            raise MaskReadError(path, "content not retrieved: a git-annex link whose content is not in this "
                                      "clone", annex_fix(path), "not_retrieved")
        raise MaskReadError(path, f"broken symbolic link (points to {target}, which does not exist)",
                            "copy the file itself, or fix the link")
    try:
        st = path.stat()
        size = st.st_size
    except OSError as e:
        raise MaskReadError(path, f"cannot read file ({e.strerror})", "check the path and permissions") from e
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, a device (/dev/zero) never ends
        raise MaskReadError(path, f"not a regular file: {special_file_kind(path)}",
                            "put the mask file itself in its place", "not_regular")
    if size == 0:
        raise MaskReadError(path, "empty file (0 bytes)", "re-export or re-copy the file; check that the upload "
                                                          "or download finished")
    if size > lim.max_file_bytes:
        raise MaskReadError(path, f"file of {size} bytes is above the limit of {lim.max_file_bytes} bytes",
                            "check the file; raise CARDBENCH_MAX_FILE_BYTES only if it is genuine")
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            whole = len(head) < HEAD_BYTES
            if whole and _ANNEX_POINTER.match(head.strip()):
                raise MaskReadError(path, "content not retrieved: the file is a git-annex pointer "
                                          f"({head.strip()[:60].decode('ascii', 'replace')}...), not the mask",
                                    annex_fix(path), "not_retrieved")
            if check_head is not None:
                check_head(head, path, size, lim)
            if whole:
                return head
            # at most the size taken before the read, plus one byte (a file growing meanwhile): a read of
            # max_file_bytes would allocate that buffer (1 GiB by default) before reading a small file
            return head + fh.read(min(lim.max_file_bytes, size) + 1 - len(head))
    except OSError as e:
        raise MaskReadError(path, f"cannot read file ({e.strerror})", "check the path and permissions") from e


def _looks_like(data: bytes) -> str:
    """A name for what a file's first bytes say it is (for messages)."""
    sigs = [(b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
            (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
            (b"\x1f\x8b", "gzip-compressed data"), (b"NRRD000", "an NRRD file"), (b"PK\x03\x04", "a zip archive"),
            (b"DICM", "DICOM"), (b"\x93NUMPY", "a NumPy .npy file"), (b"%PDF", "a PDF")]
    for sig, what in sigs:
        if data.startswith(sig):
            return what
    if len(data) > 132 and data[128:132] == b"DICM":
        return "DICOM"
    if not data.strip(b"\x00"):
        return "zeros only (no header at all)"
    head = data[:64]
    if head.isascii() and all(b >= 32 or b in (9, 10, 13) for b in head):  # printable ASCII: NUL is no text
        return "text"
    return "unknown binary data"


def capped_gunzip(data: bytes, cap: int, path: Path, what: str = "its header declares") -> bytes:
    """Decompress gzip ``data`` (one or more members), never producing more than ``cap`` bytes.

    Args:
        data: the compressed bytes (starting with the gzip magic ``1f 8b``).
        cap: most bytes allowed out; the decompressor stops there, so memory stays bounded.
        path: the file, for messages.
        what: what the cap stands for, for the message.

    Raises:
        MaskReadError: corrupt or truncated stream, or output that would exceed ``cap``.
    """
    out = []
    total = 0
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, cap - total + 1)
        except zlib.error as e:
            raise MaskReadError(path, f"truncated or corrupt gzip ({e})",
                                "re-export or re-copy the file; check that the upload finished") from e
        total += len(chunk)
        out.append(chunk)
        if total > cap:
            raise MaskReadError(path, f"gzip data decompresses to more than the {cap} bytes {what}; a "
                                      "decompression bomb or a corrupt file", "re-export the file")
        if not d.eof:
            if d.unconsumed_tail:
                raise MaskReadError(path, f"gzip data decompresses to more than the {cap} bytes {what}; a "
                                          "decompression bomb or a corrupt file", "re-export the file")
            raise MaskReadError(path, "truncated or corrupt gzip (end of stream missing)",
                                "re-export or re-copy the file; check that the upload finished")
        rest = d.unused_data
        if rest and not rest.startswith(b"\x1f\x8b"):
            break  # trailing garbage after the last member is ignored, as gzip(1) does
    return b"".join(out)


#: suffixes of a compressed file; the suffix before one of them is part of the name's suffix (``.nii.gz``)
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".z", ".lz4")


class MaskFormat:
    """One mask file format.

    Class attributes:
        name: short name (``nifti``); the ``fmt`` of the images it reads.
        suffixes: file-name endings, lower case, longest first (``(".nii.gz", ".nii")``).
        dims: 3 for volume formats (one file = one frame ``(x, y, slice)``), 2 for image formats
            (one file = one slice ``(row, col)``).
        description: one line for docs and messages.
    """

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    dims: ClassVar[int] = 3
    description: ClassVar[str] = ""

    def strip_suffix(self, name: str) -> str | None:
        """``name`` without this format's suffix (case-insensitive), or None if it has none."""
        low = name.lower()
        for suf in self.suffixes:
            if low.endswith(suf):
                return name[: -len(suf)]
        return None

    def suffix_of(self, path: str | Path) -> str:
        """The suffix ``path`` is named with, as written: this format's longest matching suffix
        (``.nii.gz``, not ``.nii``), else the last suffix with the one before it when the last is a
        compression suffix (``.tar.gz``), else the last suffix (for messages)."""
        name = Path(path).name
        low = name.lower()
        for suf in self.suffixes:
            if low.endswith(suf):
                return name[len(name) - len(suf):]
        sufs = Path(name).suffixes
        if len(sufs) >= 2 and sufs[-1].lower() in _COMPRESSION_SUFFIXES:
            return "".join(sufs[-2:])
        return sufs[-1] if sufs else name

    def parse_case(self, stem: str, path: Path) -> CaseKey:
        """The case key of a file from its name without suffix.

        Raises:
            ValueError: the name follows none of the format's namings (message: file and patterns).
        """
        raise NotImplementedError

    def check_bytes(self, data: bytes, path: Path) -> None:
        """Refuse bytes that are not this format (magic-byte check).

        Raises:
            MaskReadError: the first bytes say it is something else (the message says what).
        """
        raise NotImplementedError

    def check_magic_head(self, head: bytes, path: Path) -> None:
        """:meth:`check_bytes` on a file's first bytes, unless they are all zeros and not the whole
        file (whether the content is zeros only then needs the rest of the file): the magic-byte part
        of :meth:`check_head`, for a format whose declared size is checked in :meth:`read`."""
        if len(head) < HEAD_BYTES or head.strip(b"\x00"):
            self.check_bytes(head, path)

    def check_head(self, head: bytes, path: Path, size: int, limits: Limits) -> None:
        """Refuse a file from its first bytes and its size alone, before the rest is read
        (:func:`read_file_bytes` calls it once, after the shared checks): content that is not this
        format (its magic bytes), a header that declares more data than ``limits`` allow, or a file
        whose size differs from what its header declares. The default checks nothing (a format whose
        checks need the whole file). What the first bytes cannot decide is left to :meth:`check_bytes`
        and :meth:`read` on the whole file; a magic-byte refusal here must be one that
        :meth:`check_bytes` makes on the whole file, with the same message.

        Args:
            head: the first :data:`HEAD_BYTES` bytes of the file; the whole file when
                ``len(head) < HEAD_BYTES``.
            path: the file, for messages (and its suffix: a ``.gz`` that is no gzip).
            size: the file's size in bytes (``os.stat``, taken before ``head`` was read).
            limits: the size limits in force (``max_mask_bytes`` for a declared data size).

        Raises:
            MaskReadError: as :meth:`check_bytes` (the first bytes say it is something else); the
                declared data is above the limits; the file is shorter (truncated) or longer
                (trailing bytes) than its header declares.
        """

    def read(self, path: Path, data: bytes, expected_shape: tuple[int, ...] | None = None,
             limits: Limits | None = None) -> LabelImage:
        """Decode ``data`` (the bytes of ``path``, already through :meth:`check_bytes`).

        Args:
            expected_shape: the array shape the caller expects (the reference's), compared with
                the header's declared shape before any data is decoded; None: no expectation.
            limits: the size limits (default :func:`cardbench.limits.get_limits`).

        Raises:
            MaskReadError: anything that prevents a faithful read.
        """
        raise NotImplementedError

    def not_this_format(self, data: bytes, path: Path, expected: str) -> MaskReadError:
        """The error for bytes that are not this format.

        ``expected``: the format's name, optionally with the reason in parentheses
        (``"NRRD (no NRRD000x magic)"``); the reason goes into the problem, the fix names the format only."""
        name = expected.split(" (", 1)[0]
        return MaskReadError(path, f"named {self.suffix_of(path)} but the content is {_looks_like(data)}, not "
                                   f"{expected}", f"save the mask as a real {name} file (a renamed file is not "
                                                  "converted)")


def integral(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """Return ``arr`` as an integer array; floats must hold only whole numbers.

    Raises:
        MaskReadError: NaN/inf, non-integral floats (values shown at full precision) or another dtype.
    """
    if arr.dtype.kind in "iu":
        return arr, []
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8), []
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise MaskReadError(path, "float mask holds NaN or infinite values",
                                "save the label map as an integer type (uint8) with class indices")
        r = np.rint(arr)
        if not np.array_equal(r, arr):
            frac = arr[r != arr]
            raise MaskReadError(
                path,
                f"float mask with non-integral values (e.g. {frac.flat[0]!s}); it looks like "  # full precision
                "probabilities or an interpolated mask",
                "save the argmax class indices as uint8 (nearest-neighbour, never linear, resampling)",
            )
        return r.astype(np.int64), [f"float mask ({arr.dtype}) with integral values, read as integers"]
    raise MaskReadError(path, f"unsupported data type {arr.dtype}", "save the label map as uint8")


def check_declared(path: Path, shape: tuple[int, ...], itemsize: int, expected_shape, limits: Limits) -> int:
    """Compare a header's declared array shape with the expected one and the size limit, before
    any data is read.

    Returns:
        the declared data size in bytes.

    Raises:
        MaskReadError: a negative dimension, a shape that differs from ``expected_shape``, or data
            that would exceed ``limits.max_mask_bytes``.
    """
    if any(int(s) < 0 for s in shape):
        raise MaskReadError(path, f"header declares a negative dimension (shape {tuple(int(s) for s in shape)}; "
                                  "nothing decoded)", "re-export the file: its header is damaged")
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * int(itemsize)
    if expected_shape is not None and tuple(int(s) for s in shape) != tuple(expected_shape):
        raise MaskReadError(path, f"header declares shape {tuple(int(s) for s in shape)}, the reference's is "
                                  f"{tuple(expected_shape)} (nothing decoded)",
                            "predict on the reference grid (same matrix and number of slices; no cropping or "
                            "resampling), or resample back with nearest-neighbour interpolation", "shape")
    if nbytes > limits.max_mask_bytes:
        raise MaskReadError(path, f"header declares {nbytes} bytes of image data (shape "
                                  f"{tuple(int(s) for s in shape)}), above the limit of {limits.max_mask_bytes} bytes",
                            "check the file; raise CARDBENCH_MAX_MASK_BYTES only if it is genuine")
    return nbytes
