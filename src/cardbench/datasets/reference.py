"""A reference (ground truth) set: its masks, label map, subjects, splits, ED/ES frames and
which classes are annotated where.

A reference is a folder. In the cardbench standard layout (docs/datasets.md) it holds::

    card.yaml         name, version, license, citation, label_map, classes (annotated classes), ...
    subjects.csv      subject, split (train|val|test), ed_frame, es_frame, [group]
    annotations.csv   optional: subject, frame, classes ("LV MY"): the classes annotated in that frame
                      (see "annotations.csv" below)
    spacing.csv       optional, for PNG references: subject, spacing_row, spacing_col, spacing_slice (mm)
    labels/<subject>/<subject>_frame<FF>.nii.gz

Any other folder of masks works too (all files of a registered mask format, :mod:`cardbench.datasets.formats`:
``.nii``, ``.nii.gz``, ``.png``, ``.nrrd``, below it, in any
sub-folders, matched by name; see :mod:`cardbench.datasets.naming`); the optional CSV files may
sit at its top.

A class the reference does not annotate in a frame is *not annotated*: it is not scored there,
never scored as if it were empty (the Sunnybrook sample has epicardial contours only at ED).

annotations.csv, exactly:

- one row per (subject, frame) that has reference masks; ``frame`` is the number in the mask's file
  name as written there (``_frame00`` is frame 0: numbers are not shifted to 1-based);
- ``classes`` lists the classes annotated in that frame, separated by spaces, commas or semicolons;
  a blank ``classes`` cell means *no class is annotated in that frame* (nothing is scored there);
- a blank ``frame`` cell matches only masks whose file name has no frame number; it does *not*
  mean "every frame";
- a (subject, frame) of the reference without a row has no class annotated (when annotations.csv
  exists), and a row that matches no reference mask is an error listing every such row (a wrong
  frame base or a typo would otherwise make every class silently "not annotated").

Without annotations.csv every class is taken as annotated everywhere; then a class that is present
in some frames of a subject but absent from whole other frames where another class is present
(LV in every frame, MY only at ED) is very likely a partial annotation, and scoring warns about it
(:func:`partial_annotation_warnings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cardbench.datasets.formats import suffix_list
from cardbench.datasets.naming import CaseKey, mask_format, parse_case_name
from cardbench.labelmaps import CLASSES, LabelMap, get_label_map


class ReferenceError(ValueError):
    """The reference folder itself is unusable (missing, empty, malformed metadata)."""


@dataclass
class Reference:
    """A loaded reference set (masks are listed, not read).

    Attributes:
        root: the folder.
        name, version: from ``card.yaml`` (folder name and ``""`` when there is no card).
        label_map: the label map the reference masks use.
        files: case key -> list of files (more than one is a duplicate, reported by validation).
        subjects: DataFrame indexed by subject (str) with columns split, ed_frame, es_frame (may be
            empty).
        classes: classes declared as annotated by the card (``None``: not declared).
        annotations: (subject, frame) -> classes annotated in that frame, from ``annotations.csv``
            (``None``: every scored class is annotated everywhere).
        spacing: subject -> (row, col, slice) spacing in mm for PNG references (from spacing.csv).
        card: the parsed card.yaml (empty dict when absent).
        metadata_files: the metadata files read (for provenance hashes).
        ignored: files below ``root`` that are not masks.
    """

    root: Path
    name: str
    version: str
    label_map: LabelMap
    files: dict[CaseKey, list[Path]]
    subjects: pd.DataFrame
    classes: tuple[str, ...] | None = None
    annotations: dict[tuple[str, int | None], frozenset[str]] | None = None
    spacing: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    metadata_files: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def fmt(self) -> str:
        """``nifti``, ``png`` or ``mixed``."""
        fmts = {mask_format(p[0]) for p in self.files.values()}
        return fmts.pop() if len(fmts) == 1 else "mixed"

    def split_of(self, subject: str) -> str:
        """The subject's split (``train``, ``val``, ``test``) or ``""`` when unknown."""
        if "split" in self.subjects.columns and subject in self.subjects.index:
            v = self.subjects.at[subject, "split"]
            return "" if pd.isna(v) else str(v)
        return ""

    def phase_of(self, subject: str, frame: int | None) -> str:
        """``"ED"``, ``"ES"`` or ``""`` for a (subject, frame), from subjects.csv's ed_frame/es_frame."""
        if frame is None or subject not in self.subjects.index:
            return ""
        row = self.subjects.loc[subject]
        for phase, col in (("ED", "ed_frame"), ("ES", "es_frame")):
            if col in row.index and not pd.isna(row[col]) and int(row[col]) == int(frame):
                return phase
        return ""

    def annotated_classes(self, subject: str, frame: int | None) -> frozenset[str] | None:
        """Classes annotated in (subject, frame) per annotations.csv, or None when not declared."""
        if self.annotations is None:
            return None
        return self.annotations.get((subject, frame), frozenset())


