"""Training and prediction data from a dataset in the standard layout.

Layout (docs/datasets.md, docs/DEVELOPING.md)::

    <dataset>/subjects.csv              subject, split, ed_frame, es_frame
    <dataset>/annotations.csv           optional: subject, frame, classes ("LV MY") annotated there
    <dataset>/images/<s>/<s>_frame<FF>.nii.gz   image volume (x, y, slice)
    <dataset>/labels/<s>/<s>_frame<FF>.nii.gz   uint8 label map, same grid and affine

The network works on 2D slices: ``volume[:, :, k]``, an ``(x, y)`` array. Preprocessing (same for
training and prediction, :func:`preprocess_slice`):

1. Intensity: each frame volume is scaled to [0, 1] between its 0.5th and 99.5th percentile
   (clipped), like the seed's 8-bit PNG export of the images.
2. Geometry: the slice is scaled (bilinear, antialiased) so its longer side is ``image_size`` and
   padded with zeros to a square, centred (the seed: fastai ``ResizeMethod.PAD`` with
   ``padding_mode="zeros"``: padded, never stretched). Labels are scaled with nearest neighbour.
3. Network input: the grey image repeated to 3 channels and normalised with ImageNet mean/std
   (``imagenet_stats``, as the seed), see :func:`network_input`.

Classes: label maps are remapped to cardbench values (0 bg, 1 LV, 2 MY, 3 RV); output channel 0 is
background and channel ``i`` is ``classes[i - 1]``; a class the model does not predict (e.g. RV
for the seed's LV/MY model) counts as background, as in the seed's ``masks_2class``.

Partial annotation: ``annotations.csv`` (via :class:`cardbench.datasets.reference.Reference`) says
which classes are annotated in each frame (Sunnybrook: MY only at ED). Each training image carries
an ``annotated`` vector over output channels; the losses in :mod:`cardbench.baselines.losses`
never train an unannotated class as background.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardbench.datasets.naming import CaseKey, parse_case_name, strip_nifti_suffix
from cardbench.labelmaps import CLASS_VALUES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PERCENTILES = (0.5, 99.5)


class DatasetError(ValueError):
    """The dataset folder cannot be used for training or prediction (message names file and fix)."""


class EmptySelectionError(DatasetError):
    """The dataset is usable but the selection (split, subset) holds no volumes."""


@dataclass
class Volume:
    """One (subject, frame) image volume and, if present, its label volume.

    Attributes:
        subject, frame: identity (frame from the file name, None if the name has none).
        image_path: the image NIfTI.
        label_path: the label NIfTI (None when not labelled).
        annotated: classes annotated in this frame (None: all classes).
        phase: ``ED``, ``ES`` or ``""``.
        split: the subject's split.
        slices: slice indices used for training (None: all slices).
    """

    subject: str
    frame: int | None
    image_path: Path
    label_path: Path | None
    annotated: frozenset[str] | None = None
    phase: str = ""
    split: str = ""
    slices: list[int] | None = None

    @property
    def key(self) -> CaseKey:
        return CaseKey(self.subject, self.frame)


@dataclass
class DatasetIndex:
    """The volumes selected from a dataset.

    Attributes:
        root: dataset folder.
        name: dataset name (card.yaml or folder name).
        volumes: selected volumes.
        label_map: label map of the label files.
        notes: remarks (e.g. frames skipped because nothing is annotated in them).
    """

    root: Path
    name: str
    volumes: list[Volume]
    label_map: object = None
    notes: list[str] = field(default_factory=list)

    def n_images(self) -> int:
        """Number of 2D images (slices) selected; reads NIfTI headers only."""
        import nibabel as nib

        n = 0
        for v in self.volumes:
            if v.slices is not None:
                n += len(v.slices)
            else:
                shape = nib.load(str(v.image_path)).shape
                n += shape[2] if len(shape) >= 3 else 1
        return n


# ----------------------------------------------------------------------------- indexing
def resolve_dataset(name_or_path: str | Path) -> Path:
    """A dataset folder from a path or a registered dataset name prepared before.

    Raises:
        DatasetError: not a folder and no prepared dataset of that name.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    try:  # a registered name: prepared once into the data cache by cardbench.datasets.prepare
        from cardbench.datasets.prepare import preparable, prepared_path
    except ImportError:
        preparable = prepared_path = None
    if prepared_path is not None and str(name_or_path) in preparable():
        return Path(prepared_path(str(name_or_path)))
    raise DatasetError(f"{name_or_path}: dataset folder not found; give the folder of a dataset in the standard "
                       "layout (images/, labels/, subjects.csv), e.g. one written by `cardbench data prepare NAME`")


