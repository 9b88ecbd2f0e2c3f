"""The Sunnybrook Cardiac Data sample (5 patients, CC0) prepared into the standard layout.

Input (registry paths ``sunnybrook-sample/final_data/...``, shipped gzip-compressed inside cardbench
and checked against ``REGISTRY.tsv`` before use; or read from a folder with the registry layout):

* ``link.csv``: ``patient_id`` (SCD0000X01, the subject id cardbench uses) -> ``original_id``
  (SC-HF-I-X, the contour folder).
* ``dicoms/<patient_id>/<N>.dcm``: image ``N = (slice - 1) * 20 + frame`` (slice and frame 1-based,
  20 frames per cycle). ``N`` must equal the file's ``InstanceNumber`` (checked).
* ``contourfiles/<original_id>/i-contours/IM-0001-<NNNN>-icontour-manual.txt`` (endocardium) and
  ``o-contours/...-ocontour-manual.txt`` (epicardium) of image ``N = NNNN``.

Rules (from the data; `cardbench data info sunnybrook-sample` lists them as known issues):

* Two frames per slice are contoured, the same two in every slice. ED is the contoured frame with
  epicardial contours; ES the other (endocardium only). A patient without epicardial contours
  (SC-HF-I-6 = SCD0000501) gets ED = the contoured frame with the larger LV volume.
* LV = inside the endocardium; MY = inside the epicardium and not LV (ED only). At ES, and at every
  frame of SCD0000501, MY is *not annotated* (annotations.csv), never "empty".
* Geometry from IPP/IOP only (:mod:`cardbench.datasets.dicom`); rasterisation rule of
  :mod:`cardbench.datasets.contours`.

Output (standard layout, docs/datasets.md): ``card.yaml``, ``subjects.csv``, ``annotations.csv``,
``images/<s>/<s>_frame<FF>.nii.gz`` (int16, ED and ES), ``labels/<s>/<s>_frame<FF>.nii.gz``
(uint8, same affine), ``sources.csv`` (which DICOM and contour file made each slice),
``volumes.csv`` (LV and MY volumes per subject and phase in mL: ``LV_mL``/``MY_mL`` from the written
labels, ``LV_contour_mL``/``MY_contour_mL`` from the polygons, shoelace area x pixel area x slice
spacing, for comparison) and
``README.md`` (source and citation). Frame numbers ``FF`` are Sunnybrook's (1 to 20).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardbench.datasets.contours import label_slice, parse_sunnybrook_contour, sunnybrook_contour_name
from cardbench.datasets.dicom import read_dicom, slice_info, stack_geometry, stack_to_array, nifti_image

NAME = "sunnybrook-sample"
PREFIX = "sunnybrook-sample/final_data/"
FRAMES_PER_CYCLE = 20
GROUP = "HF-I"  # heart failure with infarction (all five)


class SunnybrookError(ValueError):
    """The Sunnybrook files are inconsistent with the rules above."""


class RegistrySource:
    """Reads registry files, each checked against its sha256 in REGISTRY.tsv.

    Args:
        data_dir: a folder with the registry layout (holding ``sunnybrook-sample/final_data``), e.g.
            a ``cardbench data fetch sunnybrook-sample`` cache or a mirror of the registry's files; ``None``: the copy
            embedded in cardbench.
    """

    def __init__(self, data_dir: str | Path | None = None):
        self.data_dir = None if data_dir is None else Path(data_dir)

    @property
    def label(self) -> str:
        """``"embedded"`` or the folder, as recorded in the prepared card."""
        return "embedded" if self.data_dir is None else str(self.data_dir)

    def paths(self, prefix: str) -> list[str]:
        """Registry paths starting with ``prefix``, sorted."""
        from cardbench.datasets.embedded import registry

        return sorted(p for p in registry() if p.startswith(prefix))

    def read(self, local_path: str) -> bytes:
        """Verified bytes of a registry file (raises IntegrityError, FileNotFoundError)."""
        from cardbench.datasets.embedded import open_published

        return open_published(local_path, self.data_dir)[0]


def resolve_source(source: str | Path | None) -> RegistrySource:
    """Accept ``None`` (embedded), a folder holding ``sunnybrook-sample/``, or the
    ``sunnybrook-sample`` folder itself.

    Raises:
        FileNotFoundError: the folder holds neither layout.
    """
    if source is None:
        return RegistrySource(None)
    p = Path(source).expanduser()
    if (p / "sunnybrook-sample" / "final_data").is_dir():
        return RegistrySource(p)
    if (p / "final_data").is_dir() and p.name == "sunnybrook-sample":
        return RegistrySource(p.parent)
    raise FileNotFoundError(f"{p}: no sunnybrook-sample/final_data below it; pass a folder with the registry "
                            "layout (e.g. a mirror of the registry's files or the `cardbench data fetch sunnybrook-sample` cache), "
                            "or omit --source to use the copy embedded in cardbench")


@dataclass
class PatientData:
    """One patient's parsed files (all in memory; the sample is small).

    Attributes:
        subject: patient_id (SCD0000X01); original_id: SC-HF-I-X.
        images: (slice, frame) -> (registry path, pydicom Dataset with pixels).
        endo, epi: (slice, frame) -> (registry path, (N, 2) points x, y).
    """

    subject: str
    original_id: str
    images: dict[tuple[int, int], tuple[str, object]] = field(default_factory=dict)
    endo: dict[tuple[int, int], tuple[str, np.ndarray]] = field(default_factory=dict)
    epi: dict[tuple[int, int], tuple[str, np.ndarray]] = field(default_factory=dict)


def slice_frame(n: int) -> tuple[int, int]:
    """Sunnybrook image number ``N`` -> ``(slice, frame)``, both 1-based: N = (slice - 1) * 20 + frame."""
    if n < 1:
        raise SunnybrookError(f"image number {n}: must be >= 1")
    return (n - 1) // FRAMES_PER_CYCLE + 1, (n - 1) % FRAMES_PER_CYCLE + 1


def read_link(src: RegistrySource) -> dict[str, str]:
    """patient_id -> original_id from ``link.csv``."""
    text = src.read(PREFIX + "link.csv").decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or {"patient_id", "original_id"} - set(rows[0]):
        raise SunnybrookError(f"{PREFIX}link.csv: needs columns patient_id, original_id")
    return {r["patient_id"].strip(): r["original_id"].strip() for r in rows}


def read_patient(src: RegistrySource, subject: str, original_id: str) -> PatientData:
    """Read one patient's DICOMs and contours, checking file numbering against the DICOM tags.

    Raises:
        SunnybrookError: a DICOM whose InstanceNumber differs from its file number, a contour for
            an image that is not there, two files for one image.
    """
    pdata = PatientData(subject, original_id)
    dpre = f"{PREFIX}dicoms/{subject}/"
    for p in src.paths(dpre):
        m = re.fullmatch(r"(\d+)\.dcm", p[len(dpre):])
        if not m:
            continue
        n = int(m[1])
        ds = read_dicom(src.read(p), name=p)
        inst = ds.get("InstanceNumber")
        if inst is not None and int(inst) != n:
            raise SunnybrookError(f"{p}: file number {n} but InstanceNumber {inst}; the N = (slice-1)*20+frame "
                                  "numbering cannot be trusted for this file")
        pdata.images[slice_frame(n)] = (p, ds)
    if not pdata.images:
        raise SunnybrookError(f"{dpre}: no DICOM files for {subject}")
    cpre = f"{PREFIX}contourfiles/{original_id}/"
    for p in src.paths(cpre):
        n, kind = sunnybrook_contour_name(p)
        key = slice_frame(n)
        if key not in pdata.images:
            raise SunnybrookError(f"{p}: contour of image {n} (slice {key[0]}, frame {key[1]}) but "
                                  f"{dpre}{n}.dcm is not in the sample")
        pts = parse_sunnybrook_contour(src.read(p).decode("ascii", errors="replace"), p)
        target = pdata.endo if kind == "i" else pdata.epi
        if key in target:
            raise SunnybrookError(f"{p}: second {kind}-contour for image {n}")
        target[key] = (p, pts)
    return pdata


@dataclass
class PreparedSubject:
    """What was written for one subject (for tables and tests)."""

    subject: str
    original_id: str
    ed_frame: int
    es_frame: int
    ed_rule: str
    n_slices: int
    slice_spacing: float
    pixel_spacing: tuple[float, float]
    classes: dict[int, tuple[str, ...]]
    volumes: dict[int, dict[str, float]]
    sources: list[dict]


def _phases(p: PatientData) -> tuple[int, int, str, dict[int, float]]:
    frames = sorted({f for (_, f) in p.endo})
    slices = sorted({s for (s, _) in p.endo})
    if len(frames) != 2:
        raise SunnybrookError(f"{p.subject}: endocardial contours at frames {frames}; expected exactly two "
                              "(ED and ES) in every slice")
    for s in slices:
        have = sorted(f for (ss, f) in p.endo if ss == s)
        if have != frames:
            raise SunnybrookError(f"{p.subject} slice {s}: endocardial contours at frames {have}, other slices at "
                                  f"{frames}; the ED/ES frames must be the same in every slice")
    epi_frames = sorted({f for (_, f) in p.epi})
    # LV area (pixels, shoelace) per frame: used only when there is no epicardial contour
    areas = {}
    for f in frames:
        tot = 0.0
        for (s, ff), (_, pts) in p.endo.items():
            if ff == f:
                x, y = pts[:, 0], pts[:, 1]
                tot += abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
        areas[f] = tot
    if epi_frames:
        if len(epi_frames) != 1 or epi_frames[0] not in frames:
            raise SunnybrookError(f"{p.subject}: epicardial contours at frames {epi_frames}; expected one of the two "
                                  f"contoured frames {frames}")
        ed = epi_frames[0]
        rule = "frame with epicardial contours"
    else:
        ed = max(frames, key=lambda f: (areas[f], -f))
        rule = "no epicardial contours: contoured frame with the larger LV volume"
    es = [f for f in frames if f != ed][0]
    return ed, es, rule, areas


def prepare_patient(p: PatientData, out: Path, split: str) -> PreparedSubject:
    """Write images and labels of one patient at ED and ES into ``out`` (standard layout)."""
    from cardbench.datasets.contours import polygon_area
    from cardbench.datasets.dicom import save_nifti
    from cardbench.datasets.phases import class_volume_ml

    ed, es, rule, _ = _phases(p)
    slices = sorted({s for (s, _) in p.endo})
    classes: dict[int, tuple[str, ...]] = {}
    volumes: dict[int, dict[str, float]] = {}
    sources: list[dict] = []
    geo0 = None
    for f in (ed, es):
        missing = [s for s in slices if (s, f) not in p.images]
        if missing:
            raise SunnybrookError(f"{p.subject}: frame {f} has contours but no image at slice(s) {missing}")
        dsets = [p.images[(s, f)][1] for s in slices]
        infos = [slice_info(d, p.images[(s, f)][0]) for s, d in zip(slices, dsets)]
        geo = stack_geometry(infos)
        if geo0 is None:
            geo0 = geo
        elif not np.allclose(geo.affine, geo0.affine, atol=0.1):
            raise SunnybrookError(f"{p.subject}: ED and ES stacks have different geometry")
        img = stack_to_array(dsets, geo)
        rows, cols = infos[0].rows, infos[0].columns
        use_epi = f == ed and any((s, f) in p.epi for s in slices)
        lab = np.zeros(geo.shape, dtype=np.uint8)
        for k, i in enumerate(geo.order):
            s = slices[i]
            endo = p.endo[(s, f)][1]
            epi = p.epi[(s, f)][1] if use_epi and (s, f) in p.epi else None
            if use_epi and epi is None:
                raise SunnybrookError(f"{p.subject} slice {s} frame {f}: endocardial but no epicardial contour at ED "
                                      "while other slices have one; MY would be partly unannotated")
            lab[:, :, k] = label_slice((rows, cols), endo=endo, epi=epi).T
            sources.append({"subject": p.subject, "frame": f, "slice": k, "sunnybrook_slice": s,
                            "position_mm": round(float(geo.positions[k]), 4),
                            "dicom": p.images[(s, f)][0], "icontour": p.endo[(s, f)][0],
                            "ocontour": p.epi[(s, f)][0] if epi is not None else ""})
        cls = ("LV", "MY") if use_epi else ("LV",)
        classes[f] = cls
        name = f"{p.subject}_frame{f:02d}.nii.gz"
        save_nifti(nifti_image(img, geo.affine), out / "images" / p.subject / name)
        save_nifti(nifti_image(lab, geo.affine), out / "labels" / p.subject / name)
        # the same volumes from the polygons (shoelace area x pixel area x slice spacing), for comparison
        disc = geo.pixel_spacing[0] * geo.pixel_spacing[1] * geo.slice_spacing / 1000.0
        lv_c = sum(polygon_area(p.endo[(s, f)][1]) for s in slices) * disc
        my_c = (sum(polygon_area(p.epi[(s, f)][1]) for s in slices) * disc - lv_c) if use_epi else float("nan")
        volumes[f] = {"LV": class_volume_ml(lab, geo.affine),
                      "MY": class_volume_ml(lab, geo.affine, "MY") if use_epi else float("nan"),
                      "LV_contour": lv_c, "MY_contour": my_c}
    return PreparedSubject(p.subject, p.original_id, ed, es, rule, len(slices), geo0.slice_spacing,
                           geo0.pixel_spacing, classes, volumes, sources)


def split_of(subject: str) -> str:
    """The standard split of a subject from the card (``""`` when not in the split): train
    SCD0000101, SCD0000201, SCD0000301; test SCD0000401, SCD0000501 (splits_version 1)."""
    from cardbench.datasets.cards import load_card

    return load_card(NAME).split_of().get(subject, "")


def _card_yaml(extra: dict) -> str:
    import yaml
    from importlib import resources

    text = (resources.files("cardbench.datasets") / "cards" / f"{NAME}.yaml").read_text(encoding="utf-8")
    card = yaml.safe_load(text)
    card.update(extra)
    return yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=100)


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def prepare_sunnybrook(out: str | Path, source: str | Path | None = None, *, progress: bool = False,
                       overwrite: bool = True) -> list[PreparedSubject]:
    """Prepare the Sunnybrook sample into ``out`` (standard layout), atomically.

    The folder is built in a temporary sibling and renamed into place only when complete, so
    ``out`` is either absent, the previous version, or complete.

    Args:
        out: destination folder.
        source: ``None`` (embedded copy), or a folder with the registry layout (see
            :func:`resolve_source`). Every file is checked against its registry sha256.
        progress: show a rich progress bar on stderr.
        overwrite: replace an existing ``out`` (else FileExistsError).

    Returns:
        One :class:`PreparedSubject` per patient, in subject order.

    Raises:
        IntegrityError: a source file differs from the registry.
        SunnybrookError, DicomError, ContourError: inconsistent input (the message names the file).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from cardbench._util import atomic_dir, atomic_write_text
    from cardbench._version import __version__
    from cardbench._progress import progress as _progress

    src = resolve_source(source)
    link = read_link(src)
    results: list[PreparedSubject] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        with _progress(len(link), f"preparing {NAME}", enabled=progress, quiet_for=5.0) as bar:
            for subject in sorted(link):
                pdata = read_patient(src, subject, link[subject])
                results.append(prepare_patient(pdata, tmp, split_of(subject)))
                bar.advance(info=subject)
        subj_rows = [{"subject": r.subject, "split": split_of(r.subject), "ed_frame": r.ed_frame,
                      "es_frame": r.es_frame, "group": GROUP, "original_id": r.original_id,
                      "n_slices": r.n_slices, "slice_spacing_mm": round(r.slice_spacing, 4),
                      "pixel_spacing_mm": round(r.pixel_spacing[0], 6), "ed_rule": r.ed_rule} for r in results]
        atomic_write_text(tmp / "subjects.csv", _csv(subj_rows, list(subj_rows[0])))
        ann = [{"subject": r.subject, "frame": f, "classes": " ".join(r.classes[f])}
               for r in results for f in (r.ed_frame, r.es_frame)]
        atomic_write_text(tmp / "annotations.csv", _csv(ann, ["subject", "frame", "classes"]))
        src_rows = [row for r in results for row in r.sources]
        atomic_write_text(tmp / "sources.csv", _csv(src_rows, list(src_rows[0])))
        vol_rows = []
        for r in results:
            for phase, f in (("ED", r.ed_frame), ("ES", r.es_frame)):
                v = r.volumes[f]
                vol_rows.append({"subject": r.subject, "phase": phase, "frame": f,
                                 "LV_mL": f"{v['LV']:.3f}",
                                 "MY_mL": "" if np.isnan(v["MY"]) else f"{v['MY']:.3f}",
                                 "LV_contour_mL": f"{v['LV_contour']:.3f}",
                                 "MY_contour_mL": "" if np.isnan(v["MY_contour"]) else f"{v['MY_contour']:.3f}"})
        atomic_write_text(tmp / "volumes.csv", _csv(vol_rows, ["subject", "phase", "frame", "LV_mL", "MY_mL",
                                                               "LV_contour_mL", "MY_contour_mL"]))
        atomic_write_text(tmp / "card.yaml", _card_yaml({"prepare": {
            "cardbench_version": __version__, "source": src.label,
            "converter": "cardbench.datasets.sunnybrook.prepare_sunnybrook",
            "rasterisation": "pixel centre inside the contour; half-open boundary (scanline rule), "
                             "see cardbench.datasets.contours",
            "frames": "Sunnybrook frame numbers 1-20 (N = (slice - 1) * 20 + frame)",
            "slices": "ordered by position along the slice normal (IPP . (IOP row x IOP col)), ascending"}}))
        atomic_write_text(tmp / "README.md", _readme())
    return results


def _readme() -> str:
    return (
        "# sunnybrook-sample (prepared by cardbench)\n\n"
        "Five patients of the Sunnybrook Cardiac Data (heart failure with infarction), cine SSFP short axis,\n"
        "GE 1.5T, with expert LV endocardial and epicardial contours, converted by\n"
        "`cardbench data prepare sunnybrook-sample`. License: CC0 1.0. Cite: Radau P, Lu Y, Connelly K, Paul G,\n"
        "Dick AJ, Wright GA. Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI.\n"
        "The MIDAS Journal, 2009. http://hdl.handle.net/10380/3070\n\n"
        "Files: card.yaml; subjects.csv (split, ed_frame, es_frame); annotations.csv (classes annotated per\n"
        "frame: MY only at ED, and nowhere for SCD0000501); images/ and labels/ (<s>_frame<FF>.nii.gz, labels\n"
        "0 background, 1 LV, 2 MY); sources.csv (DICOM and contour file of every slice); volumes.csv.\n"
    )


def read_volumes(folder: str | Path):
    """``volumes.csv`` of a prepared folder as a DataFrame (subject, phase, frame, LV_mL, MY_mL)."""
    import pandas as pd

    return pd.read_csv(Path(folder) / "volumes.csv", dtype={"subject": str})