#: what a folder of reference masks holds, for messages
REFERENCE_FILES = ".nii.gz, .nii, .nrrd or .png label maps, one per subject and frame"

def _read_csv(path: Path) -> pd.DataFrame:
    """A reference CSV file (``subjects.csv``, ``annotations.csv``) whose delimiter is a comma,
    semicolon or tab (sniffed among these three only, :class:`csv.Sniffer`; a comma when the sample
    has none of them, e.g. a one-column file)."""
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            sample = fh.read(1 << 16)
        try:
            sep = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
        except csv.Error:  # a single column, or no delimiter in the sample
            sep = ","
        return pd.read_csv(path, dtype={"subject": str}, sep=sep)
    except Exception as e:
        raise ReferenceError(f"{path}: cannot parse as CSV ({e}); see docs/scoring.md for its columns") from e


def read_subjects(path: Path) -> pd.DataFrame:
    """Read ``subjects.csv`` (subject, split, ed_frame, es_frame, ...) indexed by subject.

    Raises:
        ReferenceError: no ``subject`` column, duplicate subjects, or a split outside
            train/val/test.
    """
    df = _read_csv(path)
    if "subject" not in df.columns:
        raise ReferenceError(f"{path}: needs a 'subject' column (columns found: {list(df.columns)})")
    df["subject"] = df["subject"].astype(str)
    dup = df["subject"][df["subject"].duplicated()].tolist()
    if dup:
        raise ReferenceError(f"{path}: subjects listed twice: {dup[:5]}; each subject belongs to one row")
    if "split" in df.columns:
        bad = sorted(set(df["split"].dropna().astype(str)) - {"train", "val", "test"})
        if bad:
            raise ReferenceError(f"{path}: unknown split values {bad}; use train, val or test")
    return df.set_index("subject")


def _check_phase_frames(subjects: pd.DataFrame, files: dict[CaseKey, list[Path]], path: Path) -> None:
    """Refuse an ED/ES frame in subjects.csv that cannot label any mask.

    A frame must be a whole number >= 0 and, for a subject whose reference masks carry frame numbers,
    one of those frames (the numbers as written in the mask file names); otherwise every clinical
    index of that subject would silently become ``no_phase``. Blank cells are allowed (phase unknown);
    a subject without reference masks is not checked (validation reports it if it is scored).

    Raises:
        ReferenceError: one line naming ``path``, the row, the subject, the bad frame(s) and the
            frames the subject's masks have.
    """
    cols = [c for c in ("ed_frame", "es_frame") if c in subjects.columns]
    if not cols:
        return
    frames_of: dict[str, set[int]] = {}
    for k in files:
        if k.frame is not None:
            frames_of.setdefault(k.subject, set()).add(int(k.frame))
    for row, (subject, r) in enumerate(subjects[cols].iterrows(), start=2):
        have = frames_of.get(str(subject))
        bad = []
        for col in cols:
            v = r[col]
            if pd.isna(v):
                continue
            try:
                f = float(v)
                ok = f == int(f) and f >= 0
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok or (have is not None and int(f) not in have):
                bad.append(f"{col} {v}")
        if bad:
            exist = (f"its reference masks have frames {', '.join(str(f) for f in sorted(have))}" if have
                     else "frames are whole numbers >= 0")
            raise ReferenceError(f"{path} row {row}: subject {subject}: {' and '.join(bad)} does not exist ({exist}); "
                                 "fix: give the ED/ES frame numbers as in the mask file names (0 for _frame00), "
                                 "or leave the cell blank when the phase is unknown")


