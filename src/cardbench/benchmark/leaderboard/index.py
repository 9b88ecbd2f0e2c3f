"""``index.json``: the derived cache of every entry's metadata and aggregated figures, rebuilt from
the entry folders whenever it disagrees with them, and the tables read from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import pandas as pd

from cardbench._util import atomic_write_text
from cardbench.benchmark.leaderboard.folder import (
    BENCHMARK_FILE, ENTRIES, FORMAT_VERSION, INDEX_FILE, _TMP_RE, LeaderboardError, _clinical_rows,
    _read_yaml, _recover, _try_locked, read_per_case,
)
from cardbench.benchmark.results import (
    ResultFolderError, check_per_subject_against_per_case, check_stored_file, check_summary_consistency,
    read_per_subject_checked, to_json,
)


class IndexMixin:
    """:class:`~cardbench.benchmark.leaderboard.Leaderboard` methods on ``index.json``."""

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

    def _entry_stamp(self, bench: str, name: str) -> list[int]:
        """mtime (ns) and size of summary.json, of the per-case table and of per_subject.csv: the index
        record is rebuilt (and checked again) when any of them changes."""
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
        try:
            pst = os.stat(path / "per_subject.csv")
            out += [-1, pst.st_mtime_ns, pst.st_size]  # -1: a separator, so no stamp of the old format matches
        except OSError:
            pass
        return out

    def _bench_protocol(self, bench: str) -> dict | None:
        """benchmark.json's ``protocol`` (None when benchmark.json is unreadable: named by :meth:`problems`)."""
        try:
            return self.benchmark(bench).protocol
        except LeaderboardError:
            return None

    def _index_record(self, bench: str, name: str, protocol: dict | None = None) -> dict:
        """The index record of one entry, its files checked: summary.json (:func:`_summary_part`: in
        range, consistent, of the benchmark's ``protocol``) and the per-case table (in range, as many
        rows as summary.json counts) raise; per_subject.csv not giving summary.json's figures is noted
        in the record's ``problem`` (the record is kept, so :meth:`index` shows the entry's own
        figures) and :meth:`checked_index` leaves the entry out. The verdict is cached with the record
        (its stamp covers per_subject.csv), so a read of an unchanged board reads no table.

        Raises:
            LeaderboardError: the entry is corrupt (one line naming the file and the figure).
            FileNotFoundError: the per-case table is missing.
        """
        path = self.root / bench / ENTRIES / name
        stamp = self._entry_stamp(bench, name)
        summary = _read_summary_json(path / "summary.json")
        part = _summary_part(path / "summary.json", protocol, summary)
        per_case = read_per_case(path, summary)  # raises LeaderboardError / FileNotFoundError naming the table
        ps = path / "per_subject.csv"
        problem = None
        if ps.exists() or ps.is_symlink():
            try:
                check_per_subject_against_per_case(read_per_subject_checked(path, summary=summary), per_case,
                                                   summary, ps)
            except ResultFolderError as e:
                problem = str(e)
        meta = _read_yaml(path / "submission.yaml")
        return {"stamp": stamp, "meta": meta, **part, **({"problem": problem} if problem else {})}

    def checked_index(self, bench: str, index: dict | None = None) -> dict:
        """:meth:`index` without the entries whose files disagree with each other (a record's
        ``problem``: per_subject.csv not giving summary.json's figures), each named by
        :meth:`problems`: the one set of entries that ``leaderboard show``, every file of
        ``leaderboard export`` and the dashboard use."""
        records = self.index(bench) if index is None else index
        out = {}
        for n, rec in records.items():
            if isinstance(rec, dict) and rec.get("problem"):
                self.skipped[str(self.root / bench / ENTRIES / n)] = str(rec["problem"])
            else:
                out[n] = rec
        return out

    def _read_index_file(self, bench: str) -> dict:
        """The records of ``index.json`` (``{}`` when missing, unreadable or of another format). A link or
        an oversize file is not opened and is named by :meth:`problems` (the index is rebuilt)."""
        idx_path = self.root / bench / INDEX_FILE
        try:
            check_stored_file(idx_path)
        except FileNotFoundError:
            return {}
        except (ResultFolderError, OSError) as e:
            self.skipped[str(idx_path)] = f"{e} (the cache is rebuilt from the entries)"
            return {}
        try:
            idx = json.loads(idx_path.read_text(encoding="utf-8"))
            records = idx.get("entries", {}) if idx.get("format") == FORMAT_VERSION else {}
        except (OSError, ValueError, RecursionError, AttributeError):
            return {}
        return records if isinstance(records, dict) else {}

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
        records = self._read_index_file(bench)
        names = self.entry_names(bench)
        protocol = self._bench_protocol(bench)
        changed = set(records) - set(names)
        for n in list(changed):
            records.pop(n, None)
        for n in names:
            rec = records.get(n)
            try:
                stamp = self._entry_stamp(bench, n)
            except OSError:
                continue
            if not isinstance(rec, dict) or rec.get("stamp") != stamp or \
                    not _matches_summary(rec, bdir / ENTRIES / n, protocol):
                try:
                    records[n] = self._index_record(bench, n, protocol)
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
        idx = self.checked_index(bench)
        return self.entries_table(bench, idx), self.aggregates_table(bench, idx)

    def entries_table(self, bench: str, index: dict | None = None) -> pd.DataFrame:
        """One row per entry: name, label, team, method, url, added, source, published, counts."""
        rows = []
        for name, rec in (self.checked_index(bench) if index is None else index).items():
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
        for name, rec in (self.checked_index(bench) if index is None else index).items():
            records.extend({"entry": name, **r} for r in rec.get("results") or [])
            records.extend({"entry": name, **r} for r in _clinical_rows((rec.get("clinical") or {}).get("agreement")
                                                                       or []))
        out = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=cols)
        out = out[[c for c in cols if c in out.columns] + [c for c in out.columns if c not in cols]]
        for c in ("mean", "ci_low", "ci_high", "std", "median"):
            if c in out.columns:
                out[c] = pd.to_numeric(out[c], errors="coerce")
        return out


