"""The on-disk layout of a leaderboard folder: names and ids, constants, the advisory lock and crash
recovery, and reading and writing one entry folder (see :mod:`cardbench.benchmark.leaderboard`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd
import yaml

from cardbench.benchmark.protocols import benchmark_suffix
from cardbench.benchmark import results as _results
from cardbench.benchmark.results import (  # noqa: F401  (PER_CASE_REQUIRED re-exported)
    PER_CASE_REQUIRED, ResultFolderError, ScoreResult, to_json,
)

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


class NoValidEntryError(LeaderboardError):
    """A benchmark has no entry to rank: none yet, or every entry was skipped as corrupt (each named
    by :meth:`~cardbench.benchmark.leaderboard.Leaderboard.problems`)."""


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


def _unreserved(name: str) -> str:
    """A suggestion for a name that Windows reserves: the reserved stem gets ``_1`` (``CON.txt`` ->
    ``CON_1.txt``), a trailing '.' is dropped; the suggestion itself is valid."""
    stem, dot, rest = name.rstrip(".").partition(".")
    return f"{stem}_1{dot}{rest}" if stem.lower() in _WINDOWS_RESERVED else name.rstrip(".") or "entry"


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
                               f"choose another, e.g. {_unreserved(name)!r}")
    return name


def _legacy_version(dataset: str | None, have: str | None, want: str | None) -> bool:
    """True when a benchmark folder written before cardbench used the card's version for the seed's
    references (``"ankenbrand2021"`` for cmr-7t, cmr-7t-tr and kaggle-dsb-manual-masks) meets a result
    with that card's version: the same data, so such a leaderboard keeps taking entries."""
    if have != "ankenbrand2021" or not dataset:
        return False
    from cardbench.benchmark.confusion_tables import KNOWN_REFERENCES, reference_version

    return any(known.dataset == dataset and reference_version(ref) == want for ref, known in KNOWN_REFERENCES.items())


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


def _per_case_file(folder: Path) -> Path:
    """The entry's per-case table file (Parquet when both exist, as the reader takes it)."""
    pq = folder / "per_case.parquet"
    return pq if pq.exists() or pq.is_symlink() else folder / "per_case.csv"


def read_per_case(folder: Path, summary: dict | None = None) -> pd.DataFrame:
    """Read an entry's per-case table (:func:`cardbench.benchmark.results.read_per_case`), and compare its
    rows per level, class and status with the counts of the entry's ``summary.json``
    (:func:`cardbench.benchmark.results.check_per_case_counts`), so a table cut at a row boundary is
    refused.

    Args:
        folder: the entry folder.
        summary: its summary.json when already read; None: read here (checked), not compared when the
            entry has none.

    Raises:
        FileNotFoundError: neither per_case.parquet nor per_case.csv exists (names the folder).
        LeaderboardError: the table is corrupt, disagrees with summary.json's counts, or Parquet without
            pyarrow (names the file and the fix).
    """
    folder = Path(folder)
    try:
        df = _results.read_per_case(folder)
        if summary is None and ((folder / "summary.json").exists() or (folder / "summary.json").is_symlink()):
            summary = _results.read_summary_checked(folder)
        if summary is not None:
            _results.check_per_case_counts(df, summary, _per_case_file(folder))
        return df
    except ResultFolderError as e:
        raise LeaderboardError(str(e)) from None


#: numeric columns of an entry's clinical tables, checked (numbers or blanks, finite) before they are shown.
_CLINICAL_NUMBERS = ("ref", "pred", "diff", "abs_diff", "n_subjects", "bias", "sd_diff", "loa_low", "loa_high",
                     "mae", "pearson_r", "ref_mean", "pred_mean")


