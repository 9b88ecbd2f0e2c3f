"""Expected leaderboard values computed independently of cardbench, with plain pandas, straight from
the published confusion tables of Ankenbrand et al. 2021 (chfc-cmi/cmr-seg-tl).

Each table has one row per 2D image (``<volunteer>_slice<SSS>_frame<FFF>``), its split (``set``) and
the 3 x 3 confusion counts ``<ref>_<pred>`` over bg, lv, my. Read from the shared real data when it
is there, else from the gzipped copies shipped in the package (same bytes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "src" / "cardbench" / "datasets" / "data"
T7 = "cmr-seg-tl/analysis/7T/confusion_tables"
KAGGLE = "cmr-seg-tl/analysis/kaggle/manual/ukbb_vs_manual.tsv"

#: entry name -> confusion table (reference WS), as the paper's figure lists them.
TABLES = {
    "base": "confusion_WS_base.tsv",
    "plain": "confusion_WS_plainLearn.tsv",
    "imagenet_tl": "confusion_WS_imagenetTransferLearn.tsv",
    "double_tl": "confusion_WS_doubleTransferLearn.tsv",
    "double_tl_esed": "confusion_WS_doubleTL-esed.tsv",
    "ukbb_cardiac": "confusion_WS_ukbbCardiac.tsv",
    "second_observer": "confusion_WS_TR.tsv",
}
#: the paper's published test-set Dice (LV, MY) (Ankenbrand et al., MRM 2021;86:2179).
PAPER = {"base": (0.835, 0.670), "plain": (0.880, 0.756), "imagenet_tl": (0.908, 0.791),
         "double_tl": (0.900, 0.791), "double_tl_esed": (0.908, 0.805), "ukbb_cardiac": (0.668, 0.521),
         "second_observer": (0.939, 0.813)}


def read_table(rel: str, shared: Path | None) -> pd.DataFrame:
    """One published table (``rel`` relative to the data root)."""
    if shared is not None and (shared / rel).exists():
        return pd.read_csv(shared / rel, sep="\t", dtype={"image": str})
    return pd.read_csv(EMBEDDED / (rel + ".gz"), sep="\t", dtype={"image": str}, compression="gzip")


def seven_t(entry: str, shared: Path | None) -> pd.DataFrame:
    """The test-set rows of one 7T comparison, with volunteer and frame parsed from the image name."""
    df = read_table(f"{T7}/{TABLES[entry]}", shared)
    df = df[df["set"] == "test"].copy()
    parts = df["image"].str.extract(r"^(?P<subject>[^_]+)_slice(?P<slice>\d+)_frame(?P<frame>\d+)$")
    df["subject"] = parts["subject"]
    df["slice"] = parts["slice"].astype(int)
    df["frame"] = parts["frame"].astype(int)
    return df


def _counts(df: pd.DataFrame, c: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = ["bg", "lv", "my"]
    tp = df[f"{c}_{c}"].to_numpy(float)
    ref = sum(df[f"{c}_{o}"].to_numpy(float) for o in labels)
    pred = sum(df[f"{o}_{c}"].to_numpy(float) for o in labels)
    return tp, ref, pred


def image_dice(df: pd.DataFrame, cls: str) -> np.ndarray:
    """Dice per image, an image empty in both counting as 1 (the paper's rule)."""
    tp, ref, pred = _counts(df, cls.lower())
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2 * tp / (ref + pred)
    d[(ref + pred) == 0] = 1.0
    return d


def paper_protocol(df: pd.DataFrame, cls: str) -> float:
    """Mean Dice over all images (protocol ankenbrand2021)."""
    return float(image_dice(df, cls).mean())


def volume_dice(df: pd.DataFrame, cls: str) -> pd.DataFrame:
    """Dice per (subject, frame) volume from summed counts; both empty -> NaN (cardbench-v1)."""
    c = cls.lower()
    cols = [f"{a}_{b}" for a in ("bg", "lv", "my") for b in ("bg", "lv", "my")]
    v = df.groupby(["subject", "frame"])[cols].sum().reset_index()
    tp, ref, pred = _counts(v, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2 * tp / (ref + pred)
    d[(ref + pred) == 0] = np.nan
    v["dice"] = d
    return v


def subject_level(df: pd.DataFrame, cls: str) -> tuple[float, pd.Series]:
    """cardbench-v1: mean over subjects of each subject's mean volume Dice; and the subject means."""
    v = volume_dice(df, cls)
    sm = v.groupby("subject")["dice"].mean().dropna()
    return float(sm.mean()), sm
