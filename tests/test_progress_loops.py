"""The long loops that had their own rich bars (leaderboard prefill, Kaggle curation, DICOM reading of
`prepare`, the Sunnybrook preparation, the Kaggle volume track) report through the one helper
`cardbench._progress`, so output that is not a terminal gets plain lines (one per 10 %).

The helper is wrapped to write into a StringIO (not a terminal) without its 5 s quiet period; the
expected lines follow from the number of items: 2 items -> 50 % and 100 %; 6 items -> one line per
item (each crosses a 10 % mark), the last 100 % (6/6).
"""

from __future__ import annotations

import io
import re

import pytest

import cardbench._progress as P


@pytest.fixture
def lines(monkeypatch):
    buf = io.StringIO()
    calls = []
    real = P.progress

    def recording(total, description, **kw):
        calls.append((total, description, kw.get("enabled", True)))
        kw["quiet_for"] = 0.0
        kw["stream"] = buf
        return real(total, description, **kw)

    monkeypatch.setattr(P, "progress", recording)
    return lambda: (calls, [ln for ln in buf.getvalue().splitlines() if ln.strip()])


def _pct(line: str) -> tuple[int, str]:
    m = re.search(r": (\d+) % \((\d+/\d+)\)", line)
    assert m, line
    return int(m.group(1)), m.group(2)


def test_prefill_lines(lines, tmp_path):
    from cardbench.benchmark.leaderboard import PREFILL_SOURCES, Leaderboard

    assert len(PREFILL_SOURCES) == 2
    Leaderboard(tmp_path / "lb").prefill(progress=True)
    calls, out = lines()
    assert calls == [(2, "scoring the published leaderboard entries", True)]
    assert [_pct(ln) for ln in out] == [(50, "1/2"), (100, "2/2")]
    assert all(ln.startswith("scoring the published leaderboard entries: ") for ln in out)


def test_kaggle_curation_lines(lines, tmp_path):
    from test_kaggle_curation import simple_study

    from cardbench.datasets.kaggle import curate_kaggle

    for pid in ("1", "2"):
        simple_study(tmp_path / "raw" / "train" / pid)
    curate_kaggle(tmp_path / "raw", tmp_path / "out", progress=True)
    calls, out = lines()
    assert calls == [(2, "curating Kaggle studies", True)]
    assert [_pct(ln) for ln in out] == [(50, "1/2"), (100, "2/2")]
    # progress=False: the helper is asked for nothing visible
    curate_kaggle(tmp_path / "raw", tmp_path / "out2", progress=False)
    assert lines()[0][-1] == (2, "curating Kaggle studies", False)
    assert len(lines()[1]) == 2


def test_prepare_dicom_lines(lines, tmp_path):
    from test_prepare_dicom import _study

    from cardbench.datasets.prepare import prepare_dicom

    dcm, con = _study(tmp_path)   # 2 slices x 3 frames = 6 DICOM files
    prepare_dicom(dcm, tmp_path / "out", subject="S1", contours=con, progress=True)
    calls, out = lines()
    assert (6, "reading DICOM", True) in calls
    got = [_pct(ln) for ln in out if ln.startswith("reading DICOM")]
    assert len(got) == 6 and got[-1] == (100, "6/6")
    assert [p for p, _ in got] == sorted(p for p, _ in got)


def test_no_hand_built_rich_bars_left_in_these_loops():
    """The modules of these loops no longer import rich.progress themselves."""
    import inspect

    from cardbench.benchmark.leaderboard import prefill as leaderboard  # the module of the pre-fill loop
    from cardbench.reproductions.ankenbrand2021 import kaggle_volumes as volume_track
    from cardbench.datasets import kaggle, prepare, sunnybrook

    for mod in (leaderboard, volume_track, kaggle, prepare, sunnybrook):
        assert "rich.progress" not in inspect.getsource(mod), mod.__name__