def read_entry(folder: Path) -> ScoreResult:
    """Read an entry folder into a :class:`ScoreResult` (summary, per-case, per-subject, aggregates and the
    extra ``*.csv`` tables, as :func:`cardbench.benchmark.results.read_result`), every file checked as a
    stranger's before it is used (the dashboard's pages read entries through this): no link, within
    ``max_entry_file_bytes``, a CSV complete (not cut mid-row) and readable;
    :func:`~cardbench.benchmark.results.read_summary_checked` and
    :func:`~cardbench.benchmark.results.check_summary_consistency` (its figures agree with each other),
    ``read_per_case`` (metric values within their range, rows as many as summary.json counts:
    :func:`~cardbench.benchmark.results.check_per_case_counts`), :func:`~cardbench.benchmark.results.read_per_subject_checked` (values in range and
    giving summary.json's figures), :func:`~cardbench.benchmark.results.read_table_checked` for
    ``aggregates.csv`` and the extra tables (clinical columns numbers).

    Raises:
        FileNotFoundError: summary.json or the per-case table is missing.
        LeaderboardError: a file is a link, too large, truncated, unreadable or holds an impossible
            value (one line naming the file, the problem and the fix).
    """
    folder = Path(folder)
    try:
        summary = _results.read_summary_checked(folder)
        _results.check_summary_consistency(summary, folder / "summary.json")
        per_case = _results.read_per_case(folder)
        _results.check_per_case_counts(per_case, summary, _per_case_file(folder))
        ps = folder / "per_subject.csv"
        per_subject = (_results.read_per_subject_checked(folder, summary=summary)
                       if ps.exists() or ps.is_symlink() else pd.DataFrame())
        ag = folder / "aggregates.csv"
        aggregates = (_results.read_table_checked(ag, numbers=("mean", "ci_low", "ci_high", "std", "median"))
                      if ag.exists() or ag.is_symlink() else pd.DataFrame(summary.get("results") or []))
        extra = {p.stem: _results.read_table_checked(p, dtype={"subject": str}, numbers=_CLINICAL_NUMBERS)
                 for p in sorted(folder.glob("*.csv")) if p.name not in _results.STANDARD_FILES}
    except ResultFolderError as e:
        raise LeaderboardError(str(e)) from None
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
    """An entry's ``submission.yaml`` as a dict (``{}`` when missing or not a mapping), read as a
    stranger's file: no link, within ``max_entry_file_bytes``
    (:func:`~cardbench.benchmark.results.check_stored_file`), then :mod:`cardbench._yamlsafe`'s reader
    (regular file, UTF-8, nesting within ``max_meta_depth``, YAML aliases expanding to at most
    1,000,000 values, so a "billion laughs" file is refused before it is built; SafeLoader: no tag
    builds an object).

    Raises:
        LeaderboardError: the file is refused (one line naming it, the problem and the fix).
    """
    import dataclasses

    from cardbench._yamlsafe import _load_small_yaml, _YamlRefused
    from cardbench.limits import get_limits

    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        _results.check_stored_file(path)
    except ResultFolderError as e:
        raise LeaderboardError(str(e)) from None
    except OSError:
        return {}
    lim = get_limits()
    lim = dataclasses.replace(lim, max_meta_bytes=lim.max_entry_file_bytes,
                              max_meta_nodes=max(lim.max_meta_nodes, 1_000_000))
    try:
        d = _load_small_yaml(path, lim, noun="an entry's submission.yaml")
    except _YamlRefused as e:
        raise LeaderboardError(f"{path}: {e.what}; the entry is corrupt: remove it and add it again") from None
    return d if isinstance(d, dict) else {}


def _write_entry(folder: Path, result: ScoreResult, meta: dict, per_case_format: str) -> None:
    """Fill a (temporary) entry folder. Called inside :func:`atomic_dir`; any exception discards it."""
    try:
        _results.write_tables(folder, result, per_case_format=per_case_format, aggregates=_aggregates_of(result),
                              skip_empty_per_subject=True, extra_name=safe_name, case_ids=False)
    except ImportError as e:
        raise LeaderboardError(f"writing Parquet needs pyarrow ({e}); pip install pyarrow or use "
                               "per_case_format='csv'") from None
    (folder / "submission.yaml").write_text(yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True),
                                            encoding="utf-8")


def _plain(x):
    return json.loads(to_json(x))
