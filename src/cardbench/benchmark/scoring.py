"""Scoring a submission folder against a reference: the engine behind ``cardbench score``.

Layers (each a function a Python user can call):

1. :func:`pair_cases`: match prediction files to reference cases by name; missing, extra and
   duplicate cases become :class:`~cardbench.benchmark.validation.Problem` s.
2. :func:`score_volume`: read one (subject, frame) group of reference and prediction files,
   validate them (readable, labels in map, same grid) and count confusions per 2D slice.
3. :func:`score`: run 1 and 2 over the whole set (optionally in parallel processes), raise
   :class:`~cardbench.benchmark.validation.ValidationError` if any problem was found (nothing is
   written), then build the per-case table and aggregate it under the protocol.

Input files are read once; their sha256 is computed from the same bytes and recorded in the
summary.
"""

from __future__ import annotations

import datetime as _dt
import re
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from cardbench._version import __version__
from cardbench.benchmark.aggregate import aggregate, per_subject_table
from cardbench.benchmark.casestore import PerCaseStore, PerCaseWriter
from cardbench.benchmark.casetable import COUNT_COLUMNS, count_columns, per_case_table
from cardbench.benchmark.clinical import clinical_summary
from cardbench.benchmark.confusion import confusion_per_slice
from cardbench.benchmark.metrics import FAILED, STATUSES
from cardbench.benchmark.protocols import Protocol, get_protocol
from cardbench.benchmark.results import ScoreResult
from cardbench.benchmark.metric_registry import get_metric
from cardbench.benchmark.surface import DISTANCE_METRICS, fov_diagonal_mm, label_surface_distances
from cardbench.benchmark.submission import Submission, load_submission
from cardbench.benchmark.validation import (
    DEFAULT_AFFINE_TOL, Problem, ValidationError, check_geometry, check_labels, collapse_notes, label_map_warnings,
)
from cardbench.datasets.formats import suffix_list
from cardbench.datasets.io import LabelImage, MaskReadError, read_mask
from cardbench.datasets.naming import CaseKey
from cardbench.datasets.reference import Reference, load_reference
from cardbench.datasets.splits import reference_split_issues
from cardbench.labelmaps import CLASSES, CLASS_VALUES, LabelMap, LabelValueError, class_space, get_label_map


@dataclass
class CasePair:
    """One reference case and its prediction file (None when missing and allowed)."""

    key: CaseKey
    ref_path: Path
    pred_path: Path | None


def pair_cases(sub: Submission, ref: Reference, allow_missing: bool = False,
               subjects: set[str] | None = None) -> tuple[list[CasePair], list[Problem], list[str]]:
    """Match submission files to reference cases.

    Args:
        sub: the listed submission.
        ref: the listed reference.
        allow_missing: a missing prediction becomes a pair with ``pred_path=None`` (scored as a
            miss) instead of a problem.
        subjects: restrict to these subjects (e.g. one split); predictions of other reference
            subjects are ignored with a note, not reported as extra.

    Returns:
        (pairs sorted by case, problems, notes).
    """
    problems: list[Problem] = []
    notes: list[str] = []
    for key, paths in sorted(ref.files.items()):
        if len(paths) > 1:
            problems.append(Problem(", ".join(str(p) for p in paths), f"reference case {key} is given by "
                                    f"{len(paths)} files", "keep one file per case in the reference", "duplicate"))
    for key, paths in sorted(sub.files.items()):
        if len(paths) > 1:
            problems.append(Problem(", ".join(str(p) for p in paths),
                                    f"duplicate prediction: {len(paths)} files give case {key}",
                                    "keep exactly one file per case (e.g. delete x.nii next to x.nii.gz)",
                                    "duplicate"))
    ref_keys = {k for k in ref.files if subjects is None or k.subject in subjects}
    sub_keys = set(sub.files)
    ref_is_2d = any(k.slice is not None for k in ref_keys)
    sub_is_2d = any(k.slice is not None for k in sub_keys)
    if ref_keys and sub_keys and ref_is_2d != sub_is_2d:
        problems.append(Problem(str(sub.source), f"the predictions are {'2D images (PNG)' if sub_is_2d else '3D volumes'}"
                                f" but the reference holds {'2D images (PNG)' if ref_is_2d else '3D volumes'}",
                                "submit the same format as the reference (see `cardbench data info`)", "format"))
        return [], problems, notes
    if not sub_keys and not sub.problems:
        problems.append(Problem(str(sub.source), f"no prediction files ({suffix_list()}) found",
                                "put one prediction per reference case in the folder, named like the reference "
                                f"(e.g. {ref.files[min(ref.files)][0].name})", "missing"))
        return [], problems, notes
    missing = sorted(k for k in ref_keys if k not in sub_keys)
    split_hint = _split_hint(ref, sub_keys, missing) if subjects is None and not allow_missing else None
    if split_hint:
        problems.append(split_hint)
    pairs: list[CasePair] = []
    mask_root = ref.root / "labels" if (ref.root / "labels").is_dir() else ref.root
    for key in sorted(ref_keys):
        ref_path = ref.files[key][0]
        if key in sub_keys:
            pairs.append(CasePair(key, ref_path, sub.files[key][0]))
        elif allow_missing:
            pairs.append(CasePair(key, ref_path, None))
        elif not split_hint:
            rel = _rel(str(ref_path), mask_root)
            problems.append(Problem(str(sub.root / rel), f"missing prediction for case {key}",
                                    f"add a file named {ref_path.name} (or pass --allow-missing to score it "
                                    "as a miss)", "missing"))
    extra = sorted(sub_keys - ref_keys)
    out_of_scope = [k for k in extra if k in ref.files]
    for key in extra:
        if key in ref.files:
            continue
        problems.append(Problem(str(sub.files[key][0]), f"extra case {key}: not in the reference "
                                f"'{ref.name}'", "remove the file or fix its name to match a reference case",
                                "extra"))
    if out_of_scope:
        notes.append(f"{len(out_of_scope)} prediction(s) of reference cases outside the selected subjects were "
                     "ignored")
    n_missing = sum(p.pred_path is None for p in pairs)
    if n_missing:
        notes.append(f"{n_missing} missing prediction(s) scored as misses (--allow-missing)")
    return pairs, problems, notes


def _split_hint(ref: Reference, sub_keys: set, missing: list) -> Problem | None:
    """One problem instead of many 'missing' lines when the predictions cover exactly one split."""
    if not missing or ref.subjects.empty or "split" not in ref.subjects.columns:
        return None
    pred_splits = {ref.split_of(k.subject) for k in sub_keys}
    if len(pred_splits) != 1 or "" in pred_splits:
        return None
    (split,) = pred_splits
    if any(ref.split_of(k.subject) == split for k in missing):
        return None
    return Problem(str(ref.root), f"the predictions cover only the '{split}' split; {len(missing)} reference case(s) "
                   "of other splits have no prediction", f"pass --split {split} to score that split", "missing")


