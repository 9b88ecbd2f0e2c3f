"""Prepare datasets into the standard layout, and a prepared-once cache of the embedded sample.

* :func:`prepare_dataset` (``cardbench data prepare NAME --out DIR``): runs the converter of a
  registered dataset. Registered: ``sunnybrook-sample`` (:mod:`cardbench.datasets.sunnybrook`).
* :func:`sunnybrook_path` / :func:`prepared_path`: the prepared folder in the data cache
  (``$CARDBENCH_DATA`` or the platform cache, see :func:`cardbench.datasets.fetch.cache_dir``),
  ``<cache>/prepared/<name>-<version>``, built on first use (atomically: in a temporary sibling,
  renamed when complete) and reused afterwards. The scoring harness, the baselines and the
  dashboard use it as the default reference::

      from cardbench.datasets.prepare import sunnybrook_path
      ref = sunnybrook_path()          # e.g. ~/.cache/cardbench/data/prepared/sunnybrook-sample-1.0.0
      # cardbench score preds/ --reference "$(cardbench data prepare sunnybrook-sample --print-path)"

* :func:`prepare_dicom`: any cine DICOM folder (+ optional contour folder) into the layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

PREPARERS: dict[str, Callable] = {}
_COMPLETE = ".cardbench-prepared"


def _sunnybrook(out, source=None, progress=False, overwrite=True):
    from cardbench.datasets.sunnybrook import prepare_sunnybrook

    return prepare_sunnybrook(out, source, progress=progress, overwrite=overwrite)


PREPARERS["sunnybrook-sample"] = _sunnybrook


def preparable() -> list[str]:
    """Names of the datasets :func:`prepare_dataset` can prepare."""
    return sorted(PREPARERS)


def prepare_dataset(name: str, out: str | os.PathLike, *, source: str | os.PathLike | None = None,
                    progress: bool = False, overwrite: bool = True):
    """Prepare dataset ``name`` into ``out`` (standard layout, written atomically).

    Args:
        name: a registered dataset with a converter (see :func:`preparable`).
        out: destination folder (replaced when it exists and ``overwrite``).
        source: where the raw files are (a folder with the registry layout); default: the copy
            embedded in cardbench (sunnybrook-sample) or the data cache.
        progress: rich progress bar on stderr.

    Returns:
        The converter's per-subject results (for sunnybrook-sample: a list of
        :class:`cardbench.datasets.sunnybrook.PreparedSubject`).

    Raises:
        KeyError: no converter for ``name`` (the message lists those that have one).
    """
    if name not in PREPARERS:
        raise KeyError(f"no converter for dataset '{name}'; `cardbench data prepare` knows: "
                       f"{', '.join(preparable())}; for your own DICOM and contour files use "
                       "`cardbench data prepare dicom --dicom DIR`")
    res = PREPARERS[name](Path(out), source=source, progress=progress, overwrite=overwrite)
    from cardbench._util import atomic_write_text

    atomic_write_text(Path(out) / _COMPLETE, f"{name}\n")
    return res


def prepared_path(name: str, *, cache: str | os.PathLike | None = None, refresh: bool = False,
                  progress: bool = False, source: str | os.PathLike | None = None) -> Path:
    """The prepared folder of ``name`` in the data cache, prepared on first use.

    The folder is ``<cache>/prepared/<name>-<card version>``; it is reused when it holds the
    completion marker and ``card.yaml``, and rebuilt (atomically) when ``refresh`` or incomplete.

    Raises:
        KeyError: unknown dataset or no converter.
    """
    from cardbench.datasets.cards import load_card
    from cardbench.datasets.fetch import cache_dir

    card = load_card(name)
    dest = cache_dir(cache) / "prepared" / f"{name}-{card.version}"
    if not refresh and (dest / _COMPLETE).is_file() and (dest / "card.yaml").is_file():
        return dest
    prepare_dataset(name, dest, source=source, progress=progress, overwrite=True)
    return dest


def sunnybrook_path(*, cache: str | os.PathLike | None = None, refresh: bool = False,
                    progress: bool = False) -> Path:
    """The prepared Sunnybrook sample (standard layout), built from the embedded raw files on first
    use; see :func:`prepared_path`."""
    return prepared_path("sunnybrook-sample", cache=cache, refresh=refresh, progress=progress)


def prepare_dicom(dicom_dir: str | os.PathLike, out: str | os.PathLike, *, subject: str | None = None,
                  contours: str | os.PathLike | None = None, frames: list[int] | None = None,
                  cine: bool = False, ed_frame: int | None = None, es_frame: int | None = None,
                  split: str | None = None, overwrite: bool = True, progress: bool = False) -> dict:
    """Convert one subject's cine DICOM folder (and optional Sunnybrook-style contours) into the
    standard layout.

    Images: every DICOM file below ``dicom_dir`` is grouped by slice position (IPP along the
    normal) and frame (rank of TriggerTime at that position, 1-based, when every position has
    the same number of images; else from InstanceNumber and CardiacNumberOfImages, see
    :func:`cardbench.datasets.dicom.frame_numbering`); each frame present at
    every position becomes ``images/<s>/<s>_frame<FF>.nii.gz``; ``cine`` adds the 4D
    ``images/<s>/<s>_cine.nii.gz`` ``(x, y, slice, frame)``.

    Labels: contour files named ``IM-<series>-<NNNN>-{i,o}contour-<who>.txt`` below ``contours``
    belong to the DICOM image whose ``InstanceNumber`` is NNNN. Each frame with contours gets
    ``labels/<s>/<s>_frame<FF>.nii.gz`` (LV inside i-contours, MY inside o-contours minus LV); a slice
    without a contour in that frame is background there. ``annotations.csv`` lists LV (and MY
    where o-contours exist) for those frames.

    ED/ES: ``ed_frame``/``es_frame`` when given; else from the LV volume curve when every frame is
    labelled; else left empty.

    Returns:
        ``{"subject", "frames", "labelled_frames", "ed_frame", "es_frame", "ed_es_source"}``.

    Raises:
        DicomError, DicomGeometryError, ContourError: unusable input (message names the file).
        FileNotFoundError: no DICOM files.
    """
    import numpy as np

    from cardbench._util import atomic_dir, atomic_write_text
    from cardbench.datasets.contours import label_slice, read_sunnybrook_contour, sunnybrook_contour_name
    from cardbench.datasets.dicom import (DicomError, cine_to_nifti, dicom_files, frame_numbering, group_cine,
                                          read_dicom, save_nifti, slice_info)
    from cardbench.datasets.phases import PhaseError, ed_es_frames
    from cardbench.datasets.sunnybrook import _csv

    files = dicom_files(dicom_dir)
    if not files:
        raise FileNotFoundError(f"{dicom_dir}: no DICOM files found (looked for *.dcm and files with a DICM "
                                "preamble)")
    from cardbench._progress import progress as _progress

    dsets = []
    with _progress(len(files), "reading DICOM", enabled=progress, quiet_for=5.0) as bar:
        for f in files:
            dsets.append(read_dicom(f))
            bar.advance()
    infos = [slice_info(d, str(f)) for d, f in zip(dsets, files)]
    if subject is None:
        subject = str(dsets[0].get("PatientID", "") or Path(dicom_dir).name)
    frame_of = frame_numbering(infos)
    groups = group_cine(infos, frame_of=frame_of)
    images = cine_to_nifti(dsets, frames=frames, cine=cine, frame_of=frame_of)
    stacked = sorted(k for k in images if k != "cine")
    # contours -> (slice index, frame)
    where = {}
    for k, fr in groups.items():
        for f, i in fr.items():
            if infos[i].instance_number is not None:
                where[infos[i].instance_number] = (k, f)
    endo, epi = {}, {}
    if contours is not None:
        cfiles = sorted(Path(contours).rglob("*contour*.txt"))
        if not cfiles:
            raise FileNotFoundError(f"{contours}: no contour files (IM-0001-NNNN-icontour-manual.txt) found")
        for c in cfiles:
            n, kind = sunnybrook_contour_name(c.name)
            if n not in where:
                raise DicomError(f"{c}: contour of image {n} but no DICOM file has InstanceNumber {n}")
            (endo if kind == "i" else epi)[where[n]] = read_sunnybrook_contour(c)
    labelled = sorted({f for (_, f) in endo})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for f in stacked:
            save_nifti(images[f], tmp / "images" / subject / f"{subject}_frame{f:02d}.nii.gz")
        if "cine" in images:
            save_nifti(images["cine"], tmp / "images" / subject / f"{subject}_cine.nii.gz")
        ann = []
        label_vols = {}
        for f in labelled:
            if f not in images:
                raise DicomError(f"frame {f} has contours but is not present at every slice position; "
                                 "it cannot be stacked")
            img = images[f]
            nx, ny, nk = img.shape[:3]
            lab = np.zeros((nx, ny, nk), dtype=np.uint8)
            for k in range(nk):
                lab[:, :, k] = label_slice((ny, nx), endo=endo.get((k, f)), epi=epi.get((k, f))).T
            from cardbench.datasets.dicom import nifti_image

            save_nifti(nifti_image(lab, img.affine), tmp / "labels" / subject / f"{subject}_frame{f:02d}.nii.gz")
            cls = ["LV"] + (["MY"] if any(ff == f for (_, ff) in epi) else [])
            ann.append({"subject": subject, "frame": f, "classes": " ".join(cls)})
            label_vols[f] = (lab, img.affine)
        n_frames = max(len(g) for g in groups.values())
        try:
            ed, es, how = ed_es_frames(given=(ed_frame, es_frame), label_volumes=label_vols, n_frames=n_frames)
        except PhaseError:
            ed, es, how = ed_frame, es_frame, "not determined" if ed_frame is None else "dataset"
        row = {"subject": subject, "split": split or "", "ed_frame": "" if ed is None else ed,
               "es_frame": "" if es is None else es}
        atomic_write_text(tmp / "subjects.csv", _csv([row], list(row)))
        if ann:
            atomic_write_text(tmp / "annotations.csv", _csv(ann, ["subject", "frame", "classes"]))
        import yaml

        card = {"name": Path(out).name.lower().replace("_", "-") or "dataset", "version": "0.0.0",
                "label_map": "cardbench", "classes": sorted({c for a in ann for c in a["classes"].split()},
                                                            key=["LV", "MY", "RV"].index) or ["LV"],
                "prepare": {"converter": "cardbench.datasets.prepare.prepare_dicom", "dicom": str(dicom_dir),
                            "contours": str(contours) if contours else None, "ed_es": how}}
        atomic_write_text(tmp / "card.yaml", yaml.safe_dump(card, sort_keys=False))
    return {"subject": subject, "frames": stacked, "labelled_frames": labelled, "ed_frame": ed,
            "es_frame": es, "ed_es_source": how}
