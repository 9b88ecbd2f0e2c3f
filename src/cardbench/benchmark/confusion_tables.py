"""Per-image confusion tables (the seed paper's published format) as one more input to scoring.

Format (tab-separated, one row per 2D image), as in chfc-cmi/cmr-seg-tl
``analysis/7T/confusion_tables/confusion_<A>_<B>.tsv`` and ``analysis/kaggle/manual/ukbb_vs_manual.tsv``::

    image   set   methodA   methodB   bg_bg bg_lv bg_my lv_bg lv_lv lv_my my_bg my_lv my_my

``<a>_<b>`` is the number of pixels labelled ``a`` by method A (the reference) and ``b`` by method B
(the prediction); ``rv`` columns are accepted too. ``image`` is a case name in the seed's 7T
(``<subject>_slice<SSS>_frame<FFF>``) or Kaggle (``<subject>-frame<FFF>-slice<SSS>.png``) naming.
``set`` is the split (train, val, test) when it holds split names; otherwise it is ignored (in
``ukbb_vs_manual.tsv`` it repeats the patient id). When the table's reference belongs to a dataset
with a standard split, each subject's ``set`` must be its standard split (:func:`check_table_split`).

The table becomes a counts table and is scored by the same code as mask files
(:func:`cardbench.benchmark.casetable.per_case_table`).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd

from cardbench._util import sha256_bytes
from cardbench.benchmark.casetable import COUNT_COLUMNS, per_case_table
from cardbench.benchmark.protocols import Protocol, get_protocol
from cardbench.benchmark.results import ScoreResult
from cardbench.benchmark.validation import Problem, ValidationError
from cardbench.datasets.formats.confusion import is_confusion_table as _is_confusion_table
from cardbench.datasets.naming import CaseKey, parse_case_name
from cardbench.labelmaps import CLASSES

_LABELS = {"bg": 0, "lv": 1, "my": 2, "rv": 3}


class KnownReference(NamedTuple):
    """What a table's reference method (method A) stands for: the dataset it belongs to, the dataset
    card whose version that dataset carries (:func:`reference_version`), the observer, and (optionally)
    a lookup of each subject's ED/ES frames."""

    dataset: str
    card: str
    observer: str
    phases: Callable[[], dict[str, tuple[int | None, int | None]]] | None = None


#: reference methods of published tables -> :class:`KnownReference`, so a user's table scored with
#: ``cardbench score`` lands in the same benchmark as the published entries. Empty here: a study's
#: reproduction registers its references (:func:`register_reference`), e.g.
#: :mod:`cardbench.reproductions.ankenbrand2021` the seed's observers.
KNOWN_REFERENCES: dict[str, KnownReference] = {}


def register_reference(method: str, dataset: str, card: str, observer: str,
                       phases: Callable[[], dict[str, tuple[int | None, int | None]]] | None = None) -> None:
    """Declare that confusion tables whose method A is ``method`` are scored against ``dataset`` (the
    version of dataset card ``card``, reference observer ``observer``); ``phases()`` returns subject ->
    (ED frame, ES frame) and is called only when such a table is scored without ``phases``."""
    KNOWN_REFERENCES[method] = KnownReference(dataset, card, observer, phases)


def reference_version(reference: str) -> str:
    """Dataset version of a known reference method (a key of :data:`KNOWN_REFERENCES`): the version of
    the dataset card it belongs to (``cmr-7t`` 1.0.0), the one ``cardbench data list`` shows; ``""``
    for a reference cardbench does not know."""
    known = KNOWN_REFERENCES.get(reference)
    if not known:
        return ""
    from cardbench.datasets.cards import load_card

    return load_card(known.card).version


#: largest pixel count accepted in one cell: 2^31 - 1 pixels in one 2D image (46,341 x 46,341) is far
#: beyond any MR image; larger values are corrupt and would overflow a sum of counts.
MAX_COUNT = 2**31 - 1
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}


def is_confusion_table(path: str | Path) -> bool:
    """True when ``path`` is a .tsv/.csv/.txt text file whose header has an ``image`` and a ``bg_bg``
    column (detection: :mod:`cardbench.datasets.formats.confusion`)."""
    return _is_confusion_table(path)