@dataclass
class VolumeTask:
    """Work unit for :func:`score_volume`: all pairs of one (subject, frame)."""

    subject: str
    frame: int | None
    pairs: list[CasePair]
    ref_map: LabelMap
    pred_map: LabelMap
    affine_tol: float
    png_spacing: tuple[float, float, float] | None = None
    distances: bool = False
    #: class -> cardbench value of both maps (:func:`cardbench.labelmaps.class_space`); None: LV, MY, RV
    space: dict[str, int] | None = None
    #: class or region -> cardbench values, for surface distances; None: LV, MY, RV
    structures: dict[str, tuple[int, ...]] | None = None

    @property
    def n_labels(self) -> int:
        """Labels incl. background of the counts (4 unless a map has further classes)."""
        return max(4, max(self.space.values()) + 1) if self.space else 4

    @property
    def structure_values(self) -> dict[str, tuple[int, ...]]:
        return self.structures if self.structures is not None else {c: (CLASS_VALUES[c],) for c in CLASSES}
    #: boundary metrics to compute (registered ``distance``-family metrics), in column order
    surface_metrics: tuple[str, ...] = DISTANCE_METRICS
    #: metric -> parameter -> value for the surface engine (NSD: tolerance_mm, a per-class value is one number per structure, in
    #: the order of :attr:`structure_values`)
    surface_params: dict | None = None


def _read(path: Path, lm: LabelMap, role: str, problems: list[Problem],
          expected_shape: tuple[int, ...] | None = None,
          space: dict[str, int] | None = None) -> tuple[LabelImage | None, np.ndarray | None]:
    try:
        img = read_mask(path, expected_shape=expected_shape)
    except MaskReadError as e:
        problems.append(Problem(str(e.path), f"{role} {e.problem}", e.fix, e.kind))
        return None, None
    lp = check_labels(img, lm, role)
    if lp:
        problems.extend(lp)
        return img, None
    try:
        return img, lm.to_cardbench(img.array, space)
    except LabelValueError as e:  # pragma: no cover - check_labels catches it first
        problems.append(Problem(str(path), str(e), "fix the label values", "labels"))
        return img, None


def score_volume(task: VolumeTask) -> dict:
    """Read, validate and count one (subject, frame) group; with ``task.distances`` also compute
    the surface distances (:mod:`cardbench.benchmark.surface`) of every class per 2D image and per
    volume.

    NIfTI: one file is the volume ``(x, y, slice)`` with the header's spacing; its images are the
    planes ``[:, :, s]``. PNG: each file is one image ``(row, col)`` with the in-plane spacing of
    the reference's spacing.csv; the volume is the stack of the frame's images sorted by slice
    index, scored in 3D only when all images have one shape, the slice indices have no gap and
    the spacing is known; otherwise the volume's distances get status ``failed`` and a note says
    why (never a silent value).

    Returns:
        dict with ``rows`` (counts-table records, one per 2D image), ``problems``, ``hashes``
        (``{"reference": {path: sha256}, "predictions": {...}}``), ``extra`` (distance records:
        level, subject, frame, slice, class, one column per ``task.surface_metrics`` (hd, hd95,
        assd, masd, nsd), distance_status) and ``notes``.
    """
    problems: list[Problem] = []
    rows: list[dict] = []
    hashes: dict[str, dict[str, str]] = {"reference": {}, "predictions": {}}
    extra: list[dict] = []
    notes: list[str] = []
    png_items: list[tuple[int, np.ndarray, np.ndarray]] = []
    for pair in task.pairs:
        ref_img, ref = _read(pair.ref_path, task.ref_map, "reference", problems, space=task.space)
        if ref_img is not None:
            hashes["reference"][str(pair.ref_path)] = ref_img.sha256
        if pair.pred_path is None:
            pred_img, pred = None, (np.zeros_like(ref) if ref is not None else None)
        else:
            pred_img, pred = _read(pair.pred_path, task.pred_map, "prediction", problems,
                                   ref_img.array.shape if ref_img is not None else None, task.space)
            if pred_img is not None:
                hashes["predictions"][str(pair.pred_path)] = pred_img.sha256
                notes.extend(pred_img.summary_notes)
        if ref_img is not None and pred_img is not None:
            gp = check_geometry(ref_img, pred_img, task.affine_tol)
            if gp:
                problems.extend(gp)
                continue
        if ref is None or pred is None:
            continue
        conf = confusion_per_slice(ref, pred, task.n_labels)
        if ref_img.spacing is not None:
            sp = ref_img.spacing
        elif task.png_spacing is not None:
            sp = task.png_spacing
        else:
            sp = None
        voxel_ml = float(np.prod(sp)) / 1000.0 if sp is not None else np.nan
        shape3 = ref.shape if ref.ndim == 3 else ref.shape + (1,)
        # worst-case distance of each level: the diagonal of its field of view (image: in-plane)
        fov = fov_diagonal_mm(shape3, sp) if sp is not None else np.nan
        fov_image = fov_diagonal_mm(shape3[:2], sp[:2]) if sp is not None else np.nan
        slices = range(conf.shape[0]) if pair.key.slice is None else [pair.key.slice]
        for i, s in enumerate(slices):
            rec = {"subject": task.subject, "frame": task.frame, "slice": s, "missing": pair.pred_path is None,
                   "ref_file": str(pair.ref_path), "pred_file": "" if pair.pred_path is None else str(pair.pred_path),
                   "voxel_ml": voxel_ml, "fov_diag_mm": fov_image, "volume_fov_diag_mm": fov}
            rec.update(zip(count_columns(task.n_labels), conf[i].ravel().tolist()))
            rows.append(rec)
        if pair.key.slice is not None:
            png_items.append((pair.key.slice, ref, pred))
        elif task.distances:
            extra.extend(_distance_records(task, ref, pred, sp, list(slices), volume=True, notes=notes,
                                           what=pair.ref_path.name))
    if png_items and task.png_spacing is not None:
        # a PNG frame's volume spans its images: the worst-case distance of the volume level
        slice_ids = sorted(s for s, _, _ in png_items)
        vfov = fov_diagonal_mm((*max(r.shape for _, r, _ in png_items), slice_ids[-1] - slice_ids[0] + 1),
                               task.png_spacing)
        for rec in rows:
            rec["volume_fov_diag_mm"] = vfov
    if png_items and task.distances:
        extra.extend(_png_distance_records(task, png_items, notes))
    return {"rows": rows, "problems": problems, "hashes": hashes, "extra": extra, "notes": notes}


def _failed_records(task: VolumeTask, slices: list, level: str) -> list[dict]:
    return [{"level": level, "subject": task.subject, "frame": task.frame, "slice": s, "class": c,
             **{m: np.nan for m in task.surface_metrics}, "distance_status": FAILED}
            for s in slices for c in task.structure_values]


