"""The per-case table of a large scoring run, kept in a Parquet file instead of memory.

``cardbench score`` builds the per-case table (one row per 2D image and per volume, and per class;
see :mod:`cardbench.benchmark.casetable`) batch by batch as the cases are scored and appends each
batch to a :class:`PerCaseWriter`. The finished :class:`PerCaseStore` is one Parquet file whose
row groups hold the rows of one (level, class) *piece* each, in the order of the in-memory table
(image level before volume level, classes in reporting order, cases in case order), so

* aggregation reads one piece (the rows of one class at one level), and only the columns it
  needs, at a time: memory is bounded by one class's rows at the protocol's level, not by the
  whole table (:func:`cardbench.benchmark.aggregate.aggregate`);
* ``per_case.csv`` is written row group by row group (:func:`cardbench.benchmark.results.write_tables`);
* :meth:`PerCaseStore.to_frame` gives back the whole table as one DataFrame for a Python user
  who asks for it (``ScoreResult.per_case``).

Why Parquet through pyarrow and not DuckDB: pyarrow is already a dependency of the scoring
path (the spools of :mod:`cardbench.benchmark.scoring`); the aggregation itself stays the pandas
code that computes the published numbers, run on one piece at a time, so the figures are
identical to the in-memory computation by construction, not by a second implementation.

The file lives in a temporary folder that is removed when the store is garbage-collected (or
at interpreter exit).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

#: rows per row group of the final file, about (batches of a piece are joined up to this size).
ROW_GROUP_ROWS = 65_536


def _arrow():
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def _norm_type(t):
    """string for large_string (pandas' str dtype), the type itself otherwise."""
    pa, _ = _arrow()
    return pa.string() if pa.types.is_large_string(t) else t


class PerCaseWriter:
    """Collects per-case table batches (DataFrames with the columns of
    :func:`cardbench.benchmark.casetable.per_case_table`) and assembles them into a :class:`PerCaseStore`.

    Args:
        levels: level order of the final table (default image, then volume).
        folder: where the temporary files go (default: the system's temporary folder; on a
            cluster the client's local disk is fine, only the client reads them).
    """

    def __init__(self, levels: Iterable[str] = ("image", "volume"), folder: str | Path | None = None):
        self.levels = list(levels)
        self.dir = Path(tempfile.mkdtemp(prefix="cardbench-percase-", dir=folder))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        self._pieces: dict[tuple[str, str], list[Path]] = {}
        self._classes: list[str] = []
        self._columns: list[str] = []
        self._n = 0
        # distinct keys, counted as batches arrive (a batch holds whole cases, so images and volumes add up)
        self._images = 0
        self._volumes = 0
        self._subjects: dict[str, set] = {}

    def add(self, chunk: pd.DataFrame) -> None:
        """Append one batch of per-case rows (any mix of levels and classes). A batch must hold whole
        cases (every row of a volume and of its images), and no case may come in two batches: the
        distinct images and volumes are counted batch by batch."""
        if chunk is None or chunk.empty:
            return
        pa, pq = _arrow()
        for c in chunk.columns:
            if c not in self._columns:
                self._columns.append(c)
        lv = chunk["level"]
        keys = [c for c in ("subject", "frame", "slice") if c in chunk.columns]
        self._images += len(chunk.loc[lv == "image", keys].drop_duplicates())
        self._volumes += len(chunk.loc[lv == "volume", [c for c in keys if c != "slice"]].drop_duplicates())
        for level, subj in chunk.groupby("level", sort=False)["subject"]:
            self._subjects.setdefault(level, set()).update(subj.unique().tolist())
        for (level, cls), idx in chunk.groupby(["level", "class"], sort=False).indices.items():
            if level not in self.levels:
                self.levels.append(level)
            if cls not in self._classes:
                self._classes.append(cls)
            part = chunk.iloc[idx]
            files = self._pieces.setdefault((level, cls), [])
            path = self.dir / f"piece-{self.levels.index(level)}-{self._classes.index(cls)}-{len(files):06d}.parquet"
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path)
            files.append(path)
            self._n += len(part)

    def finish(self) -> "PerCaseStore":
        """Write the final file (pieces in level, then class order) and return its store."""
        pa, pq = _arrow()
        order = [(lv, c) for lv in self.levels for c in self._classes if (lv, c) in self._pieces]
        # one schema for all pieces: a column's first non-null type (a column that is null in one batch
        # and text in another is text); columns in order of first appearance, the file columns last
        types: dict[str, object] = {}
        for key in order:
            for path in self._pieces[key]:
                for f in pq.read_schema(path):
                    if f.name.startswith("__index_level"):
                        continue
                    if f.name not in types or pa.types.is_null(types[f.name]):
                        types[f.name] = _norm_type(f.type)
        back = [c for c in ("ref_file", "pred_file") if c in types]
        names = [c for c in self._columns if c in types and c not in back] + back
        names += [c for c in types if c not in names]
        schema = pa.schema([(c, pa.string() if pa.types.is_null(types[c]) else types[c]) for c in names])
        path = self.dir / "per_case.parquet"
        pieces: list[tuple[str, str, list[int], int]] = []
        rg = 0
        with pq.ParquetWriter(path, schema) as w:
            for key in order:
                groups, n, held, n_held = [], 0, [], 0

                def write(tables: list) -> None:
                    nonlocal rg, n
                    t = pa.concat_tables(tables)
                    w.write_table(t, row_group_size=len(t))
                    groups.append(rg)
                    rg += 1
                    n += len(t)

                for p in self._pieces[key]:  # small batches are joined into row groups of ~ROW_GROUP_ROWS rows
                    t = pq.read_table(p)
                    cols = [t.column(c).cast(schema.field(c).type) if c in t.column_names
                            else pa.nulls(len(t), schema.field(c).type) for c in names]
                    held.append(pa.Table.from_arrays(cols, schema=schema))
                    n_held += len(t)
                    p.unlink()
                    if n_held >= ROW_GROUP_ROWS:
                        write(held)
                        held, n_held = [], 0
                if held:
                    write(held)
                pieces.append((key[0], key[1], groups, n))
        store = PerCaseStore(path, pieces, schema.names)
        store.distinct = {"images": self._images, "volumes": self._volumes,
                          "subjects": {lv: len(v) for lv, v in self._subjects.items()}}
        # the store owns the folder from now on
        self._finalizer.detach()
        store._finalizer = weakref.finalize(store, shutil.rmtree, str(self.dir), True)
        return store

    def close(self) -> None:
        """Remove the temporary files (a finished store keeps its own)."""
        self._finalizer()


