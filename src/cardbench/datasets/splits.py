"""Standard splits (versioned files with a checksum), subsets, and the leakage check.

A dataset card lists its split (``splits: {train: [...], val: [...], test: [...]}``) and a
``splits_version``. The split of each (dataset, splits_version) is *frozen* in a file shipped with
cardbench, ``data/splits/<dataset>_splits_v<version>.csv`` (columns ``subject,split``, sorted by
split then subject), whose sha256 is recorded in ``data/splits/SPLITS.tsv``. :func:`load_split`
checks the file against that sha256 and against the card, so a split cannot change silently: a
changed split needs a new ``splits_version`` and a new frozen file (:func:`freeze_split`), and
results name the split version and sha256 they used.

Leakage: :func:`find_leakage` reports every subject that appears in more than one split. Subject ids
are compared after :func:`subject_key` (surrounding blanks removed, case folded, leading zeros of a
numeric id dropped: ``"017"`` and ``"17"`` are one subject); pass ``key=`` to group ids further
(e.g. the Kaggle ids ``123_a``, ``123_b`` and ``123_rot90`` all belong to patient ``123``:
:func:`kaggle_patient`). ``cardbench score`` runs :func:`reference_split_issues` on the reference's
``subjects.csv``; the baselines call :func:`check_no_leakage` before training.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from cardbench._util import atomic_write_text, sha256_bytes
from cardbench.datasets.cards import SPLIT_NAMES, DatasetCard, list_cards, load_card
from cardbench.datasets.embedded import data_root
from cardbench.problems import Problem

MANIFEST_COLUMNS = ("dataset", "splits_version", "file", "sha256", "n_train", "n_val", "n_test")


class SplitError(ValueError):
    """A frozen split is missing, corrupt, or differs from its card."""


class LeakageError(ValueError):
    """A subject is in more than one split.

    Attributes:
        leaks: the :class:`Leak` s found.
    """

    def __init__(self, leaks: list["Leak"], where: str = ""):
        self.leaks = list(leaks)
        head = f"{where}: " if where else ""
        lines = "\n".join(f"  - {lk}" for lk in self.leaks[:20])
        more = f"\n  ... and {len(self.leaks) - 20} more" if len(self.leaks) > 20 else ""
        super().__init__(f"{head}{len(self.leaks)} subject(s) appear in more than one split (data leakage):\n"
                         f"{lines}{more}\nFix: put every subject in exactly one split.")


@dataclass(frozen=True)
class Leak:
    """One subject found in several splits.

    Attributes:
        subject: the normalised subject key.
        splits: the splits it appears in (sorted in train, val, test order, then by name).
        ids: the ids as written, per split (``{"train": ["017"], "test": ["17"]}``).
    """

    subject: str
    splits: tuple[str, ...]
    ids: dict

    def __str__(self) -> str:
        where = ", ".join(f"{s} ({', '.join(self.ids[s])})" for s in self.splits)
        return f"subject {self.subject} is in {len(self.splits)} splits: {where}"


@dataclass(frozen=True)
class StandardSplit:
    """The frozen standard split of a dataset.

    Attributes:
        dataset: dataset name.
        version: the card's ``splits_version``.
        dataset_version: the card's ``version``.
        assignment: subject -> split, in file order.
        file: the frozen file's name (in ``data/splits/``).
        sha256: sha256 of the frozen file's bytes (checked on load).
    """

    dataset: str
    version: str
    dataset_version: str
    assignment: dict
    file: str
    sha256: str

    def subjects(self, split: str | None = None) -> list[str]:
        """Subjects of ``split`` (all subjects when ``None``), in file order."""
        if split is not None and split not in SPLIT_NAMES:
            raise ValueError(f"unknown split '{split}'; use {', '.join(SPLIT_NAMES)}")
        return [s for s, sp in self.assignment.items() if split is None or sp == split]

    def counts(self) -> dict[str, int]:
        """split -> number of subjects."""
        return {sp: len(self.subjects(sp)) for sp in SPLIT_NAMES if self.subjects(sp)}

    def to_dict(self) -> dict:
        """Provenance record (dataset, version, file, sha256, counts) for result files."""
        return {"dataset": self.dataset, "splits_version": self.version, "dataset_version": self.dataset_version,
                "file": self.file, "sha256": self.sha256, "counts": self.counts()}


# --------------------------------------------------------------------------- leakage

_NUM = re.compile(r"^0*(\d+)$")


def subject_key(subject) -> str:
    """Normalised subject id used to detect leakage: strip blanks, casefold, drop leading zeros.

    ``" 017 "``, ``"17"`` and ``17`` give ``"17"``; ``"SCD0000101"`` gives ``"scd0000101"``.
    """
    s = str(subject).strip().casefold()
    m = _NUM.match(s)
    return m.group(1) if m else s


_KAGGLE = re.compile(r"^0*(\d+)(?:_(?:a|b|rot90))*$")


def kaggle_patient(subject) -> str:
    """Kaggle DSB patient of an id: ``"123_a"``, ``"123_rot90"`` and ``"123"`` give ``"123"``."""
    s = str(subject).strip().casefold()
    m = _KAGGLE.match(s)
    return m.group(1) if m else subject_key(s)


def find_leakage(splits: Mapping[str, Iterable], key: Callable[[object], str] = subject_key) -> list[Leak]:
    """Subjects that appear in more than one split.

    Args:
        splits: split name -> subject ids (any iterable; ints allowed).
        key: maps an id to the subject it belongs to (default :func:`subject_key`).

    Returns:
        One :class:`Leak` per subject found in two or more splits, sorted by subject key. Empty
        when there is no leakage. A subject repeated inside one split is not leakage.
    """
    where: dict[str, dict[str, list[str]]] = {}
    for sp, subs in splits.items():
        for s in subs:
            where.setdefault(key(s), {}).setdefault(str(sp), [])
            ids = where[key(s)][str(sp)]
            if str(s) not in ids:
                ids.append(str(s))
    order = {n: i for i, n in enumerate(SPLIT_NAMES)}
    leaks = []
    for k in sorted(where, key=_natural):
        sps = where[k]
        if len(sps) > 1:
            names = tuple(sorted(sps, key=lambda n: (order.get(n, len(order)), n)))
            leaks.append(Leak(k, names, {n: sps[n] for n in names}))
    return leaks


def check_no_leakage(splits: Mapping[str, Iterable], key: Callable[[object], str] = subject_key,
                     where: str = "") -> None:
    """Raise :class:`LeakageError` if any subject is in more than one split (see :func:`find_leakage`).

    For the baselines: call it with the subjects of the training, validation and test data before
    training, e.g. ``check_no_leakage({"train": tr, "val": va, "test": te})``.
    """
    leaks = find_leakage(splits, key)
    if leaks:
        raise LeakageError(leaks, where)


def leakage_in_table(rows: Iterable[tuple], key: Callable[[object], str] = subject_key) -> list[Leak]:
    """:func:`find_leakage` on (subject, split) pairs, e.g. ``zip(df.subject, df.split)``.

    Pairs whose split is empty or NaN are ignored.
    """
    groups: dict[str, list] = {}
    for subject, split in rows:
        if split is None or (isinstance(split, float) and split != split) or str(split) == "":
            continue
        groups.setdefault(str(split), []).append(subject)
    return find_leakage(groups, key)


# --------------------------------------------------------------------------- frozen split files

def _natural(s: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s)) if t]


def splits_dir(root: str | Path | None = None):
    """The folder of frozen splits: ``root`` or the package's ``data/splits``."""
    return Path(root) if root is not None else data_root() / "splits"


