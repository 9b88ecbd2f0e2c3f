"""The leaderboard: one folder per benchmark, one entry per submission, written atomically.

Modules by job: :mod:`~cardbench.benchmark.leaderboard.folder` (the on-disk layout: names, ids,
lock, crash recovery, reading and writing one entry folder), :mod:`~cardbench.benchmark.leaderboard.store`
(:class:`Leaderboard`: listing, adding, removing; :func:`open_leaderboard`, :func:`add_entry`),
:mod:`~cardbench.benchmark.leaderboard.index` (``index.json`` and the tables read from it),
:mod:`~cardbench.benchmark.leaderboard.ranking` (order and rank of entries; rank uncertainty is
:mod:`cardbench.benchmark.ranking`), :mod:`~cardbench.benchmark.leaderboard.rendering` (tables as text,
export) and :mod:`~cardbench.benchmark.leaderboard.prefill` (the registry of published sources and the
root marker). Every public name is importable from this package.

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


from cardbench.benchmark.leaderboard.folder import (
    BENCHMARK_FILE, CLINICAL_INDICES, CLINICAL_STATS, ENTRIES, ENV_VAR, FORMAT_VERSION, INDEX_FILE, MARKER,
    META_KEYS, PER_CASE_REQUIRED, PHASES, BenchmarkInfo, Entry, LeaderboardError, NoValidEntryError, _locked,
    benchmark_id, check_name, default_root, read_entry, read_per_case, safe_name,
)
from cardbench.benchmark.leaderboard.prefill import PREFILL_SOURCES, PrefillSource, register_prefill_source
from cardbench.benchmark.leaderboard.ranking import direction_text, metric_direction, parse_metric, rank_table
from cardbench.benchmark.leaderboard.rendering import display_table, render
from cardbench.benchmark.leaderboard.store import Leaderboard, add_entry, open_leaderboard

__all__ = [
    "BENCHMARK_FILE", "CLINICAL_INDICES", "CLINICAL_STATS", "ENTRIES", "ENV_VAR", "FORMAT_VERSION", "INDEX_FILE",
    "MARKER", "META_KEYS", "PER_CASE_REQUIRED", "PHASES", "PREFILL_SOURCES", "BenchmarkInfo", "Entry", "Leaderboard",
    "LeaderboardError", "NoValidEntryError", "PrefillSource", "add_entry", "benchmark_id", "check_name",
    "default_root", "direction_text",
    "display_table", "metric_direction", "open_leaderboard", "parse_metric", "rank_table", "read_entry",
    "read_per_case", "register_prefill_source", "render", "safe_name",
]