def _list_images(root: Path) -> dict[CaseKey, Path]:
    img_root = root / "images"
    if not img_root.is_dir():
        raise DatasetError(f"{img_root}: no images/ folder; the standard layout keeps image volumes in "
                           "images/<subject>/<subject>_frame<FF>.nii.gz")
    out: dict[CaseKey, Path] = {}
    for p in sorted(img_root.rglob("*")):
        if not p.is_file() or strip_nifti_suffix(p.name) is None or p.name.startswith("."):
            continue
        key = parse_case_name(p)
        if key in out:
            raise DatasetError(f"{p}: image case {key} also given by {out[key]}; keep one file per case")
        out[key] = p
    if not out:
        raise DatasetError(f"{img_root}: no NIfTI images (.nii, .nii.gz) found")
    return out


def index_dataset(root: str | Path, splits: tuple[str, ...] | list[str] | None = ("train",),
                  subset=None, labelled_only: bool = True, classes: tuple[str, ...] = ("LV", "MY")) -> DatasetIndex:
    """Select the volumes (and slices) of a dataset.

    Args:
        root: dataset folder in the standard layout.
        splits: splits of ``subjects.csv`` to keep (None: all subjects).
        subset: a :class:`cardbench.baselines.subsets.Subset` restricting the 2D images, or None.
        labelled_only: keep only volumes with a label file (training, validation). False keeps every
            image volume (prediction).
        classes: classes the model predicts (to drop frames where none of them is annotated).

    Raises:
        DatasetError: missing folders, no subjects.csv when splits are asked for, unknown split,
            an image without its label or vice versa when labels are needed, subset images absent.
    """
    from cardbench.datasets.reference import ReferenceError, load_reference

    root = resolve_dataset(root)
    images = _list_images(root)
    ref = None
    if (root / "labels").is_dir():
        try:
            ref = load_reference(root)
        except ReferenceError as e:
            raise DatasetError(str(e)) from e
    elif labelled_only:
        raise DatasetError(f"{root / 'labels'}: no labels/ folder; training needs label volumes "
                           "labels/<subject>/<subject>_frame<FF>.nii.gz")
    subjects_df = None
    if ref is not None:
        subjects_df = ref.subjects
    elif (root / "subjects.csv").exists():
        from cardbench.datasets.reference import read_subjects

        subjects_df = read_subjects(root / "subjects.csv")
    if splits is not None:
        if subjects_df is None or "split" not in subjects_df.columns or subjects_df.empty:
            raise DatasetError(f"{root / 'subjects.csv'}: needed with a 'split' column to select split(s) "
                               f"{list(splits)}; add it (subject, split, ed_frame, es_frame)")
        known = set(subjects_df["split"].dropna().astype(str))
        for s in splits:
            if s not in known and s not in ("train", "val", "test"):
                raise EmptySelectionError(f"{root / 'subjects.csv'}: no subject has split '{s}' (splits: {sorted(known)})")
    name = ref.name if ref is not None else root.name
    notes: list[str] = []

    def split_of(subject: str) -> str:
        if subjects_df is None or subject not in subjects_df.index or "split" not in subjects_df.columns:
            return ""
        v = subjects_df.at[subject, "split"]
        return "" if v != v else str(v)  # NaN check

    def phase_of(subject: str, frame) -> str:
        if ref is not None:
            return ref.phase_of(subject, frame)
        if subjects_df is None or frame is None or subject not in subjects_df.index:
            return ""
        row = subjects_df.loc[subject]
        for ph, col in (("ED", "ed_frame"), ("ES", "es_frame")):
            if col in row.index and row[col] == row[col] and int(row[col]) == int(frame):
                return ph
        return ""

    label_files = {} if ref is None else {k: v[0] for k, v in ref.files.items()}
    if ref is not None:
        dup = [k for k, v in ref.files.items() if len(v) > 1]
        if dup:
            raise DatasetError(f"{root / 'labels'}: case {dup[0]} is given by {len(ref.files[dup[0]])} files; keep one")
        twod = [k for k in label_files if k.slice is not None]
        if twod:
            raise DatasetError(f"{label_files[twod[0]]}: 2D label files are not supported for training; "
                               "use one 3D NIfTI per frame (labels/<s>/<s>_frame<FF>.nii.gz)")
        orphans = sorted(set(label_files) - set(images))
        if orphans:
            raise DatasetError(f"{label_files[orphans[0]]}: label volume without its image (expected "
                               f"images/{orphans[0].subject}/{label_files[orphans[0]].name}); "
                               f"{len(orphans)} label file(s) have no image")
    declared = set(ref.classes) if ref is not None and ref.classes is not None else None
    vols: list[Volume] = []
    skipped_unannotated = 0
    for key, img in sorted(images.items()):
        sp = split_of(key.subject)
        if splits is not None and sp not in splits:
            continue
        lab = label_files.get(key)
        if lab is None and labelled_only:
            continue
        annotated = None
        if ref is not None and lab is not None:
            ann = ref.annotated_classes(key.subject, key.frame)
            if ann is not None:
                annotated = frozenset(ann)
            if declared is not None:
                annotated = frozenset(declared if annotated is None else annotated & declared)
            if annotated is not None and not (annotated & set(classes)):
                skipped_unannotated += 1
                continue
        vols.append(Volume(key.subject, key.frame, img, lab, annotated, phase_of(key.subject, key.frame), sp))
    if skipped_unannotated:
        notes.append(f"{skipped_unannotated} labelled frame(s) skipped: none of {list(classes)} is annotated there "
                     "(annotations.csv)")
    if subset is not None:
        vols = _apply_subset(vols, subset, root, notes)
    if not vols:
        raise EmptySelectionError(f"{root}: no {'labelled ' if labelled_only else ''}volumes in split(s) "
                           f"{list(splits) if splits else 'all'}" + (f" and subset {subset.name}" if subset else ""))
    from cardbench.labelmaps import CARDBENCH

    return DatasetIndex(root, name, vols, ref.label_map if ref is not None else CARDBENCH, notes)


