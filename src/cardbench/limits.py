"""Resource limits on input written by strangers: one place for every bound cardbench enforces.

Every reader checks the relevant limit *before* the work it bounds (a header's declared size before
decompressing, an archive's listing before extracting), and a refusal is one line naming the file,
the limit and how to raise it; nothing is written.

Defaults (:class:`Limits`) are far above real cine data (the largest label frame of the Sunnybrook
sample, 256 x 256 x 11 uint8, is 704 KiB; the seed's Kaggle 2D masks have at most 218 x 256 pixels).
Each field can be overridden with an environment variable ``CARDBENCH_<FIELD>`` (upper case, e.g.
``CARDBENCH_MAX_MASK_BYTES=4294967296``), read by :func:`get_limits`; a Python caller passes its own
``Limits(...)`` or uses :func:`dataclasses.replace` on the defaults.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Hard limits on inputs (sizes in bytes).

    Attributes:
        max_file_bytes: size of one mask file on disk (compressed or not). Default 1 GiB.
        max_mask_bytes: size of one mask's decoded data (voxels x bytes per voxel) and, for a
            compressed file, of what decompression may produce. Default 512 MiB.
        max_png_pixels: pixels (width x height) of one PNG mask, checked from its header before
            decoding. Default 2**26 (8192 x 8192).
        max_archive_bytes: total uncompressed size of a submission archive. Default 8 GiB.
        max_archive_entries: number of entries in a submission archive. Default 100,000.
        max_archive_ratio: uncompressed / compressed size of an archive entry. Default 1000.
        max_yaml_bytes: size of a submission.yaml / protocol / label map YAML file. Default 1 MiB.
        max_yaml_depth: nesting depth of such a YAML file. Default 32.
        max_problem_lines: problem lines printed before a count of the rest. Default 200.
    """

    max_file_bytes: int = 1 * GiB
    max_mask_bytes: int = 512 * MiB
    max_png_pixels: int = 2 ** 26
    max_archive_bytes: int = 8 * GiB
    max_archive_entries: int = 100_000
    max_archive_ratio: int = 1000
    max_yaml_bytes: int = 1 * MiB
    max_yaml_depth: int = 32
    max_problem_lines: int = 200

    @classmethod
    def from_env(cls, environ: "dict[str, str] | None" = None) -> "Limits":
        """Defaults overridden by ``CARDBENCH_<FIELD>`` environment variables (integers).

        Raises:
            ValueError: a variable that is not a positive integer (the message names it).
        """
        env = os.environ if environ is None else environ
        kw = {}
        for f in dataclasses.fields(cls):
            var = f"CARDBENCH_{f.name.upper()}"
            if var in env:
                try:
                    val = int(env[var])
                except ValueError:
                    raise ValueError(f"{var}={env[var]!r}: not an integer; give a positive whole number") from None
                if val <= 0:
                    raise ValueError(f"{var}={val}: must be positive")
                kw[f.name] = val
        return cls(**kw)


def get_limits() -> Limits:
    """The limits in force: :class:`Limits` defaults with environment overrides."""
    return Limits.from_env()