def _distance_records(task: VolumeTask, ref: np.ndarray, pred: np.ndarray, spacing, slices: list,
                      volume: bool, notes: list[str], what: str) -> list[dict]:
    """Distance records of one label volume ``(x, y, slice)`` (or image ``(row, col)``)."""
    if spacing is None:
        notes.append(f"{what}: surface distances not computed (status failed): the voxel spacing is unknown; "
                     "give PNG references a spacing.csv (subject, spacing_row, spacing_col, spacing_slice in mm)")
        return (_failed_records(task, slices, "image")
                + (_failed_records(task, [None], "volume") if volume else []))
    sp = tuple(float(x) for x in spacing)[:ref.ndim]
    try:
        res = _structure_distances(task.structure_values, ref, pred, sp, volume=volume and ref.ndim == 3,
                                   metrics=task.surface_metrics, params=task.surface_params)
    except ValueError as e:
        notes.append(f"{what}: surface distances not computed (status failed): {e}")
        return (_failed_records(task, slices, "image")
                + (_failed_records(task, [None], "volume") if volume else []))
    out = []
    for ci, c in enumerate(task.structure_values):
        for i, s in enumerate(slices):
            out.append({"level": "image", "subject": task.subject, "frame": task.frame, "slice": s, "class": c,
                        **dict(zip(task.surface_metrics, res["images"][ci, i].tolist())), "distance_status": None})
        if volume:
            out.append({"level": "volume", "subject": task.subject, "frame": task.frame, "slice": None, "class": c,
                        **dict(zip(task.surface_metrics, res["volume"][ci].tolist())), "distance_status": None})
    return out


def _structure_distances(structures: dict[str, tuple[int, ...]], ref: np.ndarray, pred: np.ndarray, sp,
                         volume: bool, metrics: Sequence[str] = DISTANCE_METRICS, params: dict | None = None) -> dict:
    """:func:`label_surface_distances` of every structure, in the order of ``structures``: classes
    (one value each) four at a time, each region (several values) on its binary union mask.

    ``params`` is metric -> parameter -> value, where a list holds one value per structure (in the
    order of ``structures``, e.g. NSD's per-class tolerance); each call gets the values of its own
    structures."""
    names = list(structures)

    def params_for(idx: list[int]) -> dict | None:
        if not params:
            return params
        return {m: {k: ([v[i] for i in idx] if isinstance(v, (list, tuple)) else v) for k, v in prm.items()}
                for m, prm in params.items()}

    singles = [(n, v[0]) for n, v in structures.items() if len(v) == 1]
    parts: dict[str, tuple[dict, int]] = {}
    for i in range(0, len(singles), 4):
        chunk = singles[i:i + 4]
        res = label_surface_distances(ref, pred, sp, labels=[v for _, v in chunk], volume=volume, images=True,
                                      metrics=metrics, params=params_for([names.index(n) for n, _ in chunk]))
        for j, (n, _) in enumerate(chunk):
            parts[n] = (res, j)
    for n, vals in structures.items():
        if len(vals) > 1:
            res = label_surface_distances(np.isin(ref, vals).astype(np.uint8), np.isin(pred, vals).astype(np.uint8),
                                          sp, labels=[1], volume=volume, images=True, metrics=metrics,
                                          params=params_for([names.index(n)]))
            parts[n] = (res, 0)
    out = {"images": np.stack([parts[n][0]["images"][parts[n][1]] for n in structures])}
    if volume:
        out["volume"] = np.stack([parts[n][0]["volume"][parts[n][1]] for n in structures])
    return out


def _png_distance_records(task: VolumeTask, items: list, notes: list[str]) -> list[dict]:
    """Distance records of a frame given as PNG images: each image in 2D, the stack in 3D when it
    is a valid volume (one shape, no gap in the slice indices, spacing known)."""
    items = sorted(items, key=lambda t: t[0])
    slices = [s for s, _, _ in items]
    what = f"subject {task.subject} frame {task.frame}"
    sp = task.png_spacing
    shapes = {r.shape for _, r, _ in items}
    reason = None
    if sp is None:
        reason = "the voxel spacing is unknown (add spacing.csv to the reference)"
    elif len(shapes) > 1:
        reason = f"its images differ in shape {sorted(shapes)}"
    elif slices != list(range(slices[0], slices[0] + len(slices))):
        missing = sorted(set(range(slices[0], slices[-1] + 1)) - set(slices))
        reason = f"slice indices have a gap (no image for slice {', '.join(map(str, missing[:5]))})"
    if reason is None:
        ref = np.stack([r for _, r, _ in items], axis=-1)
        pred = np.stack([p for _, _, p in items], axis=-1)
        return _distance_records(task, ref, pred, sp, slices, volume=True, notes=notes, what=what)
    notes.append(f"{what}: 3D surface distances not computed (status failed): {reason}")
    out = []
    for s, r, p in items:
        out.extend(_distance_records(task, r, p, sp, [s], volume=False, notes=notes,
                                     what=f"{what} slice {s}"))
    return out + _failed_records(task, [None], "volume")


#: seconds of scoring before progress lines are written where stderr is not a terminal
PROGRESS_QUIET_S = 5.0


def surface_plan(protocol: Protocol, structures: "Sequence[str]" = CLASSES) -> tuple[tuple[str, ...], dict]:
    """The boundary metrics a protocol needs from the surface engine and their parameters.

    Returns:
        (metric names of the ``distance`` family with a policy in the protocol, in registry order;
        metric -> parameter -> value, with NSD's ``tolerance_mm`` as one number per structure of
        ``structures`` (classes and regions, in the order they are scored; default LV, MY, RV)).

    Raises:
        ProtocolError: a per-class NSD tolerance lacks a class and has no ``default``.
    """
    from cardbench.benchmark.metric_registry import METRICS

    names = tuple(m for m, spec in METRICS.items() if spec.family == "distance" and m in protocol.policy)
    params: dict = {}
    for m in names:
        prm = {k: protocol.parameter(m, k) for k in get_metric(m).parameters}
        if "tolerance_mm" in prm:
            prm["tolerance_mm"] = [protocol.nsd_tolerance(c) if m == "nsd" else float(prm["tolerance_mm"])
                                   for c in structures]
        if prm:
            params[m] = prm
    return names, params




def _failed_task(task: VolumeTask, exc: BaseException) -> dict:
    """The result of a task whose worker raised or died: one problem naming the case, no rows."""
    first = task.pairs[0] if task.pairs else None
    where = str(first.pred_path or first.ref_path) if first is not None else task.subject
    frame = "" if task.frame is None else f" frame {task.frame}"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {"rows": [], "hashes": {"reference": {}, "predictions": {}}, "extra": [], "notes": [],
            "problems": [Problem(where, f"case subject {task.subject}{frame} could not be scored: "
                                 f"{type(exc).__name__}{': ' + msg if msg else ''}",
                                 "rerun; if it fails again, check that every worker can read this file "
                                 "(shared storage) and has enough memory", "worker")]}


def score_volumes(tasks: Sequence[VolumeTask]) -> list[dict]:
    """:func:`score_volume` of several cases in one call: the unit of work sent to a worker, so the
    per-task cost of an executor (pickling, scheduling, one network round trip with Dask) is paid
    once per chunk, not once per case. A case that raises gives its one-problem result
    (:func:`_failed_task`), so the other cases of the chunk are kept."""
    out = []
    for task in tasks:
        try:
            out.append(score_volume(task))
        except Exception as e:  # noqa: BLE001 - reported as one problem naming the case
            out.append(_failed_task(task, e))
    return out


