"""Finding and reading the images, reference labels and predictions of one case for the drill-down.

An entry's summary records the reference folder (``dataset.path``) and the submission
(``submission.path``); its per-case table records each case's files relative to those
(``ref_file``, ``pred_file``). In the standard layout the image of ``labels/<s>/<s>_frame<FF>.nii.gz``
is ``images/<s>/<s>_frame<FF>.nii.gz``. When a file cannot be found, :func:`locate_case` says why
(images not public, reference moved, submission archive...), so the page can say so instead of
failing.

Confinement: every file the drill-down opens must resolve (symlinks followed) inside an allowed root
(:func:`allowed_roots`: the leaderboard folder, cardbench's data cache and embedded data, and the
folders the operator adds with ``cardbench dashboard --allow-root DIR``). File names recorded in an
entry must be relative without ``..``. A path that is not allowed is reported exactly like a path
that does not exist, so a crafted entry cannot probe the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: environment variable with extra allowed roots (``os.pathsep``-separated); ``cardbench dashboard
#: --allow-root DIR`` sets it for the server.
ALLOW_ENV = "CARDBENCH_DASHBOARD_ALLOW"


def allowed_roots() -> list[Path]:
    """Folders the dashboard may read files from (resolved): the leaderboard folder, cardbench's data cache
    (``$CARDBENCH_DATA`` or the platform cache), the data embedded in cardbench, and ``$CARDBENCH_DASHBOARD_ALLOW``."""
    import os

    from cardbench.benchmark.leaderboard import default_root

    roots = [default_root(), Path(__file__).resolve().parents[1] / "datasets" / "data"]
    try:
        from cardbench.datasets.fetch import cache_dir

        roots.append(cache_dir())
    except Exception:  # noqa: BLE001 - no cache configured: nothing more allowed
        pass
    roots += [Path(p) for p in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if p.strip()]
    out = []
    for r in roots:
        try:
            out.append(Path(r).expanduser().resolve())
        except (OSError, RuntimeError):
            continue
    return out


def is_allowed(path: str | Path, roots: list[Path] | None = None) -> bool:
    """True when ``path`` resolves (symlinks followed) inside one of ``roots`` (default :func:`allowed_roots`)."""
    try:
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(p == r or r in p.parents for r in (roots if roots is not None else allowed_roots()))


def safe_relative(name: str) -> bool:
    """True when ``name`` (recorded in an entry) is a relative path without ``..`` or a drive."""
    if not name or "\x00" in name:
        return False
    p = Path(name.replace("\\", "/"))
    return not (p.is_absolute() or name.startswith(("/", "\\", "~")) or ".." in p.parts
                or (p.parts and ":" in p.parts[0]))


def _allowed_file(folder: Path, name: str) -> Path | None:
    """``folder / name`` when ``name`` is a safe relative name and the file exists inside an allowed root."""
    if not safe_relative(str(name)):
        return None
    f = folder / name
    return f if f.is_file() and is_allowed(f) else None

#: datasets whose images are not public, with the reason shown to the user.
PRIVATE_IMAGES = {
    "cmr-7t": ("The 7T cine images of Ankenbrand et al. 2021 are not public (data protection); only the per-image "
               "confusion counts are, so this benchmark has scores per image but no pictures to overlay."),
    "kaggle-dsb-manual-masks": ("The Kaggle (Second Annual Data Science Bowl) images need a Kaggle account and the "
                                "competition's terms; the published data hold only the per-image confusion counts "
                                "of the public labels against the manual masks, so there is nothing to overlay."),
}


@dataclass
class CaseFiles:
    """Files of one case (subject, frame): image (may be None), reference labels, prediction."""

    image: Path | None
    reference: Path
    prediction: Path | None


def _dataset_root(summary: dict, meta: dict | None = None) -> Path | None:
    """The reference folder recorded when the entry was added (``reference_path`` in
    submission.yaml) or scored (``dataset.path``), else the dataset prepared by cardbench itself
    (``cardbench.datasets.prepare.prepared_path``, prepared into the cache on first use) when the
    dataset has a converter and the same version; else None."""
    ds = summary.get("dataset") or {}
    for p in ((meta or {}).get("reference_path"), ds.get("path")):
        if p and not str(p).startswith("embedded:") and Path(p).is_dir() and is_allowed(p):
            return Path(p)
    name = ds.get("name")
    try:
        from cardbench.datasets import prepare
        from cardbench.datasets.cards import load_card
    except ImportError:
        return None
    try:
        if name not in prepare.preparable() or load_card(name).version != ds.get("version"):
            return None
        cand = Path(prepare.prepared_path(name))
    except Exception:  # noqa: BLE001 - any failure means: not available here
        return None
    return cand if cand.is_dir() and is_allowed(cand) else None


def image_for_label(label_rel: str) -> str:
    """The standard-layout image path of a label path: ``labels/...`` -> ``images/...``."""
    parts = Path(label_rel).parts
    if parts and parts[0] == "labels":
        return str(Path("images", *parts[1:]))
    return str(Path("images", *parts))


def locate_case(summary: dict, ref_file: str, pred_file: str, meta: dict | None = None) -> CaseFiles | str:
    """Find the files of one case, or return the reason (one sentence) why they cannot be shown.

    ``meta`` is the entry's submission.yaml (its ``reference_path`` and ``predictions_path`` are
    tried first)."""
    ds = summary.get("dataset") or {}
    name = ds.get("name", "")
    if name in PRIVATE_IMAGES:
        return PRIVATE_IMAGES[name]
    if not ref_file or str(ref_file).endswith((".tsv", ".csv")):
        return (f"Entry scored from a table of counts ({ref_file or 'no file names'}): there are no images or masks "
                "to show.")
    root = _dataset_root(summary, meta)
    if root is None:
        return (f"The reference folder of dataset '{name}' ({ds.get('path', '?')}) is not on this machine; prepare or "
                "fetch the dataset (cardbench data) to see the images.")
    ref = _allowed_file(root, ref_file)
    if ref is None:  # not found, or not allowed: the same words either way
        return f"Reference labels {ref_file} not found (was the reference folder changed since scoring?)."
    image = _allowed_file(root, image_for_label(ref_file))
    pred = None
    for sub in ((meta or {}).get("predictions_path"), (summary.get("submission") or {}).get("path")):
        if pred_file and sub and Path(sub).is_dir():
            pred = _allowed_file(Path(sub), pred_file)
            if pred is not None:
                break
    return CaseFiles(image, ref, pred)


def read_volume(path: Path, limits=None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI image as float32 ``(x, y, slice)`` and its spacing (mm), with bounded memory.

    The image goes through the checks of the mask reader (:func:`cardbench.datasets.formats.base.read_file_bytes`
    with :meth:`cardbench.datasets.formats.nifti.NiftiFormat.check_head`): a regular, non-empty file below
    ``limits.max_file_bytes``, NIfTI by its magic bytes, the size an uncompressed header declares
    against the file's size. Then only the header is decompressed; the data it declares, counted at
    no less than 4 bytes per voxel (the float32 array returned), must be within
    ``limits.max_mask_bytes``, and the data are decompressed with a cap of exactly the declared size
    (a gzip that expands beyond it is refused, never allocated). Unlike a mask, any numeric voxel type
    is accepted (an image is not a label map); the scaling ``scl_slope``/``scl_inter`` is applied, as
    by ``nibabel.load(path).dataobj``. Axis order as stored; a 2D image gets a slice axis, a 4D image
    keeps its first volume (``[..., 0]``).

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        limits: size limits (default :func:`cardbench.limits.get_limits`).

    Returns:
        (float32 array ``(x, y, slice)``, voxel spacing ``pixdim[1:4]`` in mm).

    Raises:
        cardbench.datasets.io.MaskReadError: any of the checks above fails, or nibabel cannot decode
            the bytes (the message names the file, the problem and the fix).
    """
    from cardbench.datasets.formats.base import MaskReadError, check_declared, read_file_bytes
    from cardbench.datasets.formats.nifti import NiftiFormat, decode_bounded
    from cardbench.limits import get_limits

    path = Path(path)
    lim = limits or get_limits()
    fmt = NiftiFormat()
    if fmt.strip_suffix(path.name) is None:
        raise MaskReadError(path, "not a NIfTI image", "give the image as .nii or .nii.gz")
    data = read_file_bytes(path, lim, check_head=fmt.check_head)
    fmt.check_bytes(data, path)

    def declared(shape, dtype) -> int:
        if dtype.kind not in "biuf":
            raise MaskReadError(path, f"unsupported voxel type {dtype}", "save the image as an integer or float type")
        nbytes = check_declared(path, shape, dtype.itemsize, None, lim)
        check_declared(path, shape, max(dtype.itemsize, 4), None, lim)  # the float32 array returned
        return nbytes

    def first_volume(img, shape):  # a 4D image: only its first volume is decoded and scaled
        return np.asarray(img.dataobj[(slice(None),) * 3 + (0,) * (len(shape) - 3)] if len(shape) > 3
                          else img.dataobj)

    img, _, shape, dtype, arr = decode_bounded(fmt, data, path, declared, first_volume, noun="image")
    while arr.ndim > 3:
        arr = arr[..., 0]
    while arr.ndim < 3:
        arr = arr[..., None]
    arr = np.asarray(arr, dtype=np.float32)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return arr, zooms


def read_labels(path: Path, label_map: dict | str | None) -> np.ndarray:
    """Read a mask (NIfTI or PNG) and convert it to cardbench values, ``(x, y, slice)``.

    Raises:
        cardbench.datasets.io.MaskReadError: unreadable file.
        cardbench.labelmaps.LabelValueError: values outside the label map.
    """
    from cardbench.datasets.io import read_mask
    from cardbench.labelmaps import get_label_map

    lm = get_label_map(label_map if label_map else None)
    arr = lm.to_cardbench(read_mask(path).array)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr
