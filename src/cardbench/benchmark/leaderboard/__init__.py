"""The leaderboard store (see :mod:`cardbench.benchmark.leaderboard.store` for the folder layout).

Every public name is re-exported here, so ``from cardbench.benchmark.leaderboard import X`` works
whichever module of the subpackage defines ``X``.
"""

from cardbench.benchmark.leaderboard.store import (  # noqa: F401
    BENCHMARK_FILE, CLINICAL_INDICES, CLINICAL_STATS, ENTRIES, ENV_VAR, FORMAT_VERSION, INDEX_FILE, MARKER,
    META_KEYS, PER_CASE_REQUIRED, PHASES, PREFILL_SOURCES, BenchmarkInfo, Entry, Leaderboard, LeaderboardError,
    PrefillSource, _locked, add_entry, benchmark_id, check_name, default_root, direction_text, display_table,
    metric_direction, open_leaderboard, parse_metric, rank_table, read_entry, read_per_case, register_prefill_source,
    render, safe_name,
)

__all__ = [
    "BENCHMARK_FILE", "CLINICAL_INDICES", "CLINICAL_STATS", "ENTRIES", "ENV_VAR", "FORMAT_VERSION", "INDEX_FILE",
    "MARKER", "META_KEYS", "PER_CASE_REQUIRED", "PHASES", "PREFILL_SOURCES", "BenchmarkInfo", "Entry", "Leaderboard",
    "LeaderboardError", "PrefillSource", "add_entry", "benchmark_id", "check_name", "default_root", "direction_text",
    "display_table", "metric_direction", "open_leaderboard", "parse_metric", "rank_table", "read_entry",
    "read_per_case", "register_prefill_source", "render", "safe_name",
]