def _apply_subset(vols: list[Volume], subset, root: Path, notes: list[str]) -> list[Volume]:
    if subset.subjects is not None:
        out = [v for v in vols if v.subject in subset.subjects]
        missing = sorted(subset.subjects - {v.subject for v in vols})
        if not out:
            raise DatasetError(f"{root}: none of the {len(subset.subjects)} subjects of subset {subset.name} "
                               f"({subset.source}) has labelled images in this split, e.g. {missing[0]}; check the "
                               "subject names and the split")
        if missing:
            notes.append(f"subset {subset.name}: {len(missing)} of its {len(subset.subjects)} subjects have no labelled "
                         f"images in this split (e.g. {missing[0]}); training on the other "
                         f"{len(subset.subjects) - len(missing)}")
        return out
    if subset.keys is None:  # edes: ED and ES frames of subjects.csv
        out = [v for v in vols if v.phase in ("ED", "ES")]
        if not out:
            raise DatasetError(f"{root / 'subjects.csv'}: subset edes needs ed_frame and es_frame for the training "
                               "subjects (no labelled ED/ES frame found)")
        return out
    import nibabel as nib

    wanted: dict[tuple[str, int], set[int]] = {}
    for s, f, k in subset.keys:
        wanted.setdefault((s, int(f)), set()).add(int(k))
    out = []
    found = 0
    for v in vols:
        sl = wanted.get((v.subject, v.frame if v.frame is not None else -1))
        if not sl:
            continue
        n = nib.load(str(v.image_path)).shape[2]
        present = sorted(k for k in sl if 0 <= k < n)
        found += len(present)
        if present:
            out.append(Volume(v.subject, v.frame, v.image_path, v.label_path, v.annotated, v.phase, v.split, present))
    if found != len(subset.keys):
        have = {(v.subject, v.frame) for v in vols}
        missing = sorted(k for k in subset.keys if (k[0], k[1]) not in have)
        example = f"; e.g. subject {missing[0][0]} frame {missing[0][1]} slice {missing[0][2]}" if missing else ""
        raise DatasetError(f"{root}: subset {subset.name} ({subset.source}) lists {len(subset.keys)} images but only "
                           f"{found} are labelled training images of this dataset{example}. Name subjects, frames and "
                           "slices as in the subset table (see docs/baselines.md)")
    return out