class PerCaseStore:
    """A per-case table stored in a Parquet file, one (level, class) piece after the other.

    Attributes:
        path: the Parquet file.
        pieces: ``(level, class, row group indices, rows)`` in table order.
        columns: column names, in table order.
    """

    def __init__(self, path: Path, pieces: list[tuple[str, str, list[int], int]], columns: list[str]):
        self.path = Path(path)
        self.pieces = pieces
        self.columns = list(columns)
        self._finalizer = None
        #: distinct 2D images (subject, frame, slice), volumes (subject, frame) and subjects per level,
        #: counted by the writer (None for a store opened otherwise)
        self.distinct: dict | None = None

    def __len__(self) -> int:
        return sum(p[3] for p in self.pieces)

    def close(self) -> None:
        """Remove the file and its temporary folder now."""
        if self._finalizer is not None:
            self._finalizer()

    @property
    def empty(self) -> bool:
        return len(self) == 0

    @property
    def classes(self) -> list[str]:
        """Classes (and regions) in table order."""
        return list(dict.fromkeys(p[1] for p in self.pieces))

    def levels(self) -> list[str]:
        return list(dict.fromkeys(p[0] for p in self.pieces))

    def _groups(self, level: str | None = None, cls: str | None = None) -> list[int]:
        return [g for lv, c, gs, _ in self.pieces if (level is None or lv == level) and (cls is None or c == cls)
                for g in gs]

    def read_arrow(self, columns: Iterable[str] | None = None, level: str | None = None, cls: str | None = None):
        """The rows of one level and / or class (all when None) as a pyarrow Table, only ``columns``
        (those the table has; all when None)."""
        pa, pq = _arrow()
        cols = self.columns if columns is None else [c for c in columns if c in self.columns]
        groups = self._groups(level, cls)
        if not groups:
            return pa.schema([f for f in pq.read_schema(self.path) if f.name in cols]).empty_table()
        return pq.ParquetFile(self.path).read_row_groups(groups, columns=cols)

    def read(self, columns: Iterable[str] | None = None, level: str | None = None,
             cls: str | None = None) -> pd.DataFrame:
        """:meth:`read_arrow` as a DataFrame (see :meth:`to_frame` for the dtypes)."""
        return _to_pandas(self.read_arrow(columns, level, cls))

    def iter_frames(self, columns: Iterable[str] | None = None, rows: int | None = None) -> Iterator[pd.DataFrame]:
        """The whole table in order, one row group (about :data:`ROW_GROUP_ROWS` rows) at a time, or
        in slices of at most ``rows`` rows."""
        _, pq = _arrow()
        f = pq.ParquetFile(self.path)
        cols = self.columns if columns is None else [c for c in columns if c in self.columns]
        for _, _, groups, _ in self.pieces:
            for g in groups:
                t = f.read_row_group(g, columns=cols)
                step = rows or max(len(t), 1)
                for a in range(0, len(t), step):
                    yield _to_pandas(t.slice(a, step))
                del t

    def to_frame(self) -> pd.DataFrame:
        """The whole per-case table as one DataFrame: text columns as text, whole numbers as int64
        (float64 where a value is missing, as pandas reads Parquet), metrics as float64."""
        if not self.pieces:
            return pd.DataFrame(columns=self.columns)
        return _to_pandas(self.read_arrow())


def _to_pandas(table) -> pd.DataFrame:
    pa, _ = _arrow()
    df = table.to_pandas()
    pa.default_memory_pool().release_unused()
    return df