def _read_summary_json(f) -> dict:
    """One entry's summary.json ``f``, read as a stranger's file (not a link, within the size limit, JSON).

    Raises:
        LeaderboardError: the file is a link, too large, not JSON or nested too deeply (names the file).
    """
    try:
        check_stored_file(f)
        summary = json.loads(f.read_text(encoding="utf-8"))
    except ResultFolderError as e:
        raise LeaderboardError(str(e)) from None
    except RecursionError:
        raise LeaderboardError(f"{f}: not readable JSON (nested too deeply); the entry is corrupt: remove it and "
                               "add it again") from None
    except (OSError, ValueError) as e:
        raise LeaderboardError(f"{f}: not readable JSON ({str(e).splitlines()[0]})") from None
    return summary


def _summary_part(f, protocol: dict | None = None, summary=None) -> dict:
    """The index record's figures from one entry's summary.json ``f`` (``summary``: its content when
    already read), checked: every aggregate possible (:func:`_check_results`), the figures consistent
    with each other and, given the benchmark.json ``protocol``, scored under it
    (:func:`~cardbench.benchmark.results.check_summary_consistency`).

    Raises:
        LeaderboardError: the file is a link, too large, not JSON, nested too deeply, of the wrong
            shape, holds an impossible or inconsistent aggregate, or another protocol (names the file).
    """
    if summary is None:
        summary = _read_summary_json(f)
    if not isinstance(summary, dict):
        raise LeaderboardError(f"{f}: not a JSON object")
    results = summary.get("results") or []
    counts = summary.get("counts") or {}
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results) or \
            not isinstance(counts, dict) or not isinstance(summary.get("clinical") or {}, dict):
        raise LeaderboardError(f"{f}: results/counts/clinical have the wrong type")
    _check_results(results, f)
    try:
        check_summary_consistency(summary, f, protocol)
    except ResultFolderError as e:
        raise LeaderboardError(str(e)) from None
    return {
        "counts": {k: counts.get(k) for k in ("subjects", "volumes", "images")},
        "classes": summary.get("classes") or [],
        "created": summary.get("created"),
        "cardbench_version": summary.get("cardbench_version"),
        "results": results,
        "clinical": {"available": bool((summary.get("clinical") or {}).get("available")),
                     "agreement": (summary.get("clinical") or {}).get("agreement") or []},
    }


def _matches_summary(rec: dict, entry, protocol: dict | None = None) -> bool:
    """True when the cached index record ``rec`` holds exactly the figures of the entry's summary.json:
    index.json is a cache anyone who can write the folder can edit (keeping its mtime), so its figures
    are compared with the entry's own file (parsed, never trusted) on every read; a record that differs,
    or an entry that no longer reads, makes the record be rebuilt (and the entry checked again)."""
    try:
        part = json.loads(to_json(_summary_part(entry / "summary.json", protocol), indent=None))
    except (LeaderboardError, ValueError, RecursionError):
        return False
    return all(rec.get(k) == v for k, v in part.items())


def _check_results(results: list[dict], where) -> None:
    """Raise LeaderboardError naming ``where`` when an aggregate of a registered metric cannot be
    one (text, infinite, a Dice outside [0, 1], a negative distance: see
    :meth:`~cardbench.benchmark.metric_registry.MetricSpec.bad_value`), so an edited entry is
    never ranked on an impossible score."""
    from cardbench.benchmark.metric_registry import METRICS

    for r in results:
        spec = METRICS.get(r.get("metric"))
        if spec is None:
            continue
        for key in ("mean", "ci_low", "ci_high", "median"):
            why = spec.bad_value(r.get(key))
            if why is None and key in ("mean", "median"):
                why = _count_mismatch(r.get(key), r.get("n_values"))
            if why is not None:
                raise LeaderboardError(f"{where}: {r.get('metric')} {key} of class {r.get('class')} "
                                       f"(group {r.get('group')}): {why}; the entry is corrupt: remove it and "
                                       "add it again")


def _count_mismatch(value, n_values) -> str | None:
    """Why a mean or median cannot go with ``n_values`` aggregated values: none although values were
    aggregated (a JSON ``NaN`` or ``null`` written over a score), or a value from no value."""
    if isinstance(n_values, bool) or not isinstance(n_values, int):
        return None  # an entry of an older format: nothing to compare with
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if missing and n_values > 0:
        return f"no value although {n_values} values were aggregated"
    if not missing and n_values == 0:
        return f"{value!r} from 0 values"
    return None
