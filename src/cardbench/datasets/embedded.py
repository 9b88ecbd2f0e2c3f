"""Files shipped inside cardbench, verified against the data registry before use.

cardbench ships gzip-compressed copies of a few small published files (the seed paper's 7T
confusion tables and Kaggle label-quality tables, MIT; see ``data/cmr-seg-tl/README.md``) so the
reproduction and the demo run offline on a fresh install. ``REGISTRY.tsv`` (also shipped) lists
every published file with its pinned-commit URL and sha256; :func:`open_published` checks the sha256
of the decompressed bytes, so an embedded file is provably the published one.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from cardbench._util import sha256_bytes


class IntegrityError(ValueError):
    """A file's sha256 does not match the registry."""


@dataclass(frozen=True)
class RegistryEntry:
    """One row of REGISTRY.tsv: a published file and where it comes from."""

    local_path: str
    sha256: str
    bytes: int
    source_repo: str
    source_commit: str
    source_path: str
    url: str
    license: str


def data_root():
    """The package's embedded data folder (an importlib Traversable)."""
    return resources.files("cardbench.datasets") / "data"


@lru_cache(maxsize=1)
def registry() -> dict[str, RegistryEntry]:
    """Parse the shipped REGISTRY.tsv: local_path -> :class:`RegistryEntry`."""
    text = (data_root() / "REGISTRY.tsv").read_text(encoding="utf-8")
    out = {}
    for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
        out[row["local_path"]] = RegistryEntry(
            row["local_path"], row["sha256"], int(row["bytes"]), row["source_repo"], row["source_commit"],
            row["source_path"], row["url"], row["license"])
    return out


def open_published(local_path: str, data_dir: str | Path | None = None) -> tuple[bytes, RegistryEntry, str]:
    """Bytes of a published file, verified against the registry.

    Args:
        local_path: registry path, e.g. ``cmr-seg-tl/analysis/7T/confusion_tables/confusion_WS_base.tsv``.
        data_dir: a folder holding the registry's layout (a download, a mirror); default: the
            copy embedded in the package.

    Returns:
        (bytes, registry entry, where they were read from).

    Raises:
        KeyError: ``local_path`` is not in the registry.
        FileNotFoundError: not embedded (and no ``data_dir``), or missing from ``data_dir``.
        IntegrityError: the bytes' sha256 differs from the registry's.
    """
    entry = registry().get(local_path)
    if entry is None:
        raise KeyError(f"{local_path}: not in cardbench's data registry")
    if data_dir is not None:
        path = Path(data_dir) / local_path
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; point --data at a folder with the registry layout "
                                    "(e.g. a `cardbench data fetch ankenbrand2021-derived` cache)")
        data = path.read_bytes()
        where = str(path)
    else:
        res = data_root() / (local_path + ".gz")
        if not res.is_file():
            raise FileNotFoundError(f"{local_path}: not embedded in cardbench; fetch it with "
                                    "`cardbench data fetch ankenbrand2021-derived` and pass --data")
        data = gzip.decompress(res.read_bytes())
        where = f"embedded:{local_path}"
    digest = sha256_bytes(data)
    if digest != entry.sha256:
        raise IntegrityError(f"{where}: sha256 {digest} does not match the registry's {entry.sha256}; "
                             "the file is corrupt or modified: delete it and fetch it again")
    return data, entry, where
