"""The leaderboard store: one folder per benchmark, one entry per submission, written atomically.

Layout (a plain folder; copy it, commit it, serve it)::

    <root>/
      .cardbench-leaderboard.json       format version + which published sources were pre-filled
      <benchmark>/                      benchmark id = <dataset>__<split>__<protocol>
        benchmark.json                  dataset name/version, split, protocol (name, version, policy)
        index.json                      derived cache: every entry's metadata and aggregated figures
        entries/<name>/
          summary.json                  the result summary (as written by ``cardbench score``)
          per_case.csv | per_case.parquet
          per_subject.csv, aggregates.csv, <extra>.csv (e.g. clinical tables)
          submission.yaml               name, label, team, method, training data, url, label map,
                                        added (UTC), source, published

A benchmark is a dataset (name; its version must match), a split (``all`` when the whole
reference was scored) and a protocol (name; version and policy must match): only entries scored
the same way are ranked together.

Atomicity: an entry folder is built in a temporary sibling and renamed into place
(:func:`cardbench._util.atomic_dir`); ``benchmark.json``, ``index.json`` and the marker are
written with :func:`cardbench._util.atomic_write_text`. A write that fails or is killed leaves the
previous state: the entry folders are the truth, ``index.json`` is a cache rebuilt from them
whenever it disagrees with the folder listing (names, ``summary.json`` mtime and size). Writers
take an advisory lock (``<benchmark>/.lock``, ``fcntl.flock``; no lock on Windows) and clean up
what a killed writer left (hidden ``.<name>.*.tmp`` folders; a ``.<name>.*.old`` folder whose
replacement never landed is moved back).

Ranking: entries are sorted by the mean of one metric for one class in one group (``all``, or a
phase ``ED``/``ES``, or a split), best first according to the metric's direction
(each metric's ``direction`` in :mod:`cardbench.benchmark.metric_registry`: Dice, IoU, NSD higher is better; HD, HD95,
ASSD lower is better). Equal values share the best rank ("min" ranking, as in
:meth:`pandas.Series.rank`); an entry without the metric is listed last without a rank. The 95 %
confidence interval shown is the protocol's own (subject bootstrap under ``cardbench-v1``; none
under ``ankenbrand2021``).

Default location: ``$CARDBENCH_LEADERBOARD``, else ``platformdirs.user_data_dir("cardbench") /
"leaderboard"``. :func:`open_leaderboard` pre-fills a leaderboard on first use with real published
entries scored by cardbench itself (:data:`PREFILL_SOURCES`), from the sources that the published
studies register (:mod:`cardbench.reproductions`, imported by the ``cardbench`` command and the
dashboard: the seven 7T comparisons of Ankenbrand et al. 2021 and the Kaggle label-quality check,
under both protocols). This module knows no study.

Adding an entry from Python (what ``cardbench score --leaderboard DIR --name NAME`` does)::

    from cardbench.benchmark import score
    from cardbench.benchmark.leaderboard import add_entry
    result = score("predictions/", "reference/")
    entry = add_entry(result, "my-leaderboard/", name="my-unet", meta={"team": "lab"})
    print(entry.benchmark, entry.name, entry.path)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import yaml

from cardbench._util import atomic_dir, atomic_write_text
from cardbench._version import __version__
from cardbench.benchmark.metric_registry import digits_of, direction_of, unit_of
from cardbench.benchmark.protocols import benchmark_suffix, protocols_compatible
from cardbench.benchmark.results import ScoreResult, to_json
from cardbench.labelmaps import CLASSES

ENV_VAR = "CARDBENCH_LEADERBOARD"
MARKER = ".cardbench-leaderboard.json"
FORMAT_VERSION = 2
BENCHMARK_FILE = "benchmark.json"
INDEX_FILE = "index.json"
ENTRIES = "entries"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,119}$")
#: device names Windows reserves in any folder, with or without an extension (con, con.txt, ...).
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
#: submission.yaml keys shown in tables (any other key is kept as well).
META_KEYS = ("name", "label", "team", "method", "training_data", "url", "label_map", "added", "source",
             "published", "reference_path", "predictions_path")
PHASES = ("ED", "ES")
#: clinical indices (cardbench.benchmark.clinical) usable in place of a class in a metric spec.
CLINICAL_INDICES = ("LVEDV", "LVESV", "LVSV", "LVEF", "LVM", "RVEDV", "RVESV", "RVSV", "RVEF")
#: agreement statistics of a clinical index shown on the leaderboard, with their direction:
#: -1 lower is better, +1 higher is better, 0 closer to 0 is better (ranked by absolute value).
CLINICAL_STATS = {"mae": -1, "bias": 0, "sd_diff": -1, "pearson_r": 1}


class LeaderboardError(ValueError):
    """A leaderboard operation cannot be done; the message names the folder, the problem and the fix."""


# --------------------------------------------------------------------------------------------
# names and ids


def default_root() -> Path:
    """The default leaderboard folder: ``$CARDBENCH_LEADERBOARD``, else the user data dir.

    The user data dir comes from :func:`platformdirs.user_data_dir` (``~/.local/share/cardbench`` on
    Linux), with ``leaderboard`` appended.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cardbench", appauthor=False)) / "leaderboard"


def safe_name(text: str) -> str:
    """A valid entry/benchmark name derived from ``text`` (other characters become ``_``)."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("._-") or "submission"
    return s[:120]


def check_name(name: str, what: str = "entry name") -> str:
    """Return ``name`` if it is a valid entry or benchmark name.

    Valid: 1 to 120 characters from ``A-Z a-z 0-9 . _ + -``, starting with a letter or digit (so
    it is a safe folder name on every system and never a hidden file).

    Raises:
        LeaderboardError: invalid name; the message suggests a valid one.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LeaderboardError(f"invalid {what} {name!r}: use letters, digits, '.', '_', '+', '-' "
                               f"(starting with a letter or digit), e.g. {safe_name(str(name))!r}")
    if name.split(".")[0].lower() in _WINDOWS_RESERVED or name.endswith("."):
        raise LeaderboardError(f"invalid {what} {name!r}: reserved as a file name on Windows (or ends with '.'); "
                               f"choose another, e.g. {name.rstrip('.') + '_1'!r}")
    return name