#: cases per unit of work sent to an executor (Dask) or the process pool, at most; fewer when the
#: run is small, so every worker still gets many units (see :func:`chunk_size`).
CHUNK_CASES = 8


def chunk_size(n: int, workers: int, executor: bool) -> int:
    """Cases per unit of work for ``n`` cases on ``workers`` workers: at most :data:`CHUNK_CASES`
    (4 for the local process pool, whose per-task cost is smaller), and at least 32 units per worker
    (an executor's worker count is unknown here: 8 are assumed), so the last units do not leave
    workers idle. 1 for small runs (a worker that dies then takes a single case with it)."""
    cap = CHUNK_CASES if executor else max(1, CHUNK_CASES // 2)
    per = max(1, n // (32 * max(workers if not executor else 8, 1)))
    return max(1, min(cap, per))


def iter_task_results(tasks: Sequence[VolumeTask], jobs: int = 1, progress: bool = True,
                      executor: Executor | None = None, max_in_flight: int | None = None,
                      chunk: int | None = None) -> Iterator[dict]:
    """Run :func:`score_volume` over ``tasks`` and yield the results **in task order**.

    Args:
        tasks: work units.
        jobs: worker processes of a local :class:`~concurrent.futures.ProcessPoolExecutor`
            (ignored when ``executor`` is given).
        progress: show a progress bar on stderr; it counts completed cases, in any order.
        executor: any :class:`concurrent.futures.Executor`, e.g. the one of a Dask cluster
            (``distributed.Client(...).get_executor()``); its workers must be able to import
            cardbench and read the input files by path.
        max_in_flight: cases submitted but not yet yielded (default ``max(4 * jobs, 256)`` for
            an executor, ``8 * jobs`` for the process pool, rounded up to whole chunks); bounds
            memory for any number of tasks.
        chunk: cases per unit of work (:func:`score_volumes`; default :func:`chunk_size`).

    A task that raises, or whose worker died more often than the executor retries it (Dask:
    ``distributed.scheduler.allowed-failures``), yields one problem naming the case and no rows,
    so no case is ever dropped silently. Results never depend on ``jobs``, ``chunk`` or the executor.
    """
    n = len(tasks)
    from cardbench._progress import progress as _progress  # a bar in a terminal, a line per 10 % in a log

    # in a log, no lines for scoring that ends within PROGRESS_QUIET_S (a quick validation error stays one line)
    with _progress(n, "scoring", enabled=progress, quiet_for=PROGRESS_QUIET_S) as bar:
        if executor is None and (jobs <= 1 or n < 2):
            for task in tasks:
                yield score_volume(task)
                bar.advance()
            return
        own = executor is None
        size = max(1, int(chunk or chunk_size(n, jobs, not own)))
        chunks = [tasks[a:a + size] for a in range(0, n, size)]
        window = max(1, -(-(max_in_flight or (8 * jobs if own else max(4 * jobs, 256))) // size))
        ex = ProcessPoolExecutor(max_workers=jobs) if own else executor
        try:
            pending: dict = {}
            done_buf: dict[int, list[dict]] = {}
            nxt_submit = nxt_yield = 0
            while nxt_yield < len(chunks):
                while nxt_submit < len(chunks) and len(pending) + len(done_buf) < window:
                    pending[ex.submit(score_volumes, chunks[nxt_submit])] = nxt_submit
                    nxt_submit += 1
                finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = pending.pop(fut)
                    try:
                        done_buf[i] = fut.result()
                    except Exception as e:  # worker died too often: every case of the chunk is named
                        done_buf[i] = [_failed_task(t, e) for t in chunks[i]]
                    bar.advance(len(chunks[i]))
                while nxt_yield in done_buf:
                    yield from done_buf.pop(nxt_yield)
                    nxt_yield += 1
        except BaseException:  # Ctrl-C (KeyboardInterrupt) or the consumer stopped: do not wait for workers
            if own:
                _stop_pool(ex)
                own = False
            raise
        finally:
            if own:
                ex.shutdown(wait=True, cancel_futures=True)


def _stop_pool(ex: ProcessPoolExecutor) -> None:
    """Stop a process pool at once: cancel what is queued and terminate the workers (after Ctrl-C
    they may be stuck in a half-finished task, and a waiting shutdown could hang)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.exitcode is None:  # alive, or still starting
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.exitcode is None:  # SIGTERM not acted on in time (a loaded machine): SIGKILL
            p.kill()
            p.join(timeout=5)
    # the pool's own manager thread also reaps the workers it sees die; until it has, a worker it
    # reaped can still read as alive here (both call waitpid on one pid), so let it finish
    manager = getattr(ex, "_executor_manager_thread", None)
    if manager is not None and manager.is_alive():
        manager.join(timeout=5)


def run_tasks(tasks: Sequence[VolumeTask], jobs: int = 1, progress: bool = True,
              executor: Executor | None = None) -> list[dict]:
    """:func:`iter_task_results` as a list (task order, so ``jobs``/``executor`` never change it)."""
    return list(iter_task_results(tasks, jobs=jobs, progress=progress, executor=executor))


class RowSpool:
    """Counts-table records (one dict per 2D image, see :func:`score_volume`) streamed to a Parquet
    file as they arrive, so the scoring loop holds one batch, not every record, in memory.

    :meth:`to_frame` reads the table back with the dtypes ``pandas.DataFrame.from_records`` gives
    the same records (int64 columns, float64 where a value is missing, a column that is missing
    everywhere as ``None`` objects), so results never depend on the spool.

    Args:
        folder: where the file ``<name>.parquet`` is written (removed by :meth:`close`).
        name: file name stem.
        types: arrow type name per column (``string``, ``int64``, ``bool``); other columns are
            float64, the columns of :data:`COUNT_COLUMNS` int64. Default: the counts records'.
        batch_rows: records held before a row group is written.
    """

    COUNTS_TYPES = {"subject": "string", "frame": "int64", "slice": "int64", "missing": "bool",
                    "ref_file": "string", "pred_file": "string", **{c: "int64" for c in COUNT_COLUMNS}}
    DISTANCE_TYPES = {"level": "string", "subject": "string", "frame": "int64", "slice": "int64",
                      "class": "string", "distance_status": "string"}

    def __init__(self, folder: str | Path, name: str = "counts", types: dict[str, str] | None = None,
                 batch_rows: int = 20_000):
        self.path = Path(folder) / f"{name}.parquet"
        self.types = dict(self.COUNTS_TYPES if types is None else types)
        self.batch_rows = batch_rows
        self._buf: list[dict] = []
        self._writer = None
        self._schema = None
        self.n_rows = 0
        self.n_groups = 0

    def _schema_for(self, rec: dict):
        import pyarrow as pa

        arrow = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "float64": pa.float64()}
        def kind(k: str) -> str:  # confusion counts of further classes (c44, c40, ... for LA = 4) are counts too
            return self.types.get(k) or ("int64" if re.fullmatch(r"c\d\d", k) else "float64")

        return pa.schema([(k, arrow[kind(k)]) for k in rec])

    def __len__(self) -> int:
        return self.n_rows + len(self._buf)

    def extend(self, records: list[dict]) -> None:
        self._buf.extend(records)
        if len(self._buf) >= self.batch_rows:
            self._flush()

    def _flush(self) -> int | None:
        """Write the buffered records as one row group; returns its index (None when nothing was buffered)."""
        if not self._buf:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            self._schema = self._schema_for(self._buf[0])
            self._writer = pq.ParquetWriter(self.path, self._schema)
        cols = {f.name: [r[f.name] for r in self._buf] for f in self._schema}
        self._writer.write_table(pa.table(cols, schema=self._schema), row_group_size=len(self._buf))
        self.n_rows += len(self._buf)
        self._buf = []
        self.n_groups += 1
        return self.n_groups - 1

    def finish(self) -> None:
        """Write what is buffered and close the file (it stays readable by :meth:`read_group`)."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def read_group(self, i: int, columns: list[str] | None = None) -> pd.DataFrame:
        """Row group ``i`` (after :meth:`finish`) as ``pandas.DataFrame.from_records`` gives its records
        (see :meth:`to_frame`); ``columns``: only those."""
        import pyarrow.parquet as pq

        table = pq.ParquetFile(self.path).read_row_group(i, columns=columns)
        return _records_frame(table)

    def to_frame(self) -> pd.DataFrame:
        """The whole counts table as a DataFrame (an empty one when no record came)."""
        self._flush()
        if self._writer is None:
            if self.n_groups:
                import pyarrow.parquet as pq

                return _records_frame(pq.read_table(self.path))
            return pd.DataFrame()
        import pyarrow.parquet as pq

        self._writer.close()
        self._writer = None
        return _records_frame(pq.read_table(self.path))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)


def _records_frame(table) -> pd.DataFrame:
    """A spool's Arrow table as ``pandas.DataFrame.from_records`` gives its records: a column that is
    None in every record stays None objects."""
    import pyarrow as pa

    all_null = [c for c in table.column_names if len(table) and table.column(c).null_count == len(table)]
    df = table.to_pandas()
    del table
    pa.default_memory_pool().release_unused()  # hand the table's buffers back to the system
    for c in all_null:  # a column that is None in every record: from_records keeps None objects
        df[c] = pd.Series([None] * len(df), dtype=object, index=df.index)
    return df


class CaseSpool:
    """The counts records and the distance records of the scored cases, streamed to two Parquet
    files (:class:`RowSpool`) in **aligned batches**: batch ``i`` of both files holds the records of
    the same whole cases (volumes), so the per-case table can be built batch by batch.

    Args:
        folder: where the files go.
        batch_rows: counts records (2D images) per batch, about (a batch ends after the case that
            reaches it). The records of one batch are held as Python dicts (a few KB per image with
            its distance records) until they are written, so this bounds the scoring loop's memory.
    """

    def __init__(self, folder: str | Path, batch_rows: int = 2_000):
        self.counts = RowSpool(folder, "counts", batch_rows=1 << 62)
        self.distances = RowSpool(folder, "distances", RowSpool.DISTANCE_TYPES, batch_rows=1 << 62)
        self.batch_rows = batch_rows
        self.batches: list[tuple[int | None, int | None]] = []

    def add(self, rows: list[dict], extra: list[dict]) -> None:
        """The records of one case (all images of one volume)."""
        self.counts.extend(rows)
        self.distances.extend(extra)
        if len(self.counts._buf) >= self.batch_rows:
            self._cut()

    def _cut(self) -> None:
        if self.counts._buf or self.distances._buf:
            self.batches.append((self.counts._flush(), self.distances._flush()))

    def finish(self) -> None:
        self._cut()
        self.counts.finish()
        self.distances.finish()

    def __len__(self) -> int:
        return len(self.counts)

    def iter_batches(self, count_columns: list[str] | None = None) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]:
        """(counts, distances or None) of each batch, after :meth:`finish`."""
        for ci, di in self.batches:
            counts = self.counts.read_group(ci, count_columns) if ci is not None else pd.DataFrame()
            yield counts, (self.distances.read_group(di) if di is not None else None)

    def distances_template(self) -> pd.DataFrame | None:
        """The distance table's columns with no rows (None when no case had distance records)."""
        first = next((di for _, di in self.batches if di is not None), None)
        return None if first is None else self.distances.read_group(first).iloc[:0]

    def close(self) -> None:
        self.counts.close()
        self.distances.close()


def _requested_structures(classes: Iterable[str] | None, ref_map: LabelMap,
                          space: dict[str, int]) -> list[str] | None:
    """The canonical names of the classes / regions asked for with ``classes`` (case-insensitive),
    in cardbench order (classes by value, then regions in the order asked), or None.

    Raises:
        ValueError: a name that is neither a class of the maps, a region of the reference's map,
            nor ``A+B`` of such classes.
    """
    if not classes:
        return None
    canon = {c.upper(): c for c in space}
    regions = {r.upper(): r for r in ref_map.regions}
    out_cls, out_reg, bad = [], [], []
    for raw in classes:
        u = str(raw).strip().upper()
        if u in canon:
            out_cls.append(canon[u])
        elif u in regions:
            out_reg.append(regions[u])
        elif "+" in u and all(part in canon for part in u.split("+")) and len(set(u.split("+"))) > 1:
            out_reg.append("+".join(canon[part] for part in u.split("+")))
        else:
            bad.append(str(raw))
    if bad:
        allowed = list(space) + list(ref_map.regions)
        raise ValueError(f"unknown classes {sorted(bad)}; use {', '.join(allowed)} or a region like LV+MY")
    return sorted(set(out_cls), key=space.__getitem__) + list(dict.fromkeys(out_reg))


def _check_asked_annotated(asked: list[str] | None, ref: Reference) -> None:
    """Refuse ``classes`` when the reference annotates none of them anywhere (by its card's
    ``classes`` or its ``annotations.csv``): every value would be excluded, a result of no values.
    A class among others that is annotated nowhere is reported as ``not_annotated``; a region
    counts as its classes.

    Raises:
        ValueError: one line naming the classes, the reference and the classes it does annotate.
    """
    if not asked:
        return
    if ref.classes is not None:
        have = set(ref.classes)
        how = "its card.yaml"
    elif ref.annotations is not None:
        have = set().union(*ref.annotations.values()) if ref.annotations else set()
        how = "its annotations.csv"
    else:
        return  # every class counts as annotated everywhere; absent ones are scored as absent
    nowhere = [name for name in asked
               if any(m not in have for m in (ref.label_map.regions.get(name) or tuple(name.split("+"))))]
    if len(nowhere) == len(asked):  # some classes annotated nowhere are reported as not_annotated
        raise ValueError(f"--classes {','.join(asked)}: the reference {ref.root} annotates "
                         f"{'it' if len(asked) == 1 else 'them'} in no case ({how}), so every value would be "
                         "excluded; score the classes it annotates "
                         f"({', '.join(sorted(have, key=lambda c: (c not in CLASSES, c))) or 'none'})")


def _resolve_classes(ref: Reference, counts: pd.DataFrame, classes: Iterable[str] | None,
                     pred_map: LabelMap, space: dict[str, int] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Decide which classes (and regions) are reported and which are not annotated by the reference.

    Order of precedence: ``classes`` argument, then the reference card's ``classes``; otherwise the
    reference label map's classes, where a class that no reference case contains is reported as
    not annotated (with a note) rather than scored as empty everywhere. The reference map's
    regions follow its classes (a region is not annotated where one of its classes is not).

    Returns:
        (classes to report, classes among them that are not annotated anywhere, notes).
    """
    notes: list[str] = []
    space = space or class_space(ref.label_map, pred_map)
    asked = _requested_structures(classes, ref.label_map, space)
    if asked is not None:
        return asked, [], notes
    regions = list(ref.label_map.regions)
    if ref.classes is not None:
        cl = list(ref.classes)
        return cl + [r for r in regions if set(ref.label_map.regions[r]) <= set(cl)], [], notes
    cl = list(ref.label_map.classes)
    nl = max(4, max(space.values()) + 1)
    absent = []
    for c in cl:
        k = space[c]
        if counts.empty or int(counts[[f"c{k}{p}" for p in range(nl)]].to_numpy().sum()) == 0:
            absent.append(c)
    if not absent or len(absent) == len(cl):
        return cl + regions, [], notes
    notes.append(f"class(es) {', '.join(absent)} appear in no reference mask: reported as not annotated "
                 f"(pass --classes {','.join(cl)} to score them as absent)")
    absent_regions = [r for r in regions if set(ref.label_map.regions[r]) & set(absent)]
    return cl + regions, absent + absent_regions, notes


def score(
    predictions: str | Path,
    reference: str | Path | Reference,
    *,
    protocol: str | Path | Protocol = "cardbench-v1",
    nsd_tolerance: "float | dict | None" = None,
    labels: str | LabelMap | None = None,
    reference_labels: str | LabelMap | None = None,
    classes: Iterable[str] | None = None,
    split: str | None = None,
    allow_missing: bool = False,
    affine_tol: float = DEFAULT_AFFINE_TOL,
    jobs: int = 1,
    progress: bool = True,
    executor: Executor | None = None,
    workdir: str | Path | None = None,
) -> ScoreResult:
    """Validate and score a submission against a reference.

    Args:
        predictions: submission folder or archive (.zip, .tar.gz) of NIfTI volumes or PNG masks.
        reference: reference folder (or a loaded :class:`Reference`).
        protocol: ``cardbench-v1`` (default), ``ankenbrand2021``, a protocol file (.yaml) or a
            :class:`Protocol`.
        nsd_tolerance: NSD tolerance tau in mm (a number, or class -> mm), replacing the
            protocol's (recorded in summary.json).
        labels: label map of the predictions (default: submission.yaml's ``label_map``, else
            ``cardbench``).
        reference_labels: label map of the reference (default: its card's, else ``cardbench``).
        classes: classes to score (default: see :func:`_resolve_classes`).
        split: score only reference subjects of this split (needs subjects.csv).
        allow_missing: score missing predictions as misses (status ``missing``, worst value).
        affine_tol: tolerance in mm on each affine element.
        jobs: worker processes (results are identical for any value).
        progress: show a progress bar on stderr.
        executor: a :class:`concurrent.futures.Executor` that runs the per-case work instead of
            ``jobs`` local processes, e.g. ``distributed.Client(...).get_executor()`` (see
            :func:`cardbench.benchmark.distributed.dask_executor`). Its workers read the inputs
            by path: the reference, the predictions and ``workdir`` must be on storage every
            worker sees. Results are identical to ``jobs=1``.
        workdir: folder where an archive is extracted (default: a temporary folder); on a
            cluster it must be shared storage.

    Returns:
        :class:`ScoreResult`.

    Raises:
        ValidationError: any validation problem; nothing is scored.
        SubmissionError, ReferenceError: the inputs cannot be opened at all.
        ValueError: unknown protocol, label map, split or class, an ``affine_tol`` that is not a
            finite number >= 0 (ProtocolError: invalid protocol file or tolerance).
    """
    proto = get_protocol(protocol)
    if nsd_tolerance is not None:
        proto = proto.with_nsd_tolerance(nsd_tolerance)
    import math

    if isinstance(affine_tol, bool) or not isinstance(affine_tol, (int, float)) or not math.isfinite(affine_tol) \
            or affine_tol < 0:  # nan or inf would turn the affine check off
        raise ValueError(f"affine_tol {affine_tol!r}: must be a finite number of mm >= 0")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    ref = reference if isinstance(reference, Reference) else load_reference(reference, reference_labels)
    with load_submission(predictions, workdir=workdir) as sub:
        problems = list(sub.problems)
        declared = sub.meta.get("label_map")
        if labels is None and declared is not None:
            labels = declared
        elif labels is not None and declared is not None and \
                get_label_map(labels).labels != get_label_map(declared).labels:
            problems.append(Problem(str(sub.meta_path), f"submission.yaml declares label_map {declared!r} but "
                                    f"--labels says {labels!r}", "remove one of the two or make them agree",
                                    "metadata"))
        try:
            pred_map = get_label_map(labels)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(str(e)) from e
        subjects = None
        if split is not None:
            if "split" not in ref.subjects.columns or ref.subjects.empty:
                raise ValueError(f"{ref.root}: --split {split} needs a subjects.csv with a split column")
            subjects = set(ref.subjects.index[ref.subjects["split"] == split])
            if not subjects:
                raise ValueError(f"{ref.root}: no subject in split '{split}' "
                                 f"(splits: {sorted(ref.subjects['split'].dropna().unique())})")
        # no subject in two splits; splits of a registered dataset match its frozen standard split
        problems.extend(reference_split_issues(
            ref.subjects, ref.name, ref.version, str(ref.root / "subjects.csv")))
        pairs, pp, notes = pair_cases(sub, ref, allow_missing=allow_missing, subjects=subjects)
        problems.extend(pp)
        groups: dict[tuple[str, int | None], list[CasePair]] = {}
        for p in pairs:
            groups.setdefault((p.key.subject, p.key.frame), []).append(p)
        # the class set comes from the label maps: LV, MY, RV keep 1, 2, 3; further classes (LA) follow
        space = class_space(ref.label_map, pred_map)
        asked = _requested_structures(classes, ref.label_map, space)
        _check_asked_annotated(asked, ref)
        structures = {c: (v,) for c, v in space.items()}
        for r in list(ref.label_map.regions) + [a for a in (asked or []) if a not in space]:
            structures[r] = ref.label_map.structure_values(r, space)
        default = set(space) == set(CLASSES) and len(structures) == 3
        surf_metrics, surf_params = surface_plan(proto, list(structures))
        tasks = [VolumeTask(s, f, ps, ref.label_map, pred_map, affine_tol, ref.spacing.get(s), bool(surf_metrics),
                            None if default else space, None if default else structures,
                            surf_metrics or DISTANCE_METRICS, surf_params)
                 for (s, f), ps in groups.items()]
        results = iter_task_results(tasks, jobs=jobs, progress=progress, executor=executor)
        hashes = {"reference": {}, "predictions": {}}
        import tempfile

        scored_cls: list[str] = []
        with tempfile.TemporaryDirectory(prefix="cardbench-rows-", dir=workdir) as spool_dir:
            # records go to Parquet as they arrive; the per-case table is then built batch by batch
            # into a PerCaseStore (a Parquet file), so memory does not grow with the number of cases
            spool = CaseSpool(spool_dir)
            try:
                for r in results:  # in task order, as they arrive
                    problems.extend(r["problems"])
                    if not problems:
                        spool.add(r["rows"], r.get("extra", []))
                    notes.extend(r.get("notes", []))
                    for k, root in (("reference", ref.root), ("predictions", sub.root)):
                        # kept by path relative to its root (one copy of each path string, not two)
                        hashes[k].update({_rel(f, root): h for f, h in r["hashes"][k].items()})
                if any((p.kind == "unreadable" and "folder cannot be read" in p.problem)
                       or "symbolic link to a folder" in p.problem for p in sub.problems):
                    # the unreadable or linked (not followed) folder is the cause of the missing files
                    problems = [p for p in problems if p.kind != "missing"]
                refused = {Path(p.file).name for p in sub.problems if p.kind in ("outside", "not_regular")}
                if refused:  # a refused link is its case's one problem, not also a "missing prediction"
                    problems = [p for p in problems if not (p.kind == "missing" and Path(p.file).name in refused)]
                if problems:  # paths inside an extracted archive are named archive.zip:inner/path
                    raise ValidationError([sub.display_problem(p) for p in problems])
                spool.finish()
                totals = _count_totals(spool)
                classes_scored, not_ann, cnotes = _resolve_classes(ref, totals, classes, pred_map, space)
                notes.extend(cnotes)
                annotated = ref.annotated_classes
                region_members = {r: tuple(r.split("+")) for r in classes_scored if r not in space}
                region_members.update(ref.label_map.regions)
                if ref.annotations is not None and region_members:
                    def annotated(subject, frame, _f=ref.annotated_classes, _r=region_members):
                        # a region is annotated where all its classes are
                        a = _f(subject, frame)
                        return None if a is None else frozenset(a | {r for r, ms in _r.items() if set(ms) <= a})
                scored_cls = [c for c in classes_scored if c in space]
                writer = PerCaseWriter(folder=workdir)
                vox: dict = {}
                # a batch without distance records (e.g. only missing predictions) still gets the distance
                # columns and their policy (worst value for a miss), as when the table is built at once
                no_extra = spool.distances_template()
                for counts, extra_df in spool.iter_batches():
                    if counts.empty:
                        continue
                    if extra_df is None:
                        extra_df = no_extra
                    for c in ("ref_file", "pred_file"):
                        counts[c] = counts[c].map(lambda s, root=(ref.root if c == "ref_file" else sub.root):
                                                  _rel(s, root))
                    writer.add(per_case_table(counts, classes_scored, proto, ref.split_of, ref.phase_of,
                                              annotated, not_ann, extra=extra_df,
                                              class_values=None if default else structures))
                    vox.update(_volume_voxels(counts, scored_cls, space))
                per_case = writer.finish()
                from cardbench._util import release_memory

                release_memory()
            finally:
                spool.close()
        warnings = label_map_warnings(totals, scored_cls, not_ann, pred_map, ref.label_map, space)
        warnings += _partial_annotation_warnings(vox, ref)
        warnings += _unlisted_annotation_rows(ref)
        meta_hashes = {}
        from cardbench._util import sha256_file
        for m in ref.metadata_files:
            meta_hashes[_rel(str(m), ref.root)] = sha256_file(m)
        inputs = {
            "reference": dict(sorted(hashes.pop("reference").items())),
            "reference_metadata": meta_hashes,
            "predictions": dict(sorted(hashes.pop("predictions").items())),
        }
        if sub.meta_path is not None:
            inputs["submission_yaml"] = {sub.meta_path.name: sha256_file(sub.meta_path)}
        if sub.source.is_file():
            inputs["archive"] = {sub.source.name: sha256_file(sub.source)}
        if sub.ignored:
            notes.append(f"{len(sub.ignored)} file(s) in the submission are not masks and were ignored: "
                         + ", ".join(_rel(str(p), sub.root) for p in sub.ignored[:5]))
        submission = {"name": sub.name, "path": str(sub.source), **{k: v for k, v in sub.meta.items() if k != "name"}}
        return build_result(
            per_case, proto, dataset={"name": ref.name, "version": ref.version, "path": str(ref.root),
                                      "label_map": ref.label_map.to_dict()},
            submission=submission, label_map=pred_map, inputs=inputs, notes=collapse_notes(notes), split=split,
            extra={"warnings": warnings},
        )


def _unlisted_annotation_rows(ref: Reference) -> list[str]:
    """A warning when ``annotations.csv`` exists but has no row for some (subject, frame) of the reference:
    nothing is scored there (every class ``not_annotated``), which is documented but easy to do by accident."""
    if ref.annotations is None:
        return []
    volumes = sorted({(k.subject, k.frame) for k in ref.files}, key=lambda t: (t[0], -1 if t[1] is None else t[1]))
    unlisted = [v for v in volumes if v not in ref.annotations]
    if not unlisted:
        return []
    shown = ", ".join(f"{s} frame {'-' if f is None else f}" for s, f in unlisted[:5])
    more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
    return [f"{ref.root / 'annotations.csv'}: no row for {len(unlisted)} of {len(volumes)} reference volume(s) "
            f"({shown}{more}); nothing is scored there (not_annotated). Fix: add a row per (subject, frame) with "
            "its annotated classes (a blank classes cell states that none is)"]


def _partial_annotation(counts: pd.DataFrame, ref: Reference, classes: list[str],
                        space: "dict[str, int] | None" = None) -> list[str]:
    """Warnings for classes drawn in some frames of a subject and absent from frames where others are drawn
    (see :func:`cardbench.datasets.reference.partial_annotation_warnings`); frames declared in annotations.csv
    are trusted."""
    return _partial_annotation_warnings(_volume_voxels(counts, classes, space), ref)


def _partial_annotation_warnings(vox: dict, ref: Reference) -> list[str]:
    """:func:`_partial_annotation` from the reference voxels per volume (:func:`_volume_voxels`)."""
    from cardbench.datasets.reference import partial_annotation_warnings

    if not vox:
        return []
    return partial_annotation_warnings(vox, ref.annotations, str(ref.root / "annotations.csv"))


def _volume_voxels(counts: pd.DataFrame, classes: list[str], space: "dict[str, int] | None" = None) -> dict:
    """(subject, frame) -> class -> reference voxels of that volume, from a counts table whose
    volumes are whole (a batch of :class:`CaseSpool`); empty without frames."""
    if counts.empty or "frame" not in counts.columns:
        return {}
    from cardbench.benchmark.casetable import n_labels_of

    space = space if space is not None else {c: i + 1 for i, c in enumerate(CLASSES)}
    n = n_labels_of(counts)
    vox: dict = {}
    for (s, f), g in counts.groupby(["subject", "frame"], sort=False, dropna=False):
        f = None if pd.isna(f) else int(f)
        d = {}
        for c in classes:
            lab = space[c]
            cols = [f"c{lab}{p}" for p in range(n) if f"c{lab}{p}" in g.columns]
            d[c] = int(g[cols].to_numpy().sum()) if cols else 0
        vox[(str(s), f)] = d
    return vox


def _count_totals(spool: CaseSpool) -> pd.DataFrame:
    """The confusion-count columns (``c<ref><pred>``) of every record of ``spool``, summed: one row
    (none when no record came), the input of the class decisions and label-map checks, which use
    only these sums."""
    schema = spool.counts._schema
    if schema is None:
        return pd.DataFrame()
    cols = [f.name for f in schema if re.fullmatch(r"c\d\d", f.name)]
    tot = dict.fromkeys(cols, 0)
    for counts, _ in spool.iter_batches(cols):
        for c in cols:
            tot[c] += int(counts[c].to_numpy(np.int64).sum())
    return pd.DataFrame([tot])


def _rel(path: str, root: Path) -> str:
    if not path:
        return path
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _class_order(names: list[str]) -> list[str]:
    """LV, MY, RV first (cardbench order), then further classes and regions as they appear."""
    return sorted(names, key=lambda c: (CLASSES.index(c) if c in CLASSES else len(CLASSES), names.index(c)))


def status_counts(per_case: "pd.DataFrame | PerCaseStore") -> dict:
    """level -> class -> status -> count, over the per-case table (or its store, one piece at a time)."""
    out: dict = {}
    if isinstance(per_case, PerCaseStore):
        parts = ((lv, c, per_case.read(["status"], level=lv, cls=c)["status"]) for lv, c, _, _ in per_case.pieces)
    else:
        parts = ((lv, c, g["status"]) for (lv, c), g in per_case.groupby(["level", "class"], sort=False))
    for level, cls, st in parts:
        vc = st.value_counts()
        out.setdefault(level, {})[cls] = {s: int(vc.get(s, 0)) for s in STATUSES if vc.get(s, 0)}
    return out


def _level_rows(per_case: "pd.DataFrame | PerCaseStore", level: str, columns: list[str]) -> pd.DataFrame:
    """``columns`` (those the table has) of the rows at ``level``."""
    if isinstance(per_case, PerCaseStore):
        return per_case.read(columns, level=level)
    return per_case.loc[per_case["level"] == level, [c for c in columns if c in per_case.columns]]


def _table_counts(per_case: "pd.DataFrame | PerCaseStore", level: str) -> dict:
    """Subjects at the protocol's ``level``, distinct volumes (subject, frame) and distinct 2D images
    (subject, frame, slice) of a per-case table, and its status counts."""
    if isinstance(per_case, PerCaseStore) and per_case.distinct is not None:  # counted by its writer
        d = per_case.distinct
        return {"subjects": d["subjects"].get(level, 0), "volumes": d["volumes"], "images": d["images"],
                "status": status_counts(per_case)}
    def distinct(lv: str, cols: list[str]) -> int:
        return int(_level_rows(per_case, lv, cols).drop_duplicates().shape[0])

    return {"subjects": distinct(level, ["subject"]), "volumes": distinct("volume", ["subject", "frame"]),
            "images": distinct("image", ["subject", "frame", "slice"]), "status": status_counts(per_case)}


def _negative_reference_ef_notes(clinical: pd.DataFrame) -> list[str]:
    """Notes for subjects whose *reference* ejection fraction is negative (ESV above EDV), which no
    heart has: most often ED and ES swapped in the reference's ``subjects.csv``. The values are
    scored as given; the note says where to look."""
    if clinical is None or clinical.empty or not {"index", "ref", "subject"} <= set(clinical.columns):
        return []
    notes = []
    for ix in ("LVEF", "RVEF"):
        rows = clinical[(clinical["index"] == ix) & (pd.to_numeric(clinical["ref"], errors="coerce") < 0)]
        if len(rows):
            subj = ", ".join(map(str, rows["subject"].head(5))) + (" ..." if len(rows) > 5 else "")
            notes.append(f"{len(rows)} subject(s) with a negative reference {ix} (ESV above EDV): {subj}; "
                         "check ed_frame/es_frame in the reference's subjects.csv (ED and ES swapped?)")
    return notes


def build_result(per_case: "pd.DataFrame | PerCaseStore", protocol: Protocol, *, dataset: dict, submission: dict,
                 label_map: LabelMap | None, inputs: dict, notes: list[str] | None = None,
                 split: str | None = None, extra: dict | None = None) -> ScoreResult:
    """Aggregate a per-case table (a DataFrame, or a :class:`~cardbench.benchmark.casestore.PerCaseStore`
    read one class at a time) under ``protocol`` and assemble the summary.

    Used by every input path (files, confusion tables), so the summary has one schema.
    """
    from cardbench._util import release_memory

    aggregates = aggregate(per_case, protocol)
    release_memory()  # each phase gives its memory back before the next (a large cohort's peak)
    per_subject = per_subject_table(per_case, protocol)
    classes = (per_case.classes if isinstance(per_case, PerCaseStore)
               else per_case["class"].unique().tolist()) if len(per_case) else []
    summary = {
        "cardbench_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "protocol": protocol.to_dict(),
        "dataset": dataset,
        "split": split,
        "submission": submission,
        "label_map": label_map.to_dict() if label_map is not None else None,
        "classes": _class_order(classes),
        "counts": _table_counts(per_case, protocol.level),
        "results": aggregates.to_dict(orient="records"),
        "inputs": inputs,
        "notes": list(notes or []),
    }
    # clinical indices (EDV, ESV, SV, EF, LV mass) and their agreement: cardbench.benchmark.clinical
    # only the volume-level columns the clinical indices use are read (from a store: one small table)
    volumes = _level_rows(per_case, "volume", ["level", "subject", "split", "frame", "phase", "class", "status",
                                               "ref_ml", "pred_ml"])
    clin, clin_agree, summary["clinical"] = clinical_summary(volumes, protocol.bootstrap or 2000, protocol.seed)
    del volumes
    summary["notes"].extend(_negative_reference_ef_notes(clin))
    release_memory()
    extra_tables = {"clinical": clin, "clinical_agreement": clin_agree} if summary["clinical"]["available"] else {}
    if extra:
        summary.update(extra)
    return ScoreResult(summary=summary, per_case=per_case, per_subject=per_subject, aggregates=aggregates,
                       extra_tables=extra_tables)
