"""Pre-filling a leaderboard folder with published entries on first use: the registry of sources
(filled by the published studies, :mod:`cardbench.reproductions`) and the root marker that records
which sources a folder has had.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Callable, Iterable

from cardbench._util import atomic_write_text
from cardbench._version import __version__
from cardbench.benchmark.leaderboard.folder import (
    ENTRIES, FORMAT_VERSION, MARKER, Entry, LeaderboardError, _locked, benchmark_id,
)
from cardbench.benchmark.results import ScoreResult, to_json


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


class PrefillMixin:
    """:class:`~cardbench.benchmark.leaderboard.Leaderboard` methods that pre-fill a folder."""

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
                    f"removed comes back. Fix: `cardbench leaderboard prefill -L {self.root} --force` re-adds them all")
                return added
            marker.pop("corrupt", None)
            todo = [k for k in keys if force or k not in marker.get("prefilled", {})]
            if not todo:
                return added
            from cardbench._progress import progress as _progress

            with _progress(len(todo), "scoring the published leaderboard entries", enabled=progress,
                           quiet_for=5.0) as bar:
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
                    bar.advance(info=key)
        return added