@functools.lru_cache(maxsize=1 << 16)
def _image_key(img: str) -> CaseKey | None:
    """The case key of a confusion table's ``image`` cell (a 2D PNG name, ``.png`` optional), or None
    when the name follows neither of the seed's namings. Cached: the seed's tables of ten models list
    the same images."""
    try:
        return parse_case_name(img if img.lower().endswith(".png") else img + ".png")
    except ValueError:
        return None


def read_confusion_table(source: str | Path | bytes, name: str = "") -> tuple[pd.DataFrame, dict]:
    """Parse a confusion table into a counts table.

    Args:
        source: file path, or the file's bytes (then ``name`` names it in messages).

    Returns:
        (counts table with subject, frame, slice, split, c00..c33, missing=False; info dict with
        reference and prediction method names, classes present, sha256, rows).

    Raises:
        ValidationError: missing columns (or no foreground label pair), a header without rows,
            counts that are negative, not integers, or above :data:`MAX_COUNT` (each named by its
            row), unparseable image names, duplicate images; one problem per line.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        name = name or str(source)
        data = Path(source).read_bytes()
    sep = "," if name.lower().endswith(".csv") else "\t"
    try:
        # as text: a count is checked as written (2^70 or 1e300 must not pass through a float or overflow)
        df = pd.read_csv(io.BytesIO(data), sep=sep, dtype=str, keep_default_na=False)
    except Exception as e:
        raise ValidationError([Problem(name, f"cannot parse as a table ({e})",
                                       "give a tab-separated confusion table (see docs/scoring.md, confusion tables)", "unreadable")])
    problems: list[Problem] = []
    count_cols = [c for c in df.columns if "_" in c and all(p in _LABELS for p in c.split("_", 1))]
    labels = sorted({_LABELS[p] for c in count_cols for p in c.split("_", 1)})
    need = {f"{a}_{b}" for a in _LABELS for b in _LABELS if _LABELS[a] in labels and _LABELS[b] in labels}
    miss = sorted(need - set(count_cols))
    if labels == [0] or not count_cols:  # only bg_bg: no class to score
        miss = sorted({"bg_lv", "lv_bg", "lv_lv"} - set(count_cols)) + ["(or the my/rv pairs)"]
    if "image" not in df.columns or miss or not count_cols:
        problems.append(Problem(name, f"missing columns: {(['image'] if 'image' not in df.columns else []) + miss}",
                                "a confusion table needs 'image' and one column per label pair "
                                "(bg_bg, bg_lv, ..., my_my)", "metadata"))
        raise ValidationError(problems)
    if df.empty:
        raise ValidationError([Problem(name, "has a header but no rows: no image to score",
                                       "give one row per 2D image (see docs/scoring.md, confusion tables)", "metadata")])
    counts = pd.DataFrame({c: 0 for c in COUNT_COLUMNS}, index=df.index)
    for c in count_cols:
        a, b = c.split("_", 1)
        text = df[c].astype(str).str.strip()
        col = pd.to_numeric(text, errors="coerce").astype("float64")
        # exact integers only: a float column cannot tell 2^70 from 2^70 + 1, and int64 overflows silently
        exact = text.str.fullmatch(r"\d+(\.0*)?")
        big = text.str.fullmatch(r"\d{%d,}(\.0*)?" % (len(str(MAX_COUNT)) + 1))  # more digits than MAX_COUNT
        bad = df.index[col.isna() | (col < 0) | (col != col.round()) | (col > MAX_COUNT) | big
                       | (~exact & ~col.isna() & (col >= 0) & (col == col.round()))]
        for i in bad[:5]:
            problems.append(Problem(f"{name} row {i + 2}", f"column {c} holds '{df.at[i, c]}', not a pixel count",
                                    f"counts must be integers from 0 to {MAX_COUNT}", "metadata"))
        if len(bad) > 5:
            problems.append(Problem(name, f"{len(bad) - 5} more rows of column {c} hold values that are not "
                                    "pixel counts", f"counts must be integers from 0 to {MAX_COUNT}", "metadata"))
        if len(bad) == 0:
            counts[f"c{_LABELS[a]}{_LABELS[b]}"] = col.astype("int64")
    keys = [_image_key(img) for img in df["image"].astype(str)]
    for i in [i for i, k in enumerate(keys) if k is None]:
        problems.append(Problem(f"{name} row {i + 2}", f"image name '{df.at[i, 'image']}' not recognised",
                                "use <subject>_slice<SSS>_frame<FFF> or <subject>-frame<FFF>-slice<SSS>.png",
                                "name"))
    found = pd.Series([k for k in keys if k is not None], dtype=object)
    for d in found[found.duplicated()].tolist()[:5]:
        problems.append(Problem(name, f"image {d} listed twice", "keep one row per image", "duplicate"))
    if problems:
        raise ValidationError(problems)
    out = counts.copy()
    out.insert(0, "subject", [k.subject for k in keys])
    out.insert(1, "frame", pd.array([k.frame for k in keys], dtype="Int64"))
    out.insert(2, "slice", pd.array([k.slice for k in keys], dtype="Int64"))
    split = [""] * len(df)
    if "set" in df.columns:
        vals = df["set"].astype(str).str.lower()
        if set(vals) <= set(_SPLITS):
            split = [_SPLITS[v] for v in vals]
    out.insert(3, "split", split)
    out["missing"] = False
    out["ref_file"] = name
    out["pred_file"] = name
    info = {
        "reference": str(df["methodA"].iloc[0]) if "methodA" in df.columns and len(df) else "",
        "prediction": str(df["methodB"].iloc[0]) if "methodB" in df.columns and len(df) else "",
        "classes": [c for c in CLASSES if CLASSES.index(c) + 1 in labels],
        "sha256": sha256_bytes(data),
        "rows": int(len(df)),
    }
    return out, info


def score_counts(
    counts: pd.DataFrame,
    protocol: str | Protocol = "cardbench-v1",
    *,
    classes: list[str],
    split: str | None = None,
    phases: dict[str, tuple[int | None, int | None]] | None = None,
    dataset: dict | None = None,
    submission: dict | None = None,
    inputs: dict | None = None,
    notes: list[str] | None = None,
) -> ScoreResult:
    """Score a counts table (one row per 2D image, with a ``split`` column) under a protocol.

    Args:
        counts: counts table (see :mod:`cardbench.benchmark.casetable`) plus a ``split`` column.
        classes: classes to report.
        split: keep only images of this split.
        phases: subject -> (ED frame, ES frame), to label phases.

    Raises:
        ValueError: no image in the requested split.
    """
    from cardbench.benchmark.scoring import build_result

    proto = get_protocol(protocol)
    if split is not None:
        counts = counts[counts["split"] == split]
        if counts.empty:
            raise ValueError(f"no image in split '{split}'")
    split_map = dict(zip(counts["subject"], counts["split"]))
    phases = phases or {}

    def phase_of(subject: str, frame):
        ed, es = phases.get(subject, (None, None))
        if frame is None:
            return ""
        return "ED" if ed is not None and frame == ed else "ES" if es is not None and frame == es else ""

    per_case = per_case_table(counts, classes, proto, lambda s: split_map.get(s, ""), phase_of)
    return build_result(per_case, proto, dataset=dataset or {}, submission=submission or {}, label_map=None,
                        inputs=inputs or {}, notes=notes, split=split)


def _refuse_near_known_reference(method: str, where: str) -> None:
    """Refuse a reference method name (a table's ``methodA``) that is one of
    :data:`KNOWN_REFERENCES` written otherwise (``Scaled_Masks``, ``scaled-masks``) or with a suffix
    (``scaled_masks_WS``): such a table would be scored as a dataset of its own, named like the real
    one, with its split taken from its own ``set`` column instead of the dataset's standard split.

    Raises:
        ValidationError: one line naming the file, the name and the known reference it resembles.
    """
    def norm(x: str) -> str:
        return "".join(ch for ch in str(x).casefold() if ch.isalnum())

    n = norm(method)
    for k, ref in KNOWN_REFERENCES.items():
        if n and (n == norm(k) or n.startswith(norm(k))):
            raise ValidationError([Problem(
                where, f"methodA '{method}' is not a known reference, but looks like '{k}' (dataset {ref.dataset})",
                f"write it exactly as '{k}' (the table's split is then checked against {ref.dataset}'s standard "
                "split), or give your own reference a name of its own", "metadata")])


def score_confusion_table(
    path: str | Path,
    protocol: str | Protocol = "cardbench-v1",
    *,
    split: str | None = None,
    classes: list[str] | None = None,
    phases: dict[str, tuple[int | None, int | None]] | None = None,
    data: bytes | None = None,
    name: str | None = None,
    dataset: str | None = None,
) -> ScoreResult:
    """Score a published per-image confusion table under a protocol (same code as mask files).

    Args:
        path: the table (or its name, when ``data`` gives the bytes).
        protocol: ``cardbench-v1`` or ``ankenbrand2021``.
        split: score only images of this split (from the ``set`` column).
        classes: classes to report (default: those the table has, except background).
        phases: subject -> (ED frame, ES frame), to label phases.
        data: the file's bytes, if already read (e.g. an embedded file).
        name: submission name for the summary (default: the table's method B).
        dataset: dataset name for the summary (default: from :data:`KNOWN_REFERENCES` when the
            table's method A is one of the seed's references, else method A).

    Raises:
        ValidationError: malformed table, or a subject whose ``set`` differs from the standard split
            of the reference's dataset (:func:`check_table_split`).
        ValueError: no image in the requested split.
    """
    path = Path(path)
    counts, info = read_confusion_table(data if data is not None else path, name=str(path))
    known = KNOWN_REFERENCES.get(info["reference"])
    if known is None:
        _refuse_near_known_reference(info["reference"], str(path))
    notes = [check_table_split(counts, known.card if known else None, str(path))]
    ds = {"name": dataset or (known.dataset if known else info["reference"]),
          "version": reference_version(info["reference"]) if known and not dataset else "", "path": str(path)}
    if known:
        ds["reference_observer"] = known.observer
        if phases is None and known.phases is not None:
            phases = known.phases()
    return score_counts(
        counts, protocol, classes=classes or info["classes"], split=split, phases=phases,
        dataset=ds,
        submission={"name": name or info["prediction"], "path": str(path), "reference_method": info["reference"]},
        inputs={"confusion_table": {path.name: info["sha256"]}}, notes=[n for n in notes if n],
    )


def check_table_split(counts: pd.DataFrame, card: str | None, name: str) -> str:
    """Check a confusion table's ``set`` column (the ``split`` of :func:`read_confusion_table`) against
    the standard split of dataset card ``card``.

    A table's ``set`` must never decide which subjects a ``--split`` score covers when the dataset has
    a frozen standard split (:func:`cardbench.datasets.splits.load_split`): relabelling train images
    as ``test`` would otherwise score and rank them as test images. Subject ids are compared with
    :func:`cardbench.datasets.splits.subject_key` (case and leading zeros ignored).

    Args:
        counts: counts table with ``subject`` and ``split`` columns.
        card: the dataset card of the table's reference (method A), or None when unknown.
        name: the table's name, for messages.

    Returns:
        A note for the result (``""`` when the splits are the standard ones or the table names none).

    Raises:
        ValidationError: a subject whose split in the table differs from the standard split, or one the
            standard split does not list (one line each, naming the subject and both splits).
    """
    from cardbench.datasets.splits import SplitError, load_split, subject_key

    # every (subject, split) pair: a subject whose rows name two splits is checked for each
    given = [(s, sp) for s, sp in dict.fromkeys(zip(counts["subject"], counts["split"])) if sp]
    if not given:
        return ""
    std = None
    if card:
        try:
            std = load_split(card)
        except (SplitError, KeyError):
            std = None
    if std is None:
        return (f"the split of each subject comes from the table's 'set' column ({name}): no standard split is "
                "known for its reference, so --split scores are only as good as that column")
    by_key = {subject_key(s): sp for s, sp in std.assignment.items()}
    problems: list[Problem] = []
    for s, sp in given:
        want = by_key.get(subject_key(s))
        if want is None:
            problems.append(Problem(name, f"subject {s} (set '{sp}') is not in the standard split of {std.dataset} "
                                    f"({std.file})", f"remove its rows; the table's reference belongs to "
                                    f"{std.dataset} (see `cardbench data splits {std.dataset}`)", "split"))
        elif want != sp:
            problems.append(Problem(name, f"subject {s} is in split '{sp}' in the table's 'set' column but in "
                                    f"'{want}' in the standard split of {std.dataset} ({std.file})",
                                    f"set its rows' 'set' to '{want}' (see `cardbench data splits {std.dataset}`); "
                                    "a table cannot move a subject to another split", "split"))
    if problems:
        raise ValidationError(problems)
    return ""

