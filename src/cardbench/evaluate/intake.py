"""Submission intake: a file-based queue under the leaderboard folder, scored one at a time.

``cardbench dashboard --allow-submissions`` adds a Submit page that calls :func:`submit` and then
:func:`process_queue`. Layout::

    <leaderboard>/.intake/
      .lock                      advisory lock (fcntl): one scorer at a time, across processes
      queue/<id>/request.json    benchmark, name, kind, file names, submitted (UTC)
      queue/<id>/<files>         the upload (predictions archive, or model.onnx + model.yaml)
      done/<id>.json             the outcome: status done | refused, message, entry, benchmark

``id`` is ``<UTC time>-<random>``, so the queue is processed oldest first. What is accepted:

- a benchmark whose images are public: a prediction archive (``.zip``/``.tar.gz``, the layout
  ``cardbench score`` takes), scored against the benchmark's reference folder;
- a private benchmark (``per_case: private``): an ONNX model with its model.yaml, run by
  :func:`cardbench.evaluate.evaluate_model` (validated first; limits as the command line).

Limits (documented defaults, :class:`IntakeLimits`): the upload size (100 MiB), submissions per
name per UTC day (3, refused ones included), and the model limits of :class:`Limits`. Every refusal
is one line. The reference folder of a benchmark is the ``reference_path`` recorded by its entries
(:func:`benchmark_reference`); a benchmark without one cannot take submissions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cardbench._util import atomic_write_text
from cardbench.evaluate.modelcard import Limits

INTAKE = ".intake"
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


class IntakeError(ValueError):
    """A submission is refused before it is queued; one line."""


@dataclass(frozen=True)
class IntakeLimits:
    """Limits of the Submit page.

    Attributes:
        max_upload_bytes: total size of one submission's files (default 100 MiB).
        per_name_per_day: submissions per entry name per UTC day, refused ones included (default 3).
        model: :class:`Limits` for submitted models.
    """

    max_upload_bytes: int = 100 * 1024 * 1024
    per_name_per_day: int = 3
    model: Limits = Limits()


def _dirs(root) -> tuple[Path, Path, Path]:
    base = Path(root) / INTAKE
    return base, base / "queue", base / "done"


def benchmark_reference(lb, bench: str) -> Path | None:
    """The reference folder of ``bench`` on this machine: the newest entry's ``reference_path`` that exists."""
    best = None
    for n in lb.entry_names(bench):
        m = lb.entry(bench, n).meta
        p = m.get("reference_path")
        if p and Path(p).is_dir() and (best is None or str(m.get("added", "")) > best[0]):
            best = (str(m.get("added", "")), Path(p))
    return best[1] if best else None


def _today_count(root, name: str) -> int:
    _, queue, done = _dirs(root)
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
    n = 0
    for f in list(queue.glob(f"{today}*/request.json")) + list(done.glob(f"{today}*.json")):
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if d.get("name") == name:
            n += 1
    return n


def submit(lb, bench: str, name: str, files: dict[str, bytes], limits: IntakeLimits = IntakeLimits()) -> str:
    """Queue a submission; returns its id.

    Args:
        lb: the :class:`~cardbench.benchmark.leaderboard.Leaderboard`.
        bench: benchmark id.
        name: entry name (see :func:`~cardbench.benchmark.leaderboard.check_name`).
        files: uploaded file name -> bytes: one archive, or ``*.onnx`` and ``model.yaml``.
        limits: :class:`IntakeLimits`.

    Raises:
        IntakeError: invalid name, unknown benchmark, wrong kind of upload for the benchmark, over the
            size or the daily limit, the name already on the benchmark.
    """
    from cardbench.benchmark.leaderboard import LeaderboardError, check_name
    from cardbench.benchmark.private import is_private

    try:
        check_name(name)
        lb.benchmark(bench)
    except LeaderboardError as e:
        raise IntakeError(str(e)) from None
    if name in lb.entry_names(bench):
        raise IntakeError(f"entry '{name}' already exists on {bench}; choose another name")
    size = sum(len(b) for b in files.values())
    if size > limits.max_upload_bytes:
        raise IntakeError(f"upload of {size / 2**20:.1f} MiB is over the limit of "
                          f"{limits.max_upload_bytes / 2**20:.0f} MiB")
    safe = {}
    for fname, data in files.items():
        base = str(fname)
        if not base or base.startswith(".") or "/" in base or "\\" in base or len(base) > 200:
            raise IntakeError(f"{fname!r}: not a plain file name; upload files named like pred.zip, model.onnx")
        safe[base] = data
    private = is_private(lb, bench)
    onnx = [f for f in safe if f.endswith(".onnx")]
    cards = [f for f in safe if f.endswith((".yaml", ".yml"))]
    archives = [f for f in safe if f.endswith(ARCHIVE_SUFFIXES)]
    if private:
        if len(onnx) != 1 or len(cards) != 1 or len(safe) != 2:
            raise IntakeError(f"{bench} is private (its images are not shared): upload one .onnx model and its "
                              "model.yaml")
        kind = "model"
    else:
        if len(archives) != 1 or len(safe) != 1:
            raise IntakeError(f"{bench}: upload one prediction archive (.zip or .tar.gz of the prediction folder)")
        kind = "predictions"
        if benchmark_reference(lb, bench) is None:
            raise IntakeError(f"{bench}: no reference folder is known on this machine; this benchmark takes no "
                              "uploads")
    n = _today_count(lb.root, name)
    if n >= limits.per_name_per_day:
        raise IntakeError(f"'{name}' has made {n} submissions today (UTC), the limit is {limits.per_name_per_day} "
                          "per day; try again tomorrow")
    _, queue, _ = _dirs(lb.root)
    now = _dt.datetime.now(_dt.timezone.utc)
    sid = now.strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(4)
    tmp = queue / f".{sid}.tmp"
    tmp.mkdir(parents=True)
    for f, data in safe.items():
        (tmp / f).write_bytes(data)
    atomic_write_text(tmp / "request.json", json.dumps(
        {"id": sid, "benchmark": bench, "name": name, "kind": kind, "files": sorted(safe),
         "submitted": now.isoformat(timespec="seconds")}, indent=1))
    os.replace(tmp, queue / sid)
    return sid