def _parse_classes(value, where: str, allowed: tuple[str, ...] = CLASSES) -> frozenset[str]:
    if isinstance(value, str):
        items = value.replace(";", " ").replace(",", " ").split()
    else:
        items = list(value or [])
    bad = [c for c in items if c not in allowed]
    if bad:
        raise ReferenceError(f"{where}: unknown classes {bad}; use {', '.join(allowed)}")
    return frozenset(items)


def load_reference(path: str | Path, label_map: str | LabelMap | None = None) -> Reference:
    """List a reference folder and read its metadata.

    Args:
        path: the reference folder (standard layout or any folder of masks).
        label_map: overrides the card's ``label_map`` (default ``cardbench``).

    Raises:
        ReferenceError: the folder is missing, holds no masks, or a metadata file is malformed.
    """
    import yaml

    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ReferenceError(f"{root}: is a file, not a folder; pass --reference a folder: a prepared dataset "
                             f"(card.yaml, subjects.csv, images/, labels/) or a folder of reference masks ({REFERENCE_FILES})")
    if not root.is_dir():
        raise ReferenceError(f"{root}: reference folder not found; pass --reference with a prepared "
                             "dataset folder or a folder of reference masks")
    card: dict = {}
    meta: list[Path] = []
    card_path = root / "card.yaml"
    if card_path.exists():
        try:
            card = yaml.safe_load(card_path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            from cardbench._util import yaml_error_text

            raise ReferenceError(f"{card_path}: not valid YAML ({yaml_error_text(e)}); fix the syntax "
                                 "(docs/datasets.md shows a card)") from None
        if not isinstance(card, dict):
            raise ReferenceError(f"{card_path}: must be a mapping of keys (name, version, label_map, ...), got "
                                 f"{type(card).__name__}; see docs/datasets.md")
        meta.append(card_path)
    lm = get_label_map(label_map if label_map is not None else card.get("label_map", "cardbench"))
    mask_root = root / "labels" if (root / "labels").is_dir() else root
    files: dict[CaseKey, list[Path]] = {}
    ignored: list[Path] = []
    for p in sorted(mask_root.rglob("*")):
        # a dangling link (a git-annex file whose content is not retrieved) is listed, so reading it
        # reports "content not retrieved" instead of the case silently disappearing
        if not (p.is_file() or (p.is_symlink() and not p.exists())) or \
                any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if mask_root == root and p.relative_to(root).parts[0] == "images":
            continue
        if mask_format(p) is None:
            if p.parent != root:
                ignored.append(p)
            continue
        try:
            key = parse_case_name(p)
        except ValueError as e:
            raise ReferenceError(str(e)) from e
        files.setdefault(key, []).append(p)
    if not files:
        raise ReferenceError(f"{mask_root}: no reference masks ({suffix_list()}) found")
    subjects = pd.DataFrame(columns=["split", "ed_frame", "es_frame"]).rename_axis("subject")
    if (root / "subjects.csv").exists():
        subjects = read_subjects(root / "subjects.csv")
        _check_phase_frames(subjects, files, root / "subjects.csv")
        meta.append(root / "subjects.csv")
    classes = None
    # the class set is the label map's (LV, MY, RV and any further class such as LA)
    allowed = tuple(dict.fromkeys(CLASSES + lm.classes))
    if card.get("classes") is not None:
        classes = tuple(c for c in allowed if c in _parse_classes(card["classes"], str(card_path), allowed))
    annotations = None
    ann_path = root / "annotations.csv"
    if ann_path.exists():
        df = _read_csv(ann_path)
        missing_cols = {"subject", "frame", "classes"} - set(df.columns)
        if missing_cols:
            raise ReferenceError(f"{ann_path}: missing columns {sorted(missing_cols)} (need subject, frame, classes)")
        annotations = {}
        rows_of: dict[tuple[str, int | None], int] = {}
        for i, r in df.iterrows():
            try:
                frame = None if pd.isna(r["frame"]) else int(float(r["frame"]))
                if frame is not None and float(r["frame"]) != frame:
                    raise ValueError
            except (TypeError, ValueError):
                raise ReferenceError(f"{ann_path} row {i + 2}: frame {r['frame']!r} is not a frame number; "
                                     "use the number in the mask file names (e.g. 0 for _frame00)") from None
            cls = "" if pd.isna(r["classes"]) else r["classes"]
            annotations[(str(r["subject"]), frame)] = _parse_classes(cls, f"{ann_path} row {i + 2}", allowed)
            rows_of[(str(r["subject"]), frame)] = i + 2
        have = {(k.subject, k.frame) for k in files}
        unmatched = [(row, key) for key, row in rows_of.items() if key not in have]
        if unmatched:
            shown = "; ".join(f"row {row} (subject {s}, frame {'blank' if f is None else f})"
                              for row, (s, f) in sorted(unmatched)[:10])
            more = f"; and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
            frames = sorted({k.frame for k in files if k.frame is not None})
            hint = f" (the masks' frames run {frames[0]}..{frames[-1]})" if frames else ""
            raise ReferenceError(f"{ann_path}: {len(unmatched)} row(s) match no reference mask: {shown}{more}. Fix: "
                                 f"use the subject and frame numbers of the mask file names{hint}; a blank frame "
                                 "matches only masks without a frame number")
        meta.append(ann_path)
    spacing: dict[str, tuple[float, float, float]] = {}
    sp_path = root / "spacing.csv"
    if sp_path.exists():
        df = _read_csv(sp_path)
        need = {"subject", "spacing_row", "spacing_col", "spacing_slice"}
        if need - set(df.columns):
            raise ReferenceError(f"{sp_path}: needs columns {sorted(need)}")
        for _, r in df.iterrows():
            spacing[str(r["subject"])] = (float(r["spacing_row"]), float(r["spacing_col"]), float(r["spacing_slice"]))
        meta.append(sp_path)
    return Reference(
        root=root, name=str(card.get("name", root.name)), version=str(card.get("version", "")),
        label_map=lm, files=files, subjects=subjects, classes=classes, annotations=annotations,
        spacing=spacing, card=card, metadata_files=meta, ignored=ignored,
    )


def partial_annotation_warnings(ref_voxels: dict[tuple[str, int | None], dict[str, int]],
                                annotations: dict | None = None, source: str = "annotations.csv") -> list[str]:
    """Warnings for structures that look partially annotated.

    A class that has reference voxels in some frames of a subject, and none in other frames of that
    subject where another class has voxels (LV in every frame, MY only at ED), is almost always a
    partial annotation: scoring it as empty there roughly halves its mean. Frames that
    ``annotations`` already declares (subject, frame) -> classes are not counted.

    Args:
        ref_voxels: (subject, frame) -> class name -> reference voxel count in that frame.
        annotations: :attr:`Reference.annotations` (None when there is no annotations.csv).
        source: the file to name in the fix.

    Returns:
        One warning per (subject, class), at most 5 then a count.
    """
    by_subject: dict[str, dict[int | None, dict[str, int]]] = {}
    for (s, f), d in ref_voxels.items():
        by_subject.setdefault(s, {})[f] = d
    found = []
    for s, frames in sorted(by_subject.items()):
        if len(frames) < 2:
            continue
        classes = sorted({c for d in frames.values() for c in d})
        for c in classes:
            with_c = [f for f, d in frames.items() if d.get(c, 0) > 0]
            without = [f for f, d in frames.items() if d.get(c, 0) == 0
                       and any(v > 0 for k, v in d.items() if k != c)
                       and not (annotations is not None and (s, f) in annotations)]
            if with_c and without:
                found.append((s, c, sorted(with_c, key=str), sorted(without, key=str)))
    out = []
    for s, c, with_c, without in found[:5]:
        out.append(f"subject {s}: {c} is drawn in frame(s) {with_c} but absent from frame(s) {without[:6]}"
                   f"{' ...' if len(without) > 6 else ''} where other structures are drawn: probably a partial "
                   f"annotation, scored as empty there. Fix: declare the annotated classes per frame in {source} "
                   "(subject, frame, classes)")
    if len(found) > 5:
        out.append(f"{len(found) - 5} more (subject, class) pairs look partially annotated; declare them in {source}")
    return out
