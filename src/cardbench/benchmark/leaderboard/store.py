"""The leaderboard store: :class:`Leaderboard` (a folder: listing, adding and removing entries under the
lock, atomically), :func:`open_leaderboard` and :func:`add_entry`. The index, ranking, rendering and
pre-fill methods come from the sibling modules (see :mod:`cardbench.benchmark.leaderboard`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

from cardbench._util import atomic_dir, atomic_write_text
from cardbench.benchmark.leaderboard.folder import (  # noqa: F401  (MARKER, FORMAT_VERSION: re-exported)
    _TMP_RE, BENCHMARK_FILE, ENTRIES, FORMAT_VERSION, MARKER, BenchmarkInfo, Entry, LeaderboardError, _legacy_version,
    _locked, _read_yaml, _recover, _submission_meta, _write_entry, benchmark_id, check_name, default_root,
    safe_name,
)
from cardbench.benchmark.leaderboard.index import IndexMixin
from cardbench.benchmark.leaderboard.prefill import PREFILL_SOURCES, PrefillMixin  # noqa: F401
from cardbench.benchmark.leaderboard.ranking import RankingMixin
from cardbench.benchmark.leaderboard.rendering import RenderingMixin
from cardbench.benchmark.protocols import protocols_compatible
from cardbench.benchmark.results import ResultFolderError, ScoreResult, check_stored_file, to_json


class Leaderboard(IndexMixin, RankingMixin, RenderingMixin, PrefillMixin):
    """A leaderboard folder (layout: :mod:`cardbench.benchmark.leaderboard`).

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
            check_stored_file(f)  # a link is never opened, an oversize file never read
        except (ResultFolderError, OSError) as e:
            why = str(e).replace("(a stored result holds its own files, never links): replace the link by a copy of "
                                 "the file, or remove the entry and add it again",
                                 "(a benchmark folder holds its own files, never links): replace the link by a copy "
                                 "of the file, or restore it from a backup")
            self.skipped[str(path)] = why
            raise LeaderboardError(why) from None
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(d, dict) or not isinstance(d.get("protocol", {}), dict) or \
                    not isinstance(d.get("dataset", {}), dict):
                raise ValueError("not a JSON object with dataset and protocol objects")
        except (OSError, ValueError, RecursionError) as e:
            msg = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0] if str(e) else \
                type(e).__name__
            why = f"{f}: corrupt ({msg})"
            self.skipped[str(path)] = why
            raise LeaderboardError(f"{why}; restore it from a backup, or remove the benchmark folder "
                                   "(its entries can be added again)") from None
        why = _id_mismatch(bench, d)
        if why:
            why = f"{f}: {why}"
            self.skipped[str(path)] = why
            raise LeaderboardError(f"{why}; benchmark.json was edited: restore it from a backup (the protocol its "
                                   "entries were scored with is in their summary.json)") from None
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
        """Names of the complete entries of ``bench``, sorted.

        A writer's temporary folder (``.<name>.<random>.tmp``/``.old``) is ignored. A folder whose name
        the store refuses (:func:`check_name`, e.g. ``..evil``) and an entry holding a symbolic link
        (or being one) are left out, each named by :meth:`problems`; a link is never opened.
        """
        d = self.root / bench / ENTRIES
        if not d.is_dir():
            return []
        out = []
        for p in os.scandir(d):
            if _TMP_RE.match(p.name) or not p.is_dir():
                continue  # a writer's temporary folder (recovered under the lock), or a stray file
            try:
                check_name(p.name)
            except LeaderboardError as e:
                self.skipped[p.path] = (f"folder name not accepted: {e}; the folder is ignored (rename it to a "
                                        "valid name, or remove it)")
                continue
            why = _link_in_entry(p)
            if why:
                self.skipped[p.path] = why
                continue
            if os.path.exists(os.path.join(p.path, "summary.json")):
                out.append(p.name)
        return sorted(out)

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
                                       f"-L {self.root}")
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
        if not f.is_file() and not f.is_symlink():
            want["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            atomic_write_text(f, to_json(want) + "\n")
            return
        try:
            check_stored_file(f)
        except (ResultFolderError, OSError) as e:
            raise LeaderboardError(f"{e}; nothing was added") from None
        try:
            have = json.loads(f.read_text(encoding="utf-8"))
            hp = have.get("protocol", {})
            if not isinstance(hp, dict):
                raise ValueError("protocol is not an object")
        except RecursionError:
            raise LeaderboardError(f"{f}: corrupt (nested too deeply); nothing was added: restore it from a backup, "
                                   "or remove the benchmark folder") from None
        except (ValueError, AttributeError) as e:  # never overwrite a benchmark we cannot read
            raise LeaderboardError(f"{f}: corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__}); nothing "
                                   "was added: restore it from a backup, or remove the benchmark folder") from None
        if not protocols_compatible(hp, proto):
            raise LeaderboardError(
                f"{f}: benchmark '{bench}' uses protocol {hp.get('name')} v{hp.get('version')}, but this result was "
                f"scored with {proto.get('name')} v{proto.get('version')} ({_protocol_difference(hp, proto)}); rescore "
                "with the benchmark's protocol version or use a separate leaderboard folder")
        hv = (have.get("dataset") or {}).get("version")
        if hv != ds.get("version") and not _legacy_version(ds.get("name"), hv, ds.get("version")):
            raise LeaderboardError(
                f"{f}: benchmark '{bench}' holds dataset {ds.get('name')} version {hv!r}, but this result was scored "
                f"against version {ds.get('version')!r}; score against the same dataset version or use a separate "
                "leaderboard folder")

    def remove(self, bench: str, name: str) -> None:
        """Remove an entry (atomically: renamed aside, then deleted; the index is updated).

        Raises:
            LeaderboardError: an invalid entry name (:func:`check_name`: never a path), no such benchmark
                or entry.
        """
        check_name(name)  # a name such as '../other/entries/x' never reaches a folder outside the benchmark
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


def _id_mismatch(bench: str, d: dict) -> str | None:
    """Why benchmark.json ``d`` cannot be that of the benchmark folder ``bench``: the id (the folder
    name, :func:`benchmark_id`: ``<dataset>__<split>__<protocol>[+nsd...]``) ends with another
    protocol name than ``d["protocol"]["name"]``, or begins with another dataset name than
    ``d["dataset"]["name"]`` (a name missing from benchmark.json is not compared)."""
    proto = (d.get("protocol") or {}).get("name")
    parts = bench.split("__")
    if proto is not None:
        tail = parts[-1].split("+", 1)[0] if len(parts) >= 3 else None
        if tail != safe_name(str(proto)):
            return (f"protocol {proto!r} does not match the benchmark id {bench!r} (the id names protocol "
                    f"{tail!r})")
    ds = (d.get("dataset") or {}).get("name")
    if ds is not None and len(parts) >= 3 and parts[0] != safe_name(str(ds)):
        return f"dataset {ds!r} does not match the benchmark id {bench!r} (the id names dataset {parts[0]!r})"
    return None


def _link_in_entry(p: os.DirEntry) -> str | None:
    """Why the entry folder ``p`` is refused for holding a symbolic link (or being one), else None.

    The store writes real files only; a link in an entry may point anywhere (another user's file, a
    device), so it is refused by what it is, never opened (as a submission refuses a link that
    leaves its folder).
    """
    fix = "replace the link by a copy of the file, or remove the entry and add it again"
    if p.is_symlink():
        return f"{p.path}: the entry folder is a symbolic link; it was not opened: {fix}"
    try:
        with os.scandir(p.path) as it:
            for f in it:
                if f.is_symlink():
                    return (f"{f.path}: is a symbolic link; it was not opened (a leaderboard entry holds its own "
                            f"files, never links): {fix}")
    except OSError as e:
        return f"{p.path}: the entry folder cannot be read ({e.strerror or e}); make it readable or remove it"
    return None


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


def _protocol_difference(have: dict, want: dict) -> str:
    """What makes protocol ``want`` incompatible with a benchmark's ``have`` (both ``summary["protocol"]``),
    in words for the leaderboard's refusal, e.g. ``policy.dice.both_empty 1.0 -> 'nan'``."""
    from cardbench.benchmark.protocols import protocol_differences

    diff = protocol_differences(have, want, keys=("name", "version", "level", "aggregation", "policy",
                                                  "nsd_tolerance_mm"))
    diff = [d for d in diff if not d.endswith(("-> absent", "-> present"))]  # a metric of one side only is no conflict
    if not diff:
        return "different version or policy"
    return "differs in " + "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