def benchmark_id(summary: dict) -> str:
    """The benchmark a result belongs to: ``<dataset>__<split>__<protocol>[+nsd<tau>mm]``.

    ``split`` is ``all`` when the whole reference was scored (``summary["split"]`` is None). The
    NSD tolerance is part of the id when it differs from the protocol's packaged one
    (:func:`cardbench.benchmark.protocols.benchmark_suffix`); the version is recorded in
    benchmark.json and checked when a result is added. So ``cmr-7t__test__cardbench-v1`` stays the id of every cardbench-v1 1.x result at the default
    tolerance and a result at another tolerance never lands next to it.

    Raises:
        LeaderboardError: the summary lacks the dataset name or the protocol.
    """
    try:
        dataset = summary["dataset"]["name"]
        protocol = summary["protocol"]["name"]
    except (KeyError, TypeError):
        raise LeaderboardError("the result has no dataset name or protocol in its summary; score it with "
                               "cardbench.benchmark.score (or build_result) first") from None
    split = summary.get("split") or "all"
    return f"{safe_name(dataset)}__{safe_name(split)}__{safe_name(protocol)}" + benchmark_suffix(summary["protocol"])


def parse_metric(spec: str) -> tuple[str, str | None, str]:
    """Parse a metric spec ``<metric>_<class>[_<phase>]`` into (metric, class, group).

    Examples: ``dice_lv`` -> (``dice``, ``LV``, ``all``); ``hd95_my_es`` -> (``hd95``, ``MY``,
    ``ES``); ``dice_lv_apex`` -> (``dice``, ``LV``, ``apex``) (slice position); ``dice`` -> (``dice``, None, ``all``) (class chosen by the caller); ``mae_lvef`` ->
    (``mae``, ``LVEF``, ``all``): a clinical index (:data:`CLINICAL_INDICES`) takes the place of the
    class, with an agreement statistic (:data:`CLINICAL_STATS`) as the metric. Case-insensitive for
    class and phase.
    """
    parts = spec.strip().split("_")
    group = "all"
    cls = None
    if len(parts) > 1 and parts[-1].upper() in PHASES:
        group = parts.pop().upper()
    elif len(parts) > 2 and parts[-1].lower() in ("base", "mid", "apex"):  # slice position of the LV
        group = parts.pop().lower()
    if len(parts) > 1 and (parts[-1].upper() in CLASSES or parts[-1].upper() in CLINICAL_INDICES):
        cls = parts.pop().upper()
    metric = "_".join(parts).lower()
    if not metric:
        raise LeaderboardError(f"invalid metric {spec!r}: expected <metric>_<class>[_<phase>], e.g. dice_lv")
    return metric, cls, group