def status(root, sid: str) -> dict:
    """``{"status": "queued" | "done" | "refused" | "unknown", "message": ..., ...}`` of a submission."""
    _, queue, done = _dirs(root)
    f = done / f"{sid}.json"
    if f.is_file():
        return json.loads(f.read_text(encoding="utf-8"))
    if (queue / sid / "request.json").is_file():
        return {"id": sid, "status": "queued", "message": "waiting to be scored"}
    return {"id": sid, "status": "unknown", "message": "no such submission"}




@contextlib.contextmanager
def _try_lock(base: Path):
    """The leaderboard's non-blocking lock on ``base/.lock`` (one scorer at a time)."""
    from cardbench.benchmark.leaderboard.folder import _try_locked

    base.mkdir(parents=True, exist_ok=True)
    with _try_locked(base) as got:
        yield got


def _score_one(lb, req: dict, folder: Path, limits: IntakeLimits) -> dict:
    from cardbench.benchmark import SubmissionError, ValidationError, score
    from cardbench.benchmark.leaderboard import LeaderboardError, benchmark_id
    from cardbench.datasets.reference import ReferenceError
    from cardbench.evaluate import EvaluationError, ModelCardError, evaluate_model, load_model_card
    from cardbench.evaluate.runners import ModelRunError

    bench = req["benchmark"]
    info = lb.benchmark(bench)
    split = None if info.split == "all" else info.split
    proto = info.protocol.get("name", "cardbench-v1")
    try:
        if req["kind"] == "model":
            ref = benchmark_reference(lb, bench)
            if ref is None:
                raise EvaluationError(f"{bench}: no reference folder is known on this machine")
            onnx = next(f for f in req["files"] if f.endswith(".onnx"))
            card_f = next(f for f in req["files"] if f.endswith((".yaml", ".yml")))
            card = load_model_card(folder / card_f)
            result = evaluate_model(folder / onnx, ref, card, split=split, protocol=proto, limits=limits.model,
                                    name=req["name"]).result
        else:
            ref = benchmark_reference(lb, bench)
            result = score(folder / req["files"][0], ref, protocol=proto, split=split, progress=False)
        if benchmark_id(result.summary) != bench:
            return {"status": "refused", "message": f"the upload scores as benchmark {benchmark_id(result.summary)}, "
                                                    f"not {bench}"}
        entry = lb.add(result, req["name"], source="dashboard submission")
        from cardbench.benchmark.leaderboard import LeaderboardError as _LE  # noqa: F401

        head = {}
        try:
            r = lb.ranked(bench, "dice")
            head = {"rank": int(r.loc[r["entry"] == entry.name, "rank"].iloc[0]), "of": len(r),
                    "ranked_by": r.attrs["rank_column"]}
        except (LeaderboardError, IndexError, ValueError, TypeError):
            pass
        return {"status": "done", "message": f"scored and added as '{entry.name}'", "entry": entry.name, **head}
    except ValidationError as e:
        probs = [str(p) for p in e.problems]
        return {"status": "refused", "message": f"{len(probs)} problem(s)", "problems": probs[:50]}
    except (ModelCardError, ModelRunError, EvaluationError, SubmissionError, ReferenceError, LeaderboardError,
            ValueError, FileNotFoundError) as e:
        return {"status": "refused", "message": str(e).replace(str(folder) + os.sep, "")}


def process_queue(lb, limits: IntakeLimits = IntakeLimits(), max_items: int | None = None) -> list[str]:
    """Score queued submissions, oldest first, one at a time; returns the ids processed.

    Does nothing (returns ``[]``) while another process holds the intake lock: its scorer will take
    the rest of the queue.
    """
    base, queue, done = _dirs(lb.root)
    processed: list[str] = []
    with _try_lock(base) as got:
        if not got:
            return processed
        done.mkdir(parents=True, exist_ok=True)
        while max_items is None or len(processed) < max_items:
            items = sorted(p for p in queue.iterdir() if p.is_dir() and not p.name.startswith(".")) \
                if queue.is_dir() else []
            if not items:
                break
            folder = items[0]
            try:
                req = json.loads((folder / "request.json").read_text(encoding="utf-8"))
                out = _score_one(lb, req, folder, limits)
            except (OSError, ValueError, KeyError) as e:
                req, out = {"id": folder.name}, {"status": "refused", "message": f"unreadable request ({e})"}
            out = {"id": folder.name, "benchmark": req.get("benchmark"), "name": req.get("name"),
                   "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **out}
            atomic_write_text(done / f"{folder.name}.json", json.dumps(out, indent=1))
            shutil.rmtree(folder, ignore_errors=True)
            processed.append(folder.name)
    return processed