def split_file_name(dataset: str, version: str) -> str:
    """File name of a frozen split: ``<dataset>_splits_v<version>.csv``."""
    return f"{dataset}_splits_v{version}.csv"


def split_csv_text(splits: Mapping[str, Iterable[str]]) -> str:
    """Canonical CSV text of a split: header ``subject,split``, rows by split (train, val, test)
    then by subject in natural order, ``\\n`` line ends. Same input, same bytes, same sha256."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subject", "split"])
    for sp in SPLIT_NAMES:
        for s in sorted((str(x) for x in splits.get(sp, ())), key=_natural):
            w.writerow([s, sp])
    return buf.getvalue()


def read_manifest(root: str | Path | None = None) -> list[dict]:
    """Rows of ``SPLITS.tsv`` (``[]`` when it does not exist)."""
    d = splits_dir(root)
    f = d / "SPLITS.tsv"
    if not f.is_file():
        return []
    return list(csv.DictReader(io.StringIO(f.read_text(encoding="utf-8")), delimiter="\t"))


def _manifest_row(dataset: str, version: str, root=None) -> dict | None:
    for r in read_manifest(root):
        if r["dataset"] == dataset and r["splits_version"] == version:
            return r
    return None


def load_split(name: str | DatasetCard, root: str | Path | None = None) -> StandardSplit:
    """The frozen standard split of dataset ``name``, checked.

    Checks: the card has a split; the frozen file for its ``splits_version`` is listed in
    ``SPLITS.tsv``; the file's sha256 equals the listed one; its content equals the card's split;
    no subject is in two splits.

    Args:
        name: dataset name (or a loaded card).
        root: folder of frozen splits (default: the package's ``data/splits``).

    Raises:
        KeyError: unknown dataset.
        SplitError: no split, not frozen, checksum mismatch, or the card and the file differ.
    """
    card = name if isinstance(name, DatasetCard) else load_card(name)
    if not card.splits:
        raise SplitError(f"dataset '{card.name}' has no standard split (its card lists no 'splits')")
    row = _manifest_row(card.name, card.splits_version, root)
    fname = split_file_name(card.name, card.splits_version)
    if row is None:
        raise SplitError(f"{fname}: the split of '{card.name}' (splits_version {card.splits_version}) is not "
                         "frozen; maintainers: run `cardbench data splits "
                         f"{card.name} --freeze` and commit data/splits/")
    f = splits_dir(root) / row["file"]
    if not f.is_file():
        raise SplitError(f"{row['file']}: frozen split file listed in SPLITS.tsv is missing; reinstall cardbench")
    data = f.read_bytes()
    digest = sha256_bytes(data)
    if digest != row["sha256"]:
        raise SplitError(f"{row['file']}: sha256 {digest} does not match SPLITS.tsv ({row['sha256']}); the split "
                         "file was modified: restore it (reinstall cardbench), never edit a frozen split")
    text = data.decode("utf-8")
    expected = split_csv_text(card.splits)
    if text != expected:
        raise SplitError(f"{row['file']}: differs from the split in the card of '{card.name}' (splits_version "
                         f"{card.splits_version}); a changed split needs a new splits_version in the card and "
                         f"`cardbench data splits {card.name} --freeze`")
    assignment = {r["subject"]: r["split"] for r in csv.DictReader(io.StringIO(text))}
    check_no_leakage({sp: [s for s, x in assignment.items() if x == sp] for sp in SPLIT_NAMES}, where=row["file"])
    return StandardSplit(card.name, card.splits_version, card.version, assignment, row["file"], digest)


def freeze_split(name: str | DatasetCard, root: str | Path | None = None) -> tuple[Path, str]:
    """Write the frozen split file of a card's current split and record its sha256 in SPLITS.tsv.

    Maintainer step, run once per new ``splits_version``. Writing is atomic; an already frozen
    version is left alone when identical and refused when different.

    Returns:
        (file, sha256).

    Raises:
        SplitError: the card has no split, has leakage, or this splits_version is frozen with
            different content (bump ``splits_version``).
    """
    card = name if isinstance(name, DatasetCard) else load_card(name)
    if not card.splits:
        raise SplitError(f"dataset '{card.name}' has no split to freeze (add 'splits' to its card)")
    check_no_leakage(card.splits, where=f"card {card.name}")
    d = splits_dir(root)
    d = Path(str(d))
    text = split_csv_text(card.splits)
    digest = sha256_bytes(text.encode("utf-8"))
    fname = split_file_name(card.name, card.splits_version)
    row = _manifest_row(card.name, card.splits_version, d)
    if row is not None:
        if row["sha256"] != digest:
            raise SplitError(f"{fname}: splits_version {card.splits_version} of '{card.name}' is already frozen "
                             "with different content; bump splits_version in the card to release a new split")
        return d / fname, digest
    atomic_write_text(d / fname, text)
    rows = read_manifest(d)
    counts = {sp: len(card.splits.get(sp, ())) for sp in SPLIT_NAMES}
    rows.append({"dataset": card.name, "splits_version": card.splits_version, "file": fname, "sha256": digest,
                 "n_train": counts["train"], "n_val": counts["val"], "n_test": counts["test"]})
    rows.sort(key=lambda r: (r["dataset"], _natural(r["splits_version"])))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(d / "SPLITS.tsv", buf.getvalue())
    return d / fname, digest


# --------------------------------------------------------------------------- references

def reference_split_issues(subjects, dataset: str | None = None, dataset_version: str | None = None,
                           file: str = "subjects.csv") -> list[Problem]:
    """Split problems of a reference's subjects table (called by ``cardbench score``).

    Checks:
      1. no subject in two splits (ids compared with :func:`subject_key`);
      2. when ``dataset`` names a registered dataset with a standard split and ``dataset_version``
         equals its card's version: each subject's split equals the standard one (a test subject
         marked ``train`` would make ``--split test`` scores incomparable). Subjects the standard
         split does not know are reported too.

    Args:
        subjects: DataFrame indexed by subject with a ``split`` column (as read by
            :func:`cardbench.datasets.reference.read_subjects`); without that column nothing is checked.
        dataset, dataset_version: the reference card's ``name`` and ``version``.
        file: path used in the messages.

    Returns:
        Issues (empty when all is well).
    """
    if subjects is None or "split" not in getattr(subjects, "columns", ()) or len(subjects) == 0:
        return []
    pairs = [(str(s), sp) for s, sp in zip(subjects.index, subjects["split"])]
    issues = [Problem(file, str(lk), "put every subject in exactly one split (subject ids are compared "
                         "ignoring case and leading zeros)", "leakage")
              for lk in leakage_in_table(pairs)]
    if dataset and dataset in list_cards():
        card = load_card(dataset)
        if card.splits and (dataset_version is None or str(dataset_version) == card.version):
            std = load_split(card)
            std_by_key = {subject_key(s): (s, sp) for s, sp in std.assignment.items()}
            for s, sp in pairs:
                if sp is None or (isinstance(sp, float) and sp != sp):
                    continue
                hit = std_by_key.get(subject_key(s))
                if hit is None:
                    issues.append(Problem(file, f"subject {s} is not in the standard split of {card.name} "
                                             f"v{card.version} (splits {std.file})", "remove the subject or "
                                             "rename the dataset in card.yaml (it is not the registered one)"))
                elif hit[1] != str(sp):
                    issues.append(Problem(file, f"subject {s} is '{sp}' here but '{hit[1]}' in the standard "
                                             f"split of {card.name} v{card.version} ({std.file}, sha256 "
                                             f"{std.sha256[:12]}...)", f"set its split to '{hit[1]}' (see "
                                             f"`cardbench data splits {card.name}`) or rename the dataset in "
                                             "card.yaml"))
    return issues


# --------------------------------------------------------------------------- subsets

def subset_table(name: str | DatasetCard, data_dir: str | Path | None = None):
    """Membership table of a card's subsets, read from the published file (sha256-checked).

    For ``cmr-7t`` this is ``image_subsets.tsv`` of the seed repository: one row per training image
    with one boolean column per subset (v7, v3, v1, r7, r3, r1, esed, r_esed), exactly as published.

    Args:
        name: dataset name or card.
        data_dir: a fetched copy of the registry layout (default: the copy embedded in cardbench,
            then the cache).

    Returns:
        DataFrame with columns ``case`` (``<subject>_slice<SSS>_frame<FFF>`` for image subsets),
        ``subject``, ``split`` (from the standard split) and one boolean column per subset.

    Raises:
        SplitError: the card defines no subsets; KeyError: unknown dataset.
        FileNotFoundError, IntegrityError: the published file is unavailable or corrupt.
    """
    import pandas as pd

    from cardbench.datasets.embedded import open_published

    card = name if isinstance(name, DatasetCard) else load_card(name)
    spec = card.subsets
    if not spec:
        raise SplitError(f"dataset '{card.name}' defines no subsets")
    src = spec["source"]
    try:
        data, _, _ = open_published(src, data_dir)
    except FileNotFoundError:
        if data_dir is not None:
            raise
        from cardbench.datasets.fetch import cache_dir

        data, _, _ = open_published(src, cache_dir())
    df = pd.read_csv(io.BytesIO(data), sep="\t", dtype={spec.get("subject_column", "subject"): str})
    subj_col = spec.get("subject_column", "subject")
    id_col = spec.get("id_column", subj_col)
    out = pd.DataFrame({"case": df[id_col].astype(str).str.replace(r"-image\.png$|\.png$", "", regex=True),
                        "subject": df[subj_col].astype(str)})
    split_of = card.split_of()
    out["split"] = out["subject"].map(lambda s: split_of.get(s, ""))
    for sub in spec["definitions"]:
        if sub not in df.columns:
            raise SplitError(f"{src}: has no column '{sub}' (card {card.name} defines it); columns: {list(df.columns)}")
        col = df[sub]
        if col.dtype != bool:
            col = col.astype(str).str.upper().map({"TRUE": True, "FALSE": False})
        out[sub] = col.astype(bool).to_numpy()
    return out


def subset(name: str | DatasetCard, which: str, data_dir: str | Path | None = None):
    """Rows of :func:`subset_table` that belong to subset ``which`` (columns case, subject, split).

    Raises:
        ValueError: unknown subset (the message lists the defined ones).
    """
    card = name if isinstance(name, DatasetCard) else load_card(name)
    defs = card.subsets.get("definitions", {}) if card.subsets else {}
    if which not in defs:
        raise ValueError(f"unknown subset '{which}' of {card.name}; defined: {', '.join(defs) or 'none'}")
    t = subset_table(card, data_dir)
    return t.loc[t[which], ["case", "subject", "split"]].reset_index(drop=True)