# --------------------------------------------------------------------------------------------
# locking and recovery


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Advisory exclusive lock on ``folder/.lock`` (POSIX ``flock``; a no-op where unavailable)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _try_locked(folder: Path) -> Iterator[bool]:
    """Like :func:`_locked` but never waits: yields False when another process holds the lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    try:
        fh = open(folder / ".lock", "a+")
    except OSError:
        yield False
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[^.]+\.(?P<kind>tmp|old)$")


def _recover(entries_dir: Path) -> list[str]:
    """Clean up after a killed writer (call with the benchmark lock held).

    ``.<name>.<random>.tmp``: a half-built entry, deleted. ``.<name>.<random>.old``: the previous
    version of an entry being replaced; moved back when ``<name>`` is missing (the replacement
    never landed), deleted otherwise. Returns what was done, one line each.
    """
    done = []
    if not entries_dir.is_dir():
        return done
    for p in sorted(entries_dir.iterdir()):
        m = _TMP_RE.match(p.name)
        if not m or not p.is_dir():
            continue
        target = entries_dir / m.group("name")
        if m.group("kind") == "old" and not target.exists():
            os.replace(p, target)
            done.append(f"restored {target.name} from an interrupted replacement")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed leftover {p.name}")
    return done


# --------------------------------------------------------------------------------------------
# entries


@dataclass
class Entry:
    """One leaderboard entry (a scored submission) as stored on disk.

    Attributes:
        benchmark: benchmark id (folder name).
        name: entry name (folder name).
        path: the entry folder.
        meta: submission.yaml content.
    """

    benchmark: str
    name: str
    path: Path
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """summary.json of the entry."""
        return json.loads((self.path / "summary.json").read_text(encoding="utf-8"))

    def per_case(self) -> pd.DataFrame:
        """The per-case table (one row per level, case and class; see casetable.py)."""
        return read_per_case(self.path)

    def result(self) -> ScoreResult:
        """The full :class:`ScoreResult` (summary, per_case, per_subject, aggregates, extra tables)."""
        return read_entry(self.path)


def read_per_case(folder: Path) -> pd.DataFrame:
    """Read ``per_case.parquet`` or ``per_case.csv`` from an entry folder.

    Raises:
        FileNotFoundError: neither file exists (names the folder).
        LeaderboardError: the table is Parquet and pyarrow is not installed.
    """
    folder = Path(folder)
    pq = folder / "per_case.parquet"
    csv = folder / "per_case.csv"
    if pq.exists():
        try:
            df = pd.read_parquet(pq)
        except ImportError as e:
            raise LeaderboardError(f"{pq}: reading Parquet needs pyarrow ({e}); pip install pyarrow "
                                   "(it comes with cardbench[dashboard])") from None
    elif csv.exists():
        try:
            df = pd.read_csv(csv, dtype={"subject": str, "phase": str, "split": str, "status": str, "class": str})
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:  # EmptyDataError is a ValueError
            raise LeaderboardError(f"{csv}: not a readable table ({str(e).splitlines()[0]}); the entry is "
                                   "corrupt: remove it and add it again") from None
    else:
        df = None
    if df is not None:
        _check_per_case(df, pq if pq.exists() else csv)
        for c in ("phase", "split"):  # empty = unknown; never NaN, so tables and group-bys show it
            if c in df.columns:
                df[c] = df[c].fillna("").astype(str)
        return df
    raise FileNotFoundError(f"{folder}: no per_case.csv or per_case.parquet; the entry is incomplete, "
                            "remove it and add it again")


#: columns every per-case table has; metric columns (dice, iou, hd95, ...) must be numbers.
PER_CASE_REQUIRED = ("level", "subject", "class", "status", "dice")
_PER_CASE_TEXT = {"level", "subject", "frame", "slice", "phase", "split", "class", "status", "ref_file", "position",
                  "pred_file", "reason", "note"}


def _check_per_case(df: pd.DataFrame, path: Path) -> None:
    """Raise LeaderboardError (naming ``path``) unless ``df`` has the required columns, at least one row,
    and numbers (or blanks) in every metric and count column."""
    miss = [c for c in PER_CASE_REQUIRED if c not in df.columns]
    if miss:
        raise LeaderboardError(f"{path}: missing columns {miss}; the entry is corrupt: remove it and add it again")
    if df.empty:
        raise LeaderboardError(f"{path}: no rows; the entry is corrupt: remove it and add it again")
    for c in df.columns:
        if c in _PER_CASE_TEXT or pd.api.types.is_numeric_dtype(df[c]):
            continue
        num = pd.to_numeric(df[c], errors="coerce")
        bad = df.index[num.isna() & df[c].notna()]
        if len(bad):
            i = bad[0]
            raise LeaderboardError(f"{path}: column {c} holds text ({str(df.at[i, c])!r} in row {i + 2}) where "
                                   "numbers belong; the entry is corrupt: remove it and add it again")


_STANDARD_FILES = {"summary.json", "per_case.csv", "per_case.parquet", "per_subject.csv", "aggregates.csv",
                   "submission.yaml"}


def read_entry(folder: Path) -> ScoreResult:
    """Read an entry folder into a :class:`ScoreResult` (extra ``*.csv`` tables included)."""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    per_case = read_per_case(folder)
    ps = folder / "per_subject.csv"
    per_subject = pd.read_csv(ps, dtype={"subject": str}) if ps.exists() else pd.DataFrame()
    ag = folder / "aggregates.csv"
    aggregates = pd.read_csv(ag) if ag.exists() else pd.DataFrame(summary.get("results", []))
    extra = {p.stem: pd.read_csv(p, dtype={"subject": str}) for p in sorted(folder.glob("*.csv"))
             if p.name not in _STANDARD_FILES}
    return ScoreResult(summary, per_case, per_subject, aggregates, extra_tables=extra)


def _submission_meta(result: ScoreResult, name: str, meta: dict | None, source: str) -> dict:
    sub = dict(result.summary.get("submission") or {})
    out: dict = {"name": name}
    for k in ("label", "team", "method", "training_data", "url"):
        if sub.get(k) not in (None, ""):
            out[k] = sub[k]
    lm = result.summary.get("label_map")
    if isinstance(lm, dict) and lm.get("name"):
        out["label_map"] = lm["name"]
    if sub.get("name") and sub["name"] != name:
        out["submission_name"] = sub["name"]
    out["added"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out["source"] = source
    # absolute locations of the reference and the predictions when added (the summary keeps the
    # paths as given, which may be relative to a working directory the dashboard does not share)
    for key, rel in (("reference_path", (result.summary.get("dataset") or {}).get("path")),
                     ("predictions_path", sub.get("path"))):
        if rel and not str(rel).startswith("embedded:") and Path(rel).exists():
            out[key] = str(Path(rel).resolve())
    out["published"] = False
    out.update({k: v for k, v in (meta or {}).items() if v is not None})
    out["name"] = name
    return out


def _aggregates_of(result: ScoreResult) -> pd.DataFrame:
    a = result.aggregates
    if a is None or a.empty:
        a = pd.DataFrame(result.summary.get("results", []))
    return a


# --------------------------------------------------------------------------------------------
# the store


@dataclass
class BenchmarkInfo:
    """A benchmark folder: id, dataset (name, version), split, protocol dict, number of entries."""

    id: str
    path: Path
    dataset: dict
    split: str
    protocol: dict
    n_entries: int

    @property
    def title(self) -> str:
        """Readable one-line title, e.g. ``cmr-7t (test) | ankenbrand2021 v1.0``."""
        return (f"{self.dataset.get('name', '?')} ({self.split}) | {self.protocol.get('name', '?')} "
                f"v{self.protocol.get('version', '?')}")


class Leaderboard:
    """A leaderboard folder (see the module docstring for the layout).

    Args:
        root: the folder (created on the first write). Default: :func:`default_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        #: corrupt files found while reading: path -> why (the entry or benchmark was skipped).
        self.skipped: dict[str, str] = {}

    def problems(self, bench: str | None = None) -> list[str]:
        """One line per corrupt benchmark, entry or marker found so far (of ``bench`` when given): what was
        skipped and why. Reading never fails on one bad entry; this says what was left out."""
        pre = None if bench is None else str(self.root / bench)
        return [f"skipped {p}: {why}" for p, why in self.skipped.items()
                if pre is None or p == pre or p.startswith(pre + os.sep)]

    def __repr__(self) -> str:
        return f"Leaderboard({str(self.root)!r})"

    # ---- listing

    def benchmark_ids(self) -> list[str]:
        """Ids of the benchmarks (folders holding a benchmark.json), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.startswith(".") and (p / BENCHMARK_FILE).is_file())

    def benchmark(self, bench: str) -> BenchmarkInfo:
        """Information about one benchmark.

        Raises:
            LeaderboardError: no such benchmark (the message lists the existing ones).
        """
        path = self.root / bench
        f = path / BENCHMARK_FILE
        if not f.is_file():
            have = ", ".join(self.benchmark_ids()) or "none"
            raise LeaderboardError(f"{self.root}: no benchmark '{bench}' (available: {have})")
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(d, dict) or not isinstance(d.get("protocol", {}), dict) or \
                    not isinstance(d.get("dataset", {}), dict):
                raise ValueError("not a JSON object with dataset and protocol objects")
        except (OSError, ValueError) as e:
            why = f"{f}: corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            self.skipped[str(path)] = why
            raise LeaderboardError(f"{why}; restore it from a backup, or remove the benchmark folder "
                                   "(its entries can be added again)") from None
        return BenchmarkInfo(bench, path, d.get("dataset", {}), d.get("split", "all"), d.get("protocol", {}),
                             len(self.entry_names(bench)))

    def benchmarks(self) -> list[BenchmarkInfo]:
        """All readable benchmarks (a corrupt benchmark.json is skipped and named by :meth:`problems`)."""
        out = []
        for b in self.benchmark_ids():
            try:
                out.append(self.benchmark(b))
            except LeaderboardError:
                continue
        return out

    def entry_names(self, bench: str) -> list[str]:
        """Names of the complete entries of ``bench`` (hidden temporary folders ignored), sorted."""
        d = self.root / bench / ENTRIES
        if not d.is_dir():
            return []
        return sorted(p.name for p in os.scandir(d)
                      if not p.name.startswith(".") and p.is_dir() and os.path.exists(os.path.join(p.path, "summary.json")))

    def entry(self, bench: str, name: str) -> Entry:
        """One entry.

        Raises:
            LeaderboardError: no such benchmark or entry (lists what exists).
        """
        path = self.root / bench / ENTRIES / name
        if not (path / "summary.json").is_file():
            self.benchmark(bench)
            have = ", ".join(self.entry_names(bench)) or "none"
            raise LeaderboardError(f"{self.root / bench}: no entry '{name}' (entries: {have})")
        meta = _read_yaml(path / "submission.yaml")
        return Entry(bench, name, path, meta)

    def stamp(self, bench: str | None = None) -> tuple:
        """A cheap fingerprint that changes whenever an entry is added, replaced or removed.

        One ``stat`` per entry (``summary.json`` mtime in ns and size); used as a cache key by the
        dashboard so a reload shows new entries.
        """
        if bench is None:
            return tuple((b, self.stamp(b)) for b in self.benchmark_ids())
        out = []
        d = self.root / bench / ENTRIES
        if d.is_dir():
            for p in os.scandir(d):
                if p.name.startswith("."):
                    continue
                try:
                    st = os.stat(os.path.join(p.path, "summary.json"))
                except OSError:
                    continue
                out.append((p.name, st.st_mtime_ns, st.st_size))
        try:
            bst = os.stat(self.root / bench / BENCHMARK_FILE)
            out.append(("", bst.st_mtime_ns, bst.st_size))
        except OSError:
            pass
        return tuple(sorted(out))

    # ---- index (derived cache of metadata and aggregates)

    def _entry_stamp(self, bench: str, name: str) -> list[int]:
        """mtime (ns) and size of summary.json and of the per-case table: the index record is rebuilt
        (and checked again) when either changes."""
        path = self.root / bench / ENTRIES / name
        st = os.stat(path / "summary.json")
        out = [st.st_mtime_ns, st.st_size]
        for f in ("per_case.parquet", "per_case.csv"):
            try:
                pst = os.stat(path / f)
            except OSError:
                continue
            out += [pst.st_mtime_ns, pst.st_size]
            break
        return out

    def _index_record(self, bench: str, name: str) -> dict:
        """The index record of one entry; raises LeaderboardError when the entry is corrupt."""
        path = self.root / bench / ENTRIES / name
        stamp = self._entry_stamp(bench, name)
        try:
            summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LeaderboardError(f"{path / 'summary.json'}: not readable JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(summary, dict):
            raise LeaderboardError(f"{path / 'summary.json'}: not a JSON object")
        results = summary.get("results") or []
        counts = summary.get("counts") or {}
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results) or \
                not isinstance(counts, dict) or not isinstance(summary.get("clinical") or {}, dict):
            raise LeaderboardError(f"{path / 'summary.json'}: results/counts/clinical have the wrong type")
        read_per_case(path)  # raises LeaderboardError / FileNotFoundError naming the table
        meta = _read_yaml(path / "submission.yaml")
        return {
            "stamp": stamp,
            "meta": meta,
            "counts": {k: counts.get(k) for k in ("subjects", "volumes", "images")},
            "classes": summary.get("classes") or [],
            "created": summary.get("created"),
            "cardbench_version": summary.get("cardbench_version"),
            "results": results,
            "clinical": {"available": bool((summary.get("clinical") or {}).get("available")),
                         "agreement": (summary.get("clinical") or {}).get("agreement") or []},
        }

    def index(self, bench: str, write: bool = True) -> dict:
        """The benchmark's index: ``{name: record}`` with metadata and aggregated figures per entry.

        Read from ``index.json`` when it matches the folder listing; otherwise the stale records are
        rebuilt from the entry folders and, when ``write`` and the folder is writable, saved.
        """
        bdir = self.root / bench
        idx_path = bdir / INDEX_FILE
        edir = bdir / ENTRIES
        if write and edir.is_dir() and any(_TMP_RE.match(n) for n in os.listdir(edir)):
            # a writer was killed (or is running): recover only when no writer holds the lock
            with _try_locked(bdir) as got:
                if got:
                    _recover(edir)
        try:
            idx = json.loads(idx_path.read_text(encoding="utf-8"))
            records = idx.get("entries", {}) if idx.get("format") == FORMAT_VERSION else {}
        except (OSError, ValueError):
            records = {}
        names = self.entry_names(bench)
        changed = set(records) - set(names)
        for n in list(changed):
            records.pop(n, None)
        for n in names:
            rec = records.get(n)
            try:
                stamp = self._entry_stamp(bench, n)
            except OSError:
                continue
            if rec is None or rec.get("stamp") != stamp:
                try:
                    records[n] = self._index_record(bench, n)
                except (LeaderboardError, FileNotFoundError, OSError) as e:
                    # one corrupt entry is skipped and named; the benchmark stays readable
                    self.skipped[str(bdir / ENTRIES / n)] = str(e)
                    records.pop(n, None)
                changed.add(n)
        records = {n: records[n] for n in names if n in records}
        if changed and write:
            with contextlib.suppress(OSError):
                atomic_write_text(idx_path, to_json({"format": FORMAT_VERSION, "entries": records}, indent=None))
        return records

    def tables(self, bench: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(:meth:`entries_table`, :meth:`aggregates_table`) from one read of the index."""
        idx = self.index(bench)
        return self.entries_table(bench, idx), self.aggregates_table(bench, idx)

    def entries_table(self, bench: str, index: dict | None = None) -> pd.DataFrame:
        """One row per entry: name, label, team, method, url, added, source, published, counts."""
        rows = []
        for name, rec in (self.index(bench) if index is None else index).items():
            m = rec.get("meta") or {}
            row = {"entry": name}
            for k in ("label", "team", "method", "training_data", "url", "added", "source", "published"):
                row[k] = m.get(k)
            row.update({f"n_{k}": v for k, v in (rec.get("counts") or {}).items()})
            row["created"] = rec.get("created")
            row["cardbench_version"] = rec.get("cardbench_version")
            row["published_values"] = m.get("published_values")
            rows.append(row)
        cols = ["entry", "label", "team", "method", "training_data", "url", "added", "source", "published",
                "n_subjects", "n_volumes", "n_images", "created", "cardbench_version", "published_values"]
        return pd.DataFrame(rows, columns=cols)

    def aggregates_table(self, bench: str, index: dict | None = None) -> pd.DataFrame:
        """All aggregated figures of all entries (long form): entry + the aggregate columns.

        Clinical agreement figures (summary.json ``clinical.agreement``: one record per index and
        group) are included as rows with ``class`` = the index (LVEDV, LVEF, LVM...) and ``metric``
        = the statistic (:data:`CLINICAL_STATS`: mae, bias, sd_diff, pearson_r), ``mean`` its value
        and ``ci_low``/``ci_high`` its subject-bootstrap CI, so they rank like any metric.
        """
        cols = ["entry", "grouping", "group", "class", "metric", "mean", "ci_low", "ci_high", "std", "median",
                "n_subjects", "n_values", "n_excluded"]
        records: list[dict] = []
        for name, rec in (self.index(bench) if index is None else index).items():
            records.extend({"entry": name, **r} for r in rec.get("results") or [])
            records.extend({"entry": name, **r} for r in _clinical_rows((rec.get("clinical") or {}).get("agreement")
                                                                       or []))
        out = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=cols)
        out = out[[c for c in cols if c in out.columns] + [c for c in out.columns if c not in cols]]
        for c in ("mean", "ci_low", "ci_high", "std", "median"):
            if c in out.columns:
                out[c] = pd.to_numeric(out[c], errors="coerce")
        return out

    # ---- ranking

    def metrics(self, bench: str) -> list[str]:
        """Metric names present in the benchmark's aggregates, in protocol order then the rest."""
        agg = self.aggregates_table(bench)
        present = list(dict.fromkeys(agg["metric"].dropna().tolist())) if len(agg) else []
        proto = self.benchmark(bench).protocol.get("metrics", [])
        return [m for m in proto if m in present] + [m for m in present if m not in proto]

    def ranked(self, bench: str, metric: str = "dice_lv", *, metrics: Iterable[str] | None = None,
               group: str | None = None, aggregates: pd.DataFrame | None = None,
               entries: pd.DataFrame | None = None) -> pd.DataFrame:
        """The ranked leaderboard of one benchmark (wide form, best first).

        Args:
            bench: benchmark id.
            metric: ranking metric ``<metric>_<class>[_<phase>]`` (see :func:`parse_metric`); when
                the class is omitted the first class of the benchmark is used.
            metrics: metric families to show as columns (default: the ranking metric's family).
            group: aggregate group (``all``, ``ED``, ``ES``, a split name); overrides the phase in
                ``metric``.
            aggregates, entries: precomputed :meth:`aggregates_table` / :meth:`entries_table`
                (the dashboard passes its cached copies).

        Returns:
            DataFrame with ``rank`` (Int64; NA for entries without the metric), ``entry``,
            ``label``, ``team``, then per shown metric and class ``<metric>_<class>``,
            ``<metric>_<class>_ci_low``, ``<metric>_<class>_ci_high``, then ``n_subjects`` and
            ``n_values`` of the ranking metric, ``published``, ``added``. ``df.attrs`` holds
            ``metric``, ``class``, ``group``, ``direction`` (+1 higher is better, -1 lower),
            ``rank_column`` and ``has_ci``.

        Raises:
            LeaderboardError: unknown benchmark, metric, class or group (lists the valid ones).
        """
        info = self.benchmark(bench)
        if aggregates is None or entries is None:
            entries, aggregates = self.tables(bench)
        agg, ent = aggregates, entries
        return rank_table(agg, ent, metric, metrics=metrics, group=group, protocol=info.protocol,
                          bench=bench)

    # ---- writing

    def add(self, result: ScoreResult, name: str | None = None, *, meta: dict | None = None,
            replace: bool = False, per_case_format: str = "csv", source: str = "cardbench score") -> Entry:
        """Add a scored submission as an entry (atomically).

        Args:
            result: a :class:`ScoreResult` from :func:`cardbench.benchmark.score` (or
                ``score_confusion_table``, ``reproduce_ankenbrand2021``...).
            name: entry name (default: the submission name, made safe); see :func:`check_name`.
            meta: extra submission.yaml fields (label, team, method, training_data, url, published...).
            replace: replace an existing entry of the same name (else it is an error).
            per_case_format: ``csv`` (default, readable everywhere) or ``parquet`` (needs pyarrow).
            source: how the entry was made (stored in submission.yaml).

        Returns:
            The new :class:`Entry`.

        Raises:
            LeaderboardError: invalid name, entry exists and not ``replace``, or the result was
                scored with another protocol version/policy or dataset version than the benchmark.
        """
        if per_case_format not in ("csv", "parquet"):
            raise LeaderboardError(f"per_case_format must be 'csv' or 'parquet', not {per_case_format!r}")
        summary = result.summary
        bench = benchmark_id(summary)
        name = check_name(name if name is not None else safe_name(
            (summary.get("submission") or {}).get("name") or "submission"))
        bdir = self.root / bench
        with _locked(bdir):
            _recover(bdir / ENTRIES)
            self._ensure_benchmark(bench, summary)
            dest = bdir / ENTRIES / name
            if dest.exists() and not replace:
                raise LeaderboardError(f"{bdir}: entry '{name}' already exists; choose another name (--name) or "
                                       f"remove it first: cardbench leaderboard remove {name} --benchmark {bench} "
                                       f"{self.root}")
            sub_meta = _submission_meta(result, name, meta, source)
            with atomic_dir(dest, overwrite=True, owned_only=False) as tmp:
                _write_entry(tmp, result, sub_meta, per_case_format)
            self.index(bench)
        return Entry(bench, name, dest, sub_meta)

    def _ensure_benchmark(self, bench: str, summary: dict) -> None:
        f = self.root / bench / BENCHMARK_FILE
        proto = summary["protocol"]
        ds = summary.get("dataset") or {}
        want = {"id": bench, "dataset": {"name": ds.get("name"), "version": ds.get("version")},
                "split": summary.get("split") or "all", "protocol": proto}
        if not f.is_file():
            want["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            atomic_write_text(f, to_json(want) + "\n")
            return
        try:
            have = json.loads(f.read_text(encoding="utf-8"))
            hp = have.get("protocol", {})
            if not isinstance(hp, dict):
                raise ValueError("protocol is not an object")
        except (ValueError, AttributeError) as e:  # never overwrite a benchmark we cannot read
            raise LeaderboardError(f"{f}: corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__}); nothing "
                                   "was added: restore it from a backup, or remove the benchmark folder") from None
        if not protocols_compatible(hp, proto):
            raise LeaderboardError(
                f"{f}: benchmark '{bench}' uses protocol {hp.get('name')} v{hp.get('version')}, but this result was "
                f"scored with {proto.get('name')} v{proto.get('version')} (different version or policy); rescore "
                "with the benchmark's protocol version or use a separate leaderboard folder")
        hv = (have.get("dataset") or {}).get("version")
        if hv != ds.get("version"):
            raise LeaderboardError(
                f"{f}: benchmark '{bench}' holds dataset {ds.get('name')} version {hv!r}, but this result was scored "
                f"against version {ds.get('version')!r}; score against the same dataset version or use a separate "
                "leaderboard folder")

    def remove(self, bench: str, name: str) -> None:
        """Remove an entry (atomically: renamed aside, then deleted; the index is updated).

        Raises:
            LeaderboardError: no such benchmark or entry.
        """
        self.entry(bench, name)
        bdir = self.root / bench
        with _locked(bdir):
            path = bdir / ENTRIES / name
            trash = bdir / ENTRIES / f".{name}.removed.tmp"
            if trash.exists():
                shutil.rmtree(trash)
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
            self.index(bench)

    def export(self, out: str | os.PathLike, bench: str | None = None, metric: str = "dice_lv",
               formats: Iterable[str] = ("csv", "markdown", "json"), with_entries: bool = False) -> list[Path]:
        """Export ranked tables (and optionally full entries) to a folder.

        Writes ``<out>/<benchmark>.csv`` / ``.md`` / ``.json`` for each benchmark (or only
        ``bench``), ranked by ``metric`` (benchmarks without that metric are ranked by their first
        metric and class), plus, with ``with_entries``, a copy of each benchmark folder under
        ``<out>/leaderboard/`` (a leaderboard another user can open). Every file is written
        atomically. Returns the written paths.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        benches = [bench] if bench else self.benchmark_ids()
        for b in benches:
            try:
                df = self.ranked(b, metric)
            except LeaderboardError:
                ms = self.metrics(b)
                df = self.ranked(b, ms[0] if ms else "dice")
            for fmt in formats:
                ext = {"csv": "csv", "markdown": "md", "json": "json"}[fmt]
                p = out / f"{b}.{ext}"
                atomic_write_text(p, render(df, fmt, title=self.benchmark(b).title))
                written.append(p)
            if with_entries:
                dst = out / "leaderboard" / b
                with atomic_dir(dst, overwrite=True, owned_only=False) as tmp:
                    shutil.copy2(self.root / b / BENCHMARK_FILE, tmp / BENCHMARK_FILE)
                    for n in self.entry_names(b):
                        shutil.copytree(self.root / b / ENTRIES / n, tmp / ENTRIES / n)
                written.append(dst)
        return written

    # ---- pre-filling

    def marker(self) -> dict:
        """Content of the root marker file (format, pre-filled sources).

        A missing marker reads as "nothing pre-filled yet". A marker that exists but is not readable
        JSON (or not an object) reads with ``"corrupt"`` set to the reason: it is not known which
        published entries the user removed, so :meth:`prefill` adds nothing until ``force``.
        """
        f = self.root / MARKER
        if not f.exists():
            return {"format": FORMAT_VERSION, "prefilled": {}}
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(d, dict) or not isinstance(d.get("prefilled", {}), dict):
                raise ValueError("not a JSON object with a 'prefilled' object")
            return d
        except (OSError, ValueError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            return {"format": FORMAT_VERSION, "prefilled": {}, "corrupt": why}

    def prefill(self, sources: Iterable[str] | None = None, *, force: bool = False,
                progress: bool = False) -> list[Entry]:
        """Add the published entries of :data:`PREFILL_SOURCES` that this folder has not had yet.

        A source is done once: an entry the user later removes does not come back (unless
        ``force``). Existing entries of the same name are kept, never overwritten. The scores are
        computed now by cardbench's own scoring from the published files embedded in the package.

        Args:
            sources: keys of :data:`PREFILL_SOURCES` (default: all).
            force: run sources already recorded in the marker again (missing entries are re-added).
            progress: show a rich progress bar on stderr.

        Returns:
            The entries added.
        """
        keys = list(sources) if sources is not None else list(PREFILL_SOURCES)
        unknown = [k for k in keys if k not in PREFILL_SOURCES]
        if unknown:
            raise LeaderboardError(f"unknown pre-fill source(s) {unknown}; available: {list(PREFILL_SOURCES)}")
        added: list[Entry] = []
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root):
            marker = self.marker()
            if marker.get("corrupt") and not force:
                self.skipped[str(self.root / MARKER)] = (
                    f"corrupt ({marker['corrupt']}); published entries were not added again, so none you "
                    f"removed comes back. Fix: `cardbench leaderboard prefill {self.root} --force` re-adds them all")
                return added
            marker.pop("corrupt", None)
            todo = [k for k in keys if force or k not in marker.get("prefilled", {})]
            if not todo:
                return added
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
                task = bar.add_task("scoring the published leaderboard entries", total=len(todo))
                for key in todo:
                    names = []
                    for result, name, meta in PREFILL_SOURCES[key].build():
                        bench = benchmark_id(result.summary)
                        if (self.root / bench / ENTRIES / name / "summary.json").exists():
                            names.append(f"{bench}/{name}")
                            continue
                        meta = {"published": True, **meta}
                        added.append(self.add(result, name, meta=meta, source=f"pre-filled: {key}"))
                        names.append(f"{bench}/{name}")
                    marker.setdefault("prefilled", {})[key] = {
                        "cardbench_version": __version__,
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "entries": names}
                    marker["format"] = FORMAT_VERSION
                    atomic_write_text(self.root / MARKER, to_json(marker) + "\n")
                    bar.advance(task)
        return added


def _clinical_rows(agreement: list[dict]) -> list[dict]:
    out = []
    for a in agreement:
        for stat in CLINICAL_STATS:
            if stat not in a:
                continue
            n = a.get("n_subjects")
            out.append({"grouping": a.get("grouping", "all"), "group": a.get("group", "all"),
                        "class": a.get("index"), "metric": stat, "mean": a.get(stat),
                        "ci_low": a.get(f"{stat}_ci_low"), "ci_high": a.get(f"{stat}_ci_high"),
                        "std": None, "median": None, "n_subjects": n, "n_values": n,
                        "n_excluded": a.get("n_excluded", 0), "unit": a.get("unit")})
    return out


def _read_yaml(path: Path) -> dict:
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return d if isinstance(d, dict) else {}


def _write_entry(folder: Path, result: ScoreResult, meta: dict, per_case_format: str) -> None:
    """Fill a (temporary) entry folder. Called inside :func:`atomic_dir`; any exception discards it."""
    (folder / "summary.json").write_text(to_json(result.summary) + "\n", encoding="utf-8")
    if per_case_format == "parquet":
        try:
            result.per_case.to_parquet(folder / "per_case.parquet", index=False)
        except ImportError as e:
            raise LeaderboardError(f"writing Parquet needs pyarrow ({e}); pip install pyarrow or use "
                                   "per_case_format='csv'") from None
    else:
        # 10 significant digits: per-case values read back agree with the aggregates to ~1e-10
        result.per_case.to_csv(folder / "per_case.csv", index=False, float_format="%.10g")
    if result.per_subject is not None and len(result.per_subject.columns):
        result.per_subject.to_csv(folder / "per_subject.csv", index=False, float_format="%.10g")
    _aggregates_of(result).to_csv(folder / "aggregates.csv", index=False, float_format="%.10g")
    for tname, df in (result.extra_tables or {}).items():
        if f"{tname}.csv" in _STANDARD_FILES:
            continue
        df.to_csv(folder / f"{safe_name(tname)}.csv", index=False, float_format="%.10g")
    (folder / "submission.yaml").write_text(yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True),
                                            encoding="utf-8")


def _plain(x):
    return json.loads(to_json(x))


# --------------------------------------------------------------------------------------------
# ranking and rendering (pure functions on tables)


def rank_table(aggregates: pd.DataFrame, entries: pd.DataFrame, metric: str = "dice_lv", *,
               metrics: Iterable[str] | None = None, group: str | None = None, protocol: dict | None = None,
               bench: str = "") -> pd.DataFrame:
    """Rank entries from the long aggregates table; see :meth:`Leaderboard.ranked` for the columns.

    Raises:
        LeaderboardError: the metric, class or group is not in the table (lists the valid ones).
    """
    m, cls, grp = parse_metric(metric)
    group = group or grp
    agg = aggregates
    if group == "all":
        sel = agg[(agg["grouping"] == "all")]
    else:
        sel = agg[(agg["group"] == group) & (agg["grouping"].isin(["phase", "split", "position"]))]
    if sel.empty:
        groups = sorted(set(agg.loc[agg["grouping"].isin(["phase", "split", "position"]), "group"]) - {"-"})
        raise LeaderboardError(f"benchmark '{bench}': no aggregate for group '{group}' "
                               f"(groups: all{', ' if groups else ''}{', '.join(groups)})")
    present_metrics = list(dict.fromkeys(sel["metric"]))
    if m not in present_metrics and "_" in m and m.rsplit("_", 1)[0] in present_metrics:
        fam, bad = m.rsplit("_", 1)
        known = [c for c in dict.fromkeys(sel.loc[sel["metric"] == fam, "class"])]
        raise LeaderboardError(f"benchmark '{bench}': no class '{bad.upper()}' for metric '{fam}' "
                               f"(classes: {', '.join(known)}); give --metric as <metric>_<class>, e.g. {fam}_lv")
    if m not in present_metrics:
        raise LeaderboardError(f"benchmark '{bench}': no metric '{m}' (metrics: {', '.join(present_metrics)}); "
                               "give --metric as <metric>_<class>[_<phase>], e.g. dice_lv")
    msel = sel[sel["metric"] == m]
    classes = [c for c in (*CLASSES, *CLINICAL_INDICES) if c in set(msel["class"])] + \
        [c for c in dict.fromkeys(msel["class"]) if c not in CLASSES and c not in CLINICAL_INDICES]
    if cls is None:
        cls = classes[0]
    if cls not in classes:
        raise LeaderboardError(f"benchmark '{bench}': no class '{cls}' (classes: {', '.join(classes)})")
    shown = list(dict.fromkeys([m, *(metrics or [])]))
    wide = pd.DataFrame({"entry": entries["entry"]}) if len(entries) else pd.DataFrame({"entry": []})
    wide = wide.merge(entries, on="entry", how="left")
    for mm in shown:
        for c in classes:
            s = sel[(sel["metric"] == mm) & (sel["class"] == c)].drop_duplicates("entry").set_index("entry")
            key = f"{mm}_{c}"
            wide[key] = wide["entry"].map(s["mean"]).astype(float)
            wide[key + "_ci_low"] = wide["entry"].map(s["ci_low"]).astype(float)
            wide[key + "_ci_high"] = wide["entry"].map(s["ci_high"]).astype(float)
            if mm == m and c == cls:
                wide["n_subjects"] = wide["entry"].map(s["n_subjects"])
                wide["n_values"] = wide["entry"].map(s["n_values"])
                wide["n_excluded"] = wide["entry"].map(s["n_excluded"])
    rank_col = f"{m}_{cls}"
    if "published_values" in wide:
        # the value a paper published for this entry (submission.yaml ``published_values``), shown
        # next to the recomputed one when it is for the same metric, class and protocol
        pname = (protocol or {}).get("name")

        def _paper(pv):
            if not isinstance(pv, dict) or group != "all" or pv.get("protocol") != pname:
                return np.nan
            v = pv.get(rank_col)
            return float(v) if isinstance(v, (int, float)) else np.nan
        paper = wide["published_values"].map(_paper).astype(float)
        wide = wide.drop(columns="published_values")
        if paper.notna().any():
            wide["paper_" + rank_col] = paper
    direction = metric_direction(m)
    vals = wide[rank_col]
    key = vals.abs() if direction == 0 else vals * -direction
    rank = key.rank(method="min", na_option="keep")
    wide.insert(0, "rank", rank.astype("Int64"))
    wide = wide.assign(_k=key.fillna(np.inf)).sort_values(["_k", "entry"], kind="stable")
    wide = wide.drop(columns="_k").reset_index(drop=True)
    has_ci = bool(wide[[c for c in wide.columns if c.endswith("_ci_low")]].notna().any().any())
    # units per class: the metric's (mm for distances), or each clinical index's own (mL, %, g)
    units = {c: unit_of(m) for c in classes}
    if "unit" in msel.columns and m != "pearson_r":
        for c, u in msel.dropna(subset=["unit"]).drop_duplicates("class").set_index("class")["unit"].items():
            if c in CLINICAL_INDICES:
                units[c] = str(u)
    wide.attrs.update({"metric": m, "class": cls, "group": group, "direction": direction,
                       "rank_column": rank_col, "has_ci": has_ci, "shown_metrics": shown, "classes": classes,
                       "unit": units.get(cls, ""), "units": units, "protocol": (protocol or {}).get("name"),
                       "benchmark": bench})
    return wide


def metric_direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 closer to zero is better (a bias)."""
    if metric in CLINICAL_STATS:
        return CLINICAL_STATS[metric]
    return direction_of(metric, 1)


def direction_text(direction: int) -> str:
    """'higher is better', 'lower is better' or 'closer to 0 is better'."""
    return {1: "higher is better", -1: "lower is better"}.get(direction, "closer to 0 is better")


def _fmt_num(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "-"
    return f"{x:.{digits}f}"


def display_table(ranked: pd.DataFrame, digits: int | None = None) -> pd.DataFrame:
    """Readable strings: ``mean [ci_low, ci_high]`` per metric and class (CI only where present)."""
    a = ranked.attrs
    out = pd.DataFrame({"rank": ranked["rank"].map(lambda r: "-" if pd.isna(r) else str(int(r))),
                        "entry": ranked["entry"]})
    if "label" in ranked:
        out["label"] = ranked["label"].fillna("")
    for mm in a.get("shown_metrics", []):
        d = digits if digits is not None else digits_of(mm, 3 if mm == "pearson_r" else 2)
        for c in a.get("classes", []):
            key = f"{mm}_{c}"
            if key not in ranked:
                continue
            cells = []
            for v, lo, hi in zip(ranked[key], ranked[key + "_ci_low"], ranked[key + "_ci_high"]):
                s = _fmt_num(v, d)
                if not (pd.isna(lo) or pd.isna(hi)):
                    s += f" [{lo:.{d}f}, {hi:.{d}f}]"
                cells.append(s)
            unit = (a.get("units") or {}).get(c, "") if mm == a.get("metric") else unit_of(mm)
            out[f"{mm} {c}" + (f" ({unit})" if unit else "")] = cells
    if "paper_" + str(a.get("rank_column")) in ranked:
        d = digits_of(str(a.get("metric")))
        out[f"published {a.get('metric')} {a.get('class')}"] = ranked["paper_" + a["rank_column"]].map(
            lambda v: _fmt_num(v, d))
    if "n_subjects" in ranked:
        out["subjects"] = ranked["n_subjects"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
        out["values"] = ranked["n_values"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
    return out


def render(ranked: pd.DataFrame, fmt: str = "csv", title: str = "") -> str:
    """Render a ranked table as ``csv`` (numbers), ``json`` (records + attrs) or ``markdown``.

    Raises:
        LeaderboardError: unknown format.
    """
    if fmt == "csv":
        return ranked.to_csv(index=False, float_format="%.10g")
    if fmt == "json":
        recs = json.loads(ranked.to_json(orient="records"))
        return to_json({"benchmark": ranked.attrs.get("benchmark"), "title": title,
                        "ranked_by": ranked.attrs.get("rank_column"), "group": ranked.attrs.get("group"),
                        "direction": direction_text(ranked.attrs.get("direction", 1)), "entries": recs}) + "\n"
    if fmt == "markdown":
        disp = display_table(ranked)
        lines = []
        if title:
            lines += [f"### {title}", ""]
        a = ranked.attrs
        lines += [f"Ranked by {a.get('rank_column')} ({a.get('group')}), {direction_text(a.get('direction', 1))}"
                  + ("; 95 % CI in brackets" if a.get("has_ci") else "") + ".", ""]
        cols = list(disp.columns)
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---:" if c not in ("entry", "label") else "---" for c in cols) + "|")
        for _, r in disp.iterrows():
            lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
        return "\n".join(lines) + "\n"
    raise LeaderboardError(f"unknown format {fmt!r}; use table, csv, markdown or json")


# --------------------------------------------------------------------------------------------
# pre-fill sources and module-level helpers


@dataclass(frozen=True)
class PrefillSource:
    """A set of published entries computed by cardbench on first use.

    ``build()`` yields ``(result, entry name, submission.yaml fields)``.
    """

    key: str
    description: str
    build: Callable[[], Iterable[tuple[ScoreResult, str, dict]]]


#: Published entries pre-filled on first use (key -> source), in registration order. Empty here:
#: a study's reproduction registers its sources with :func:`register_prefill_source` (importing
#: :mod:`cardbench.reproductions` registers the seed paper's; the ``cardbench`` command and the
#: dashboard do so).
PREFILL_SOURCES: dict[str, PrefillSource] = {}


def register_prefill_source(key: str, description: str,
                            build: Callable[[], Iterable[tuple[ScoreResult, str, dict]]]) -> None:
    """Register published entries that :meth:`Leaderboard.prefill` adds on first use.

    ``build()`` must compute its results with cardbench's scoring (never typed-in numbers) and
    yield ``(ScoreResult, entry name, submission.yaml fields)``. Each key runs once per folder.
    """
    PREFILL_SOURCES[key] = PrefillSource(key, description, build)


def open_leaderboard(root: str | os.PathLike | None = None, prefill: bool = True,
                     progress: bool = False) -> Leaderboard:
    """Open (and on first use pre-fill) a leaderboard folder.

    Args:
        root: the folder (default: :func:`default_root`).
        prefill: add published entries from sources this folder has not had yet
            (see :meth:`Leaderboard.prefill`). Skipped when the folder is not writable.
        progress: progress bar on stderr while pre-filling.
    """
    lb = Leaderboard(root)
    if prefill:
        try:
            lb.prefill(progress=progress)
        except PermissionError:
            pass
    return lb


def add_entry(result: ScoreResult, root: str | os.PathLike | None = None, name: str | None = None, *,
              meta: dict | None = None, replace: bool = False, per_case_format: str = "csv",
              prefill: bool = True, source: str = "cardbench score") -> Entry:
    """Add a scored result to a leaderboard folder; the one call other parts need.

    Args:
        result: a :class:`ScoreResult` (from ``cardbench.benchmark.score`` and friends).
        root: leaderboard folder (default: :func:`default_root`, pre-filled on first use).
        name: entry name (default: the submission's name); see :func:`check_name`.
        meta: extra submission.yaml fields, e.g. ``{"label": "U-Net resnet18", "team": "...",
            "method": "...", "training_data": "sunnybrook-sample train", "url": "..."}``.
        replace: overwrite an entry of the same name.
        per_case_format: ``csv`` or ``parquet``.
        prefill: pre-fill the folder with the published entries if it has not been yet.
        source: provenance note stored in submission.yaml.

    Returns:
        The :class:`Entry` (``entry.benchmark``, ``entry.name``, ``entry.path``).

    Raises:
        LeaderboardError: see :meth:`Leaderboard.add`.
    """
    lb = open_leaderboard(root, prefill=prefill)
    return lb.add(result, name, meta=meta, replace=replace, per_case_format=per_case_format, source=source)