# ------------------------------------------------------------------------ preprocessing
def load_image_volume(path: Path) -> tuple[np.ndarray, object]:
    """Read an image NIfTI as float32 ``(x, y, slice)`` and return it with the nibabel image.

    Raises:
        DatasetError: unreadable file or not 2D/3D.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"{path}: cannot read image ({e}); re-export or re-copy the file") from e
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D image volume (x, y, slice), got shape {arr.shape}; "
                           "save one file per frame")
    return arr, img


def load_label_volume(path: Path, label_map, shape: tuple[int, ...]) -> np.ndarray:
    """Read a label NIfTI as cardbench values, uint8 ``(x, y, slice)``.

    Raises:
        DatasetError: unreadable, values outside the label map, or shape different from the image.
    """
    from cardbench.datasets.io import MaskReadError, read_nifti_mask
    from cardbench.labelmaps import LabelValueError

    try:
        lab = read_nifti_mask(path)
        arr = label_map.to_cardbench(lab.array)
    except MaskReadError as e:
        raise DatasetError(str(e)) from e
    except LabelValueError as e:
        raise DatasetError(f"{path}: {e}; declare the right label map in card.yaml") from e
    if arr.shape != tuple(shape):
        raise DatasetError(f"{path}: label shape {arr.shape} differs from its image's {tuple(shape)}; labels must "
                           "be on the image's grid")
    return arr


def intensity_window(volume: np.ndarray) -> tuple[float, float]:
    """(low, high) intensities: the 0.5th and 99.5th percentiles of the volume (high > low)."""
    lo, hi = np.percentile(volume, PERCENTILES)
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def class_lut(classes: tuple[str, ...] | list[str]) -> np.ndarray:
    """Lookup table cardbench value (0..3) -> output channel (0 = background)."""
    lut = np.zeros(4, dtype=np.int64)
    for i, c in enumerate(classes, start=1):
        lut[CLASS_VALUES[c]] = i
    return lut


@dataclass(frozen=True)
class FitGeometry:
    """How an ``(h, w)`` slice sits in the ``size x size`` network canvas.

    ``scale = size / max(h, w)``; the slice is resized to ``(nh, nw) = (round(h * scale),
    round(w * scale))`` and placed at row offset ``top``, column offset ``left`` (centred).
    """

    h: int
    w: int
    size: int
    nh: int
    nw: int
    top: int
    left: int


def fit_geometry(h: int, w: int, size: int) -> FitGeometry:
    """Geometry of :class:`FitGeometry` for an ``(h, w)`` slice and a ``size`` canvas."""
    scale = size / max(h, w)
    nh = max(1, min(size, int(round(h * scale))))
    nw = max(1, min(size, int(round(w * scale))))
    return FitGeometry(h, w, size, nh, nw, (size - nh) // 2, (size - nw) // 2)


def preprocess_slice(image2d: np.ndarray, window: tuple[float, float], size: int,
                     label2d: np.ndarray | None = None):
    """One ``(x, y)`` slice to the network canvas.

    Args:
        image2d: float array ``(h, w)``.
        window: (low, high) intensities mapped to 0 and 1 (clipped).
        size: canvas size.
        label2d: optional channel-index array ``(h, w)`` (already mapped with :func:`class_lut`).

    Returns:
        (image tensor ``(1, size, size)`` float32 in [0, 1], label tensor ``(size, size)`` int64 or None,
        :class:`FitGeometry`).
    """
    import torch
    import torch.nn.functional as F

    h, w = image2d.shape
    g = fit_geometry(h, w, size)
    lo, hi = window
    x = torch.from_numpy(np.clip((image2d.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0))[None, None]
    if (g.nh, g.nw) != (h, w):
        x = F.interpolate(x, size=(g.nh, g.nw), mode="bilinear", align_corners=False,
                          antialias=g.nh < h).clamp_(0.0, 1.0)
    canvas = torch.zeros((1, size, size), dtype=torch.float32)
    canvas[:, g.top:g.top + g.nh, g.left:g.left + g.nw] = x[0]
    y = None
    if label2d is not None:
        lab = torch.from_numpy(np.ascontiguousarray(label2d, dtype=np.int64))
        if (g.nh, g.nw) != (h, w):
            lab = F.interpolate(lab[None, None].float(), size=(g.nh, g.nw), mode="nearest")[0, 0].long()
        y = torch.zeros((size, size), dtype=torch.int64)
        y[g.top:g.top + g.nh, g.left:g.left + g.nw] = lab
    return canvas, y, g


def network_input(x):
    """``(B, 1, S, S)`` images in [0, 1] -> ``(B, 3, S, S)`` ImageNet-normalised network input."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def annotated_vector(annotated: frozenset[str] | None, classes) -> np.ndarray:
    """Bool vector over output channels: channel 0 (background) and each annotated class."""
    v = np.ones(1 + len(classes), dtype=bool)
    if annotated is not None:
        for i, c in enumerate(classes, start=1):
            v[i] = c in annotated
    return v


