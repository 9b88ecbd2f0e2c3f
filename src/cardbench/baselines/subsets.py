"""Training subsets: which 2D images (subject, frame, slice) a run trains on (no torch needed).

* Published subsets of the 7T study (Ankenbrand et al., MRM 2021;86:2179, Table/Figure on data
  requirements): ``v7``, ``v3``, ``v1`` (all images of 7, 3, 1 of the 14 training volunteers:
  2626, 1001, 306 images), ``r7``, ``r3``, ``r1`` (random images of all volunteers, same sizes),
  ``esed`` (ED and ES frames of every volunteer, 448 images) and ``r_esed`` (random, same size), out
  of n_all = 5076 training images. They come from the published ``analysis/7T/image_subsets.tsv``
  of chfc-cmi/cmr-seg-tl (MIT), embedded in cardbench and sha256-checked against the registry.
  Subjects are the volunteer ids of that table (``17``, ``20``, ...); slices and frames are the
  0-based indices of the seed's PNG names, i.e. the slice index along the NIfTI's third axis and
  the ``frame<FF>`` of the file name.
* ``kaggle-conf5``, ``kaggle-conf10``, ``kaggle-conf15``: the seed's Kaggle confidence sets (patients
  with confidence <= 0.05, 0.10, 0.15 in the published ``analysis/kaggle/confidence_by_patient.tsv``:
  180, 538, 794 of 1396 patient ids, ``<id>`` and ``<id>_rot90`` as ``cardbench data prepare kaggle``
  names them). The table is read from the data cache (``cardbench data fetch ankenbrand2021-derived``).
* ``edes``: the ED and ES frames of every training subject, from ``subjects.csv`` (ed_frame,
  es_frame) of any dataset: the paper's practical guideline (annotate ED/ES only).
* A subset file (CSV or TSV), one of:
  columns ``subject``, ``frame``, ``slice`` (one row per image); a ``case`` column with the seed's
  image names ``<subject>_slice<SSS>_frame<FFF>`` (what ``cardbench data splits cmr-7t --subset v3
  --out v3.csv`` writes); or only a ``subject`` column (every labelled image of those subjects, e.g.
  the Kaggle 5 % confidence set).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PUBLISHED_TABLE = "cmr-seg-tl/analysis/7T/image_subsets.tsv"
PUBLISHED_SUBSETS = ("v7", "v3", "v1", "r7", "r3", "r1", "esed", "r_esed")
CONFIDENCE_TABLE = "cmr-seg-tl/analysis/kaggle/confidence_by_patient.tsv"
#: the seed's Kaggle confidence sets: patients whose confidence (larger relative LV volume deviation at
#: ED/ES between ukbb_cardiac labels and the released volumes) is at most 5, 10, 15 %.
CONFIDENCE_SUBSETS = {"kaggle-conf5": 0.05, "kaggle-conf10": 0.10, "kaggle-conf15": 0.15}


class SubsetError(ValueError):
    """Unknown subset name or unusable subset file."""


@dataclass(frozen=True)
class Subset:
    """A set of training images.

    Attributes:
        name: subset name (``v7``, ..., ``edes``, or the file name).
        keys: (subject, frame, slice) of every image; None for ``edes`` (resolved per dataset) and for
            subject lists.
        subjects: the subjects of a subject-only subset file (else None).
        n_all: the number of images the subset was drawn from (for epoch scaling), or None.
        source: where it comes from (registry path with sha256, or the file).
    """

    name: str
    keys: frozenset[tuple[str, int, int]] | None
    n_all: int | None
    source: str
    subjects: frozenset[str] | None = None


def published_subset_table(data_dir: str | Path | None = None) -> pd.DataFrame:
    """The published 7T subset table, verified against cardbench's data registry.

    Returns:
        DataFrame with columns subject (str), frame (int), slice (int) and one bool column per
        subset (v7 ... r_esed); one row per training image (5076 rows).

    Raises:
        cardbench.datasets.embedded.IntegrityError: the embedded copy does not match its sha256.
    """
    try:  # the datasets part's subset table of the cmr-7t card, when it exists
        from cardbench.datasets.naming import parse_case_name
        from cardbench.datasets.splits import subset_table

        t = subset_table("cmr-7t", data_dir)
        keys = [parse_case_name(c + ".png") for c in t["case"]]
        out = pd.DataFrame({"subject": [k.subject for k in keys], "frame": [int(k.frame) for k in keys],
                            "slice": [int(k.slice) for k in keys]})
        for name in PUBLISHED_SUBSETS:
            out[name] = t[name].astype(bool).to_numpy()
        return out
    except ImportError:
        pass
    from cardbench.datasets.embedded import open_published

    data, _entry, _where = open_published(PUBLISHED_TABLE, data_dir)
    df = pd.read_csv(io.BytesIO(data), sep="\t")
    out = pd.DataFrame({"subject": df["Id"].astype(str), "frame": df["frame"].astype(int),
                        "slice": df["slice"].astype(int)})
    for name in PUBLISHED_SUBSETS:
        col = df[name]
        out[name] = col if col.dtype == bool else col.astype(str).str.upper().eq("TRUE")
    return out


def confidence_subjects(max_confidence: float, data_dir: str | Path | None = None) -> list[str]:
    """Kaggle patient ids whose published confidence is at most ``max_confidence`` (a fraction).

    Raises:
        SubsetError: the published table is neither at ``data_dir`` nor in the data cache (the message
            says how to fetch it). IntegrityError: its sha256 does not match the registry.
    """
    from cardbench.datasets.embedded import open_published

    tries = [data_dir] if data_dir is not None else []
    if data_dir is None:
        try:
            from cardbench.datasets.fetch import cache_dir

            tries.append(cache_dir())
        except ImportError:
            pass
    for d in tries:
        try:
            data, _, _ = open_published(CONFIDENCE_TABLE, d)
        except FileNotFoundError:
            continue
        t = pd.read_csv(io.BytesIO(data), sep="\t", dtype={"Id": str})
        return sorted(t.loc[t["confidence"] <= max_confidence, "Id"].astype(str))
    raise SubsetError(f"{CONFIDENCE_TABLE}: not found in the data cache; fetch it with "
                      "`cardbench data fetch ankenbrand2021-derived` (or give its folder)")


def get_subset(name: str | None = None, subset_file: str | Path | None = None) -> Subset | None:
    """Resolve a subset by published name, ``edes``, or a file.

    Returns:
        The :class:`Subset`, or None when neither is given (train on the whole split).

    Raises:
        SubsetError: unknown name; unreadable file or missing columns.
    """
    if subset_file:
        p = Path(subset_file)
        try:
            first = p.read_text(encoding="utf-8").splitlines()[0] if p.stat().st_size else ""
            sep = "\t" if "\t" in first else ("," if "," in first else (";" if ";" in first else ","))
            df = pd.read_csv(p, sep=sep, dtype={"subject": str})
        except Exception as e:  # noqa: BLE001
            raise SubsetError(f"{p}: cannot read as CSV/TSV ({e})") from e
        if "case" in df.columns:
            from cardbench.datasets.naming import parse_case_name

            try:
                parsed = [parse_case_name(str(c) if str(c).endswith(".png") else f"{c}.png") for c in df["case"]]
            except ValueError as e:
                raise SubsetError(f"{p}: column 'case' must hold <subject>_slice<SSS>_frame<FFF> names ({e})") from e
            keys = frozenset((k.subject, int(k.frame), int(k.slice)) for k in parsed)
            return Subset(p.name, keys, None, str(p))
        if {"subject", "frame", "slice"} <= set(df.columns):
            keys = frozenset((str(r.subject), int(r.frame), int(r.slice)) for r in df.itertuples())
            return Subset(p.name, keys, None, str(p))
        if "subject" in df.columns:
            return Subset(p.name, None, None, str(p), frozenset(df["subject"].astype(str)))
        raise SubsetError(f"{p}: needs columns subject, frame, slice, or case, or subject (found {list(df.columns)})")
    if not name:
        return None
    if name == "edes":
        return Subset("edes", None, None, "ed_frame/es_frame of subjects.csv")
    if name in CONFIDENCE_SUBSETS:
        return Subset(name, None, None, f"{CONFIDENCE_TABLE} (confidence <= {CONFIDENCE_SUBSETS[name]:g})",
                      frozenset(confidence_subjects(CONFIDENCE_SUBSETS[name])))
    if name not in PUBLISHED_SUBSETS:
        raise SubsetError(f"unknown subset '{name}'; use one of {', '.join(PUBLISHED_SUBSETS)} (7T study), "
                          f"{', '.join(CONFIDENCE_SUBSETS)} (Kaggle), edes (ED/ES frames of subjects.csv) "
                          "or --subset-file FILE")
    table = published_subset_table()
    sel = table[table[name]]
    keys = frozenset(zip(sel["subject"], sel["frame"].astype(int), sel["slice"].astype(int)))
    return Subset(name, keys, len(table), f"{PUBLISHED_TABLE} (sha256-verified)")
