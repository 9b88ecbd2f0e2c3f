"""Resource limits on inputs written by strangers, in one place.

Every limit has a documented default and can be changed with an environment variable (the name is
``CARDBENCH_`` + the field name in capitals, e.g. ``CARDBENCH_MAX_ARCHIVE_BYTES=4294967296``).
Code reads the limits in force with :func:`get_limits`; a Python user can pass their own
:class:`Limits` where a function takes ``limits=``. docs/security.md lists every limit.

A refusal is one line naming the file, the limit and the environment variable that raises it,
and happens before the damage: archive sizes are checked from the archive's headers before
anything is extracted and again while extracting (a header may lie); a mask's declared size is
checked from its header before its data are decompressed, and decompression stops at the cap.

Defaults are far above real cine data (the largest label frame of the Sunnybrook sample,
256 x 256 x 11 uint8, is 704 KiB; the seed's Kaggle 2D masks have at most 218 x 256 pixels).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

_MiB = 1 << 20
_GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Hard limits on submitted files (all integers; sizes in bytes).

    Attributes:
        max_archive_bytes: total uncompressed size of a submission archive (.zip/.tar/.tar.gz),
            default 1 GiB: far above a test split of uint8 masks, far below a zip bomb's GiBs.
        max_archive_entries: number of entries (files and folders) in a submission archive,
            default 100,000 (a per-slice PNG submission of a large test split fits).
        max_compression_ratio: uncompressed / compressed size of any one archive entry, and of a
            whole .tar.gz, default 2,000. Deflate (zip, gzip) cannot exceed about 1,032, which an
            all-zero mask reaches, so this refuses bzip2/LZMA bombs; deflate bombs are stopped by
            ``max_archive_bytes``.
        max_meta_bytes: size of submission.yaml, default 64 KiB.
        max_meta_depth: nesting depth of submission.yaml (mappings and lists), default 20.
        max_meta_nodes: values in submission.yaml after expanding YAML aliases (``*name``),
            default 10,000 (a 1 kB "billion laughs" expands to 10^9).
        max_report_lines: problem lines printed by a command before "... and K more problems",
            default 50.
        max_file_bytes: size of one mask file on disk (compressed or not), default 1 GiB.
        max_mask_bytes: size of one mask's decoded data (voxels x bytes per voxel) and, for a
            compressed file, of what decompression may produce, default 512 MiB.
        max_png_pixels: pixels (width x height) of one PNG mask, checked from its header before
            decoding, default 2**26 (8192 x 8192).
        max_entry_file_bytes: size of one file of a leaderboard entry or benchmark read by the
            leaderboard (summary.json, per_case.csv/.parquet, per_subject.csv, benchmark.json,
            index.json), checked with ``os.stat`` before the file is opened, default 256 MiB (the
            largest entry file of the pre-filled leaderboard is far below 1 MiB).
        max_table_bytes: size of a Kaggle volume-track pixel table (``cardbench volumes score``), on
            disk and, for an .xz/.gz table, after decompression (which stops there), default 256 MiB:
            about 10 times the largest published table (24.6 MB decompressed, 2.4 MB as .xz).
    """

    max_archive_bytes: int = _GiB
    max_archive_entries: int = 100_000
    max_compression_ratio: int = 2_000
    max_meta_bytes: int = 64 * 1024
    max_meta_depth: int = 20
    max_meta_nodes: int = 10_000
    max_report_lines: int = 50
    max_file_bytes: int = _GiB
    max_mask_bytes: int = 512 * _MiB
    max_png_pixels: int = 2 ** 26
    max_entry_file_bytes: int = 256 * _MiB
    max_table_bytes: int = 256 * _MiB

    @staticmethod
    def env_name(field: str) -> str:
        """The environment variable that overrides ``field`` (``CARDBENCH_<FIELD>``)."""
        return "CARDBENCH_" + field.upper()

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Limits":
        """Defaults, overridden by ``CARDBENCH_<FIELD>`` environment variables.

        Raises:
            ValueError: a variable is not a positive integer (the message names it).
        """
        env = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            name = cls.env_name(f.name)
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                v = int(raw.strip().replace("_", ""))
            except ValueError:
                v = -1
            if v <= 0:
                raise ValueError(f"environment variable {name}={raw!r}: must be a positive integer "
                                 f"(default {f.default})")
            values[f.name] = v
        return cls(**values)


def get_limits() -> Limits:
    """The limits in force: :class:`Limits` defaults overridden by the environment (read on each call).

    Raises:
        ValueError: an override is not a positive integer.
    """
    return Limits.from_env()
