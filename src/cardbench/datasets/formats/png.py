"""2D PNG label masks (the seed's 7T and Kaggle masks), one file per image ``(row, col)``.

Greyscale (8 or 16 bit) values are the labels. A palette ("P" mode) PNG is read as its palette
indices, which are the labels, never converted to grey. RGB(A) and grey+alpha masks are refused
(colours are not labels). The file must start with the PNG signature (a JPEG renamed to ``.png``
is refused: its compression artefacts would become labels), and the pixel count declared in the
``IHDR`` chunk is checked against :attr:`cardbench.limits.Limits.max_png_pixels` and the
reference's shape before anything is decoded. PNG carries no spacing or affine (a PNG reference
gives them in ``spacing.csv``).

Names: ``<subject>_slice<SSS>_frame<FFF>[-mask].png`` (the seed's 7T masks) or
``<subject>-frame<FFF>-slice<SSS>[-mask].png`` (the seed's Kaggle masks).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from cardbench._util import sha256_bytes
from cardbench.datasets.formats.base import LabelImage, MaskFormat, MaskReadError, integral
from cardbench.datasets.naming import _PNG_KAGGLE, _PNG_SEED, CaseKey
from cardbench.limits import Limits, get_limits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngFormat(MaskFormat):
    """2D PNG label masks ``(row, col)``."""

    name = "png"
    suffixes = (".png",)
    dims = 2
    description = "PNG 2D mask (row, col), greyscale or palette indices; spacing from the reference's spacing.csv"

    def parse_case(self, stem: str, path: Path) -> CaseKey:
        m = _PNG_SEED.match(stem) or _PNG_KAGGLE.match(stem)
        if m:
            return CaseKey(m["subject"], int(m["frame"]), int(m["slice"]))
        raise ValueError(
            f"{path}: PNG name not recognised; name 2D masks <subject>_slice<SSS>_frame<FFF>-mask.png "
            "or <subject>-frame<FFF>-slice<SSS>.png"
        )

    def check_head(self, head: bytes, path: Path, size: int, limits: Limits) -> None:
        """The magic bytes, before the rest is read (:meth:`~MaskFormat.check_magic_head`); ``size``
        and ``limits`` are not used: the declared size is checked in :meth:`read`."""
        self.check_magic_head(head, path)

    def check_bytes(self, data: bytes, path: Path) -> None:
        if not data.startswith(PNG_SIGNATURE):
            raise self.not_this_format(data, path, "PNG")
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise MaskReadError(path, "not a readable PNG (no IHDR chunk: a truncated file?)",
                                "re-export or re-copy the file")

    def read(self, path: Path, data: bytes, expected_shape=None, limits: Limits | None = None) -> LabelImage:
        from PIL import Image, UnidentifiedImageError

        lim = limits or get_limits()
        path = Path(path)
        self.check_bytes(data, path)
        width, height = struct.unpack(">II", data[16:24])
        if width * height > lim.max_png_pixels:
            raise MaskReadError(path, f"PNG declares {width} x {height} = {width * height} pixels, above the limit "
                                      f"of {lim.max_png_pixels}", "check the file; raise CARDBENCH_MAX_PNG_PIXELS "
                                                                  "only if it is genuine")
        if expected_shape is not None and (height, width) != tuple(expected_shape):
            raise MaskReadError(path, f"PNG declares shape {(height, width)}, the reference's is "
                                      f"{tuple(expected_shape)} (nothing decoded)",
                                "predict on the reference grid (same matrix; no cropping or resampling)", "shape")
        digest = sha256_bytes(data)
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                mode = im.mode
                if mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB", "PA"):
                    raise MaskReadError(
                        path, f"colour PNG (mode {mode}); colours are not labels",
                        "save a single-channel PNG whose pixel values (or palette indices) are the class labels",
                    )
                im.load()
                arr = np.array(im)  # mode P gives palette indices, I;16 gives uint16
        except MaskReadError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise MaskReadError(path, f"not a readable PNG ({e}: a truncated file?)",
                                "re-export or re-copy the file") from e
        if arr.ndim != 2:
            raise MaskReadError(path, f"expected a 2D mask, got shape {arr.shape}", "save a single-channel PNG")
        arr, notes = integral(arr, path)
        return LabelImage(arr, path, self.name, digest, source_dtype=f"PNG mode {mode}", notes=notes)