# ------------------------------------------------------------------------- datasets
def make_slice_dataset(index: DatasetIndex, size: int, classes, cache_volumes: int = 8):
    """A torch ``Dataset`` of the index's 2D slices that reads NIfTI files lazily.

    Items are ``(image (1, S, S) float32, target (S, S) int64, annotated (C,) bool)``. Each worker
    keeps the last ``cache_volumes`` decoded volumes.
    """
    import torch
    import torch.utils.data

    class _SliceDataset(torch.utils.data.Dataset):
        def __init__(self):
            self.index = index
            self.size = size
            self.classes = tuple(classes)
            self.lut = class_lut(self.classes)
            self.items: list[tuple[int, int]] = []
            import nibabel as nib

            for vi, v in enumerate(index.volumes):
                ks = v.slices if v.slices is not None else range(nib.load(str(v.image_path)).shape[2])
                self.items.extend((vi, int(k)) for k in ks)
            self._cache: OrderedDict[int, tuple] = OrderedDict()
            self.cache_volumes = cache_volumes

        def __len__(self):
            return len(self.items)

        def _volume(self, vi: int):
            if vi in self._cache:
                self._cache.move_to_end(vi)
                return self._cache[vi]
            v = self.index.volumes[vi]
            img, _ = load_image_volume(v.image_path)
            lab = load_label_volume(v.label_path, self.index.label_map, img.shape)
            entry = (img, intensity_window(img), self.lut[lab], annotated_vector(v.annotated, self.classes))
            self._cache[vi] = entry
            while len(self._cache) > self.cache_volumes:
                self._cache.popitem(last=False)
            return entry

        def __getitem__(self, i):
            vi, k = self.items[i]
            img, window, lab, ann = self._volume(vi)
            x, y, _ = preprocess_slice(img[:, :, k], window, self.size, lab[:, :, k])
            return x, y, torch.from_numpy(ann.copy())

    return _SliceDataset()


def preload(dataset, progress: bool = False, description: str = "loading images"):
    """All items of ``dataset`` stacked in memory: (images (N,1,S,S), targets (N,S,S) uint8, annotated (N,C)).

    Images are kept as float16 to halve the memory (exact enough for 8-bit-like inputs).
    """
    import torch

    from cardbench.baselines._progress import progress_bar

    n = len(dataset)
    if n == 0:
        return None
    x0, y0, a0 = dataset[0]
    xs = torch.empty((n, *x0.shape), dtype=torch.float16)
    ys = torch.empty((n, *y0.shape), dtype=torch.uint8)
    an = torch.empty((n, *a0.shape), dtype=torch.bool)
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=n)
        # read volume by volume (items are ordered by volume) so each file is decoded once
        for i in range(n):
            x, y, a = dataset[i]
            xs[i] = x
            ys[i] = y
            an[i] = a
            bar.advance(task)
    return xs, ys, an


def estimate_bytes(n_images: int, size: int) -> int:
    """Memory of :func:`preload` for ``n_images`` at ``size`` px (float16 image + uint8 label)."""
    return int(n_images) * size * size * 3


def n_steps(n: int, batch_size: int) -> int:
    """Training steps per epoch: the last incomplete batch is dropped when there is at least one full
    batch (fastai's training loader: ``drop_last=True``)."""
    if n >= batch_size:
        return n // batch_size
    return 1 if n > 0 else 0


def batches_for_epoch(n: int, batch_size: int, generator) -> list:
    """Shuffled index batches for one epoch (see :func:`n_steps`)."""
    import torch

    perm = torch.randperm(n, generator=generator)
    steps = n_steps(n, batch_size)
    if n < batch_size:
        return [perm]
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def chunks(n: int, size: int):
    """Consecutive index ranges of at most ``size`` covering ``range(n)``."""
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


__all__ = [
    "DatasetError", "DatasetIndex", "EmptySelectionError", "FitGeometry", "Volume", "annotated_vector",
    "batches_for_epoch", "chunks", "class_lut", "estimate_bytes", "fit_geometry", "index_dataset",
    "intensity_window", "load_image_volume", "load_label_volume", "make_slice_dataset", "n_steps",
    "network_input", "preload", "preprocess_slice", "resolve_dataset",
]
