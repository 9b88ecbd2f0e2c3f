"""Reading a submission: a folder, or a ``.zip`` / ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of one.

A submission holds one prediction file per reference case, named like the reference (see
:mod:`cardbench.datasets.naming`; sub-folders do not matter), and an optional ``submission.yaml``::

    name: my-unet            # leaderboard name
    team: Lab X
    method: U-Net, ResNet34 encoder, ImageNet init, fine-tuned on 7T ED/ES frames
    training_data: kaggle-dsb-ukbb 5 % confidence set + cmr-7t esed subset
    url: https://doi.org/...
    label_map: cardbench     # or acdc, mnms, or a mapping {background: 0, LV: 1, MY: 2, RV: 3}

Archives are extracted into a temporary folder with path-traversal protection.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cardbench._yamlsafe import _load_small_yaml, _YamlRefused
from cardbench.benchmark.validation import Problem
from cardbench.datasets.naming import CaseKey, mask_format, parse_case_name

_META_NAMES = ("submission.yaml", "submission.yml")
_ALLOWED_META_KEYS = {"name", "label", "team", "method", "training_data", "url", "label_map", "description",
                      "authors", "contact", "date", "model", "config", "license", "paper", "notes", "checkpoint",
                      "cardbench_version", "dataset", "split"}


class SubmissionError(ValueError):
    """The submission path cannot be opened at all (missing, unsupported archive, unsafe archive)."""


@dataclass
class Submission:
    """A submission as listed on disk (files are not read yet).

    Attributes:
        source: the path the user gave (folder or archive).
        root: the folder holding the files (a temporary folder for archives).
        files: case key -> files (more than one: duplicate, reported by validation).
        meta: parsed submission.yaml (empty when absent).
        meta_path: the submission.yaml file, if any.
        ignored: files that are not masks or metadata (listed, not scored).
        problems: problems found while listing (bad names, bad submission.yaml).
    """

    source: Path
    root: Path
    files: dict[CaseKey, list[Path]]
    meta: dict = field(default_factory=dict)
    meta_path: Path | None = None
    ignored: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    _tmp: str | None = None

    @property
    def name(self) -> str:
        """Leaderboard name: submission.yaml's ``name`` or the folder/archive name."""
        if self.meta.get("name"):
            return str(self.meta["name"])
        n = self.source.name
        for suf in (".tar.gz", ".tgz", ".zip", ".tar"):
            if n.lower().endswith(suf):
                return n[: -len(suf)]
        return n

    def display(self, text: str) -> str:
        """``text`` with paths inside the temporary extraction folder named as the user knows them,
        ``archive.zip:inner/path`` (the temporary folder is deleted once the submission is closed)."""
        if not self._tmp:
            return text
        return text.replace(self._tmp.rstrip("/") + "/", f"{self.source}:").replace(self._tmp, f"{self.source}:")

    def display_problem(self, p: Problem) -> Problem:
        """:meth:`display` applied to a problem's file and text."""
        if not self._tmp:
            return p
        return Problem(self.display(p.file), self.display(p.problem), p.fix, p.kind)

    def close(self) -> None:
        """Delete the temporary extraction folder (archives only)."""
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "Submission":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _limit_error(archive: Path, what: str, field: str, value: int) -> SubmissionError:
    from cardbench.limits import Limits

    return SubmissionError(f"{archive}: {what}; nothing was extracted or scored. Fix: split the submission, "
                           f"or raise the limit with {Limits.env_name(field)} (now {value})")


def _copy_limited(src, dst: Path, declared: int, budget: list[int], archive: Path, member: str,
                  limits) -> None:
    """Copy one archive member to ``dst`` in 1 MiB chunks, stopping as soon as it writes more than its
    header declared or the archive's total budget (``budget[0]`` bytes left) runs out."""
    written = 0
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            written += len(chunk)
            if written > declared:
                raise SubmissionError(f"{archive}: entry '{member}' holds more data than its header declares "
                                      f"({declared} bytes); the archive is corrupt or crafted. Fix: re-create it")
            if written > budget[0]:
                raise _limit_error(archive, "uncompressed size exceeds the limit of "
                                   f"{limits.max_archive_bytes} bytes", "max_archive_bytes",
                                   limits.max_archive_bytes)
            out.write(chunk)
    budget[0] -= written


def _safe_target(dest: Path, name: str, archive: Path) -> Path:
    p = Path(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or (p.parts and ":" in p.parts[0]):
        raise SubmissionError(f"{archive}: unsafe path '{name}' in archive; "
                              "re-create it with relative paths only")
    return dest / p


def _extract(archive: Path, dest: Path, limits=None) -> None:
    """Extract ``archive`` into ``dest`` within ``limits`` (default :func:`cardbench.limits.get_limits`).

    Sizes, entry count and compression ratio are checked from the headers before anything is written
    and enforced again while copying (a header may lie). Only plain files and folders are extracted.

    Raises:
        SubmissionError: corrupt or unsafe archive, two entries of one name, or a limit exceeded.
    """
    from cardbench.limits import get_limits

    lim = limits or get_limits()
    name = archive.name.lower()
    budget = [lim.max_archive_bytes]
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > lim.max_archive_entries:
                    raise _limit_error(archive, f"{len(infos)} entries exceed the limit of "
                                       f"{lim.max_archive_entries}", "max_archive_entries", lim.max_archive_entries)
                seen: set[str] = set()
                total = 0
                for info in infos:
                    _safe_target(dest, info.filename, archive)
                    key = info.filename.replace("\\", "/").rstrip("/")
                    if key in seen:
                        raise SubmissionError(f"{archive}: two entries named '{info.filename}'; which one is the "
                                              "prediction is ambiguous. Fix: re-create the archive with one "
                                              "file per name")
                    seen.add(key)
                    total += info.file_size
                    if info.file_size > lim.max_compression_ratio * max(info.compress_size, 1) and \
                            info.file_size > (1 << 20):
                        raise _limit_error(archive, f"entry '{info.filename}' expands {info.compress_size} "
                                           f"bytes to {info.file_size} (ratio above "
                                           f"{lim.max_compression_ratio}: a compression bomb)",
                                           "max_compression_ratio", lim.max_compression_ratio)
                if total > lim.max_archive_bytes:
                    raise _limit_error(archive, f"uncompressed size {total} bytes (declared by its headers) "
                                       f"exceeds the limit of {lim.max_archive_bytes} bytes",
                                       "max_archive_bytes", lim.max_archive_bytes)
                for info in infos:
                    target = _safe_target(dest, info.filename, archive)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src:
                        _copy_limited(src, target, info.file_size, budget, archive, info.filename, lim)
        else:
            with tarfile.open(archive) as tf:
                members = []
                total = 0
                seen = set()
                for m in tf:  # streams through the headers; stops at the first limit
                    if len(members) >= lim.max_archive_entries:
                        raise _limit_error(archive, f"more than {lim.max_archive_entries} entries",
                                           "max_archive_entries", lim.max_archive_entries)
                    if m.issym() or m.islnk() or not (m.isfile() or m.isdir()):
                        raise SubmissionError(f"{archive}: unsafe member '{m.name}' (absolute, '..', link or "
                                              "device); re-create the archive with plain files and relative paths")
                    _safe_target(dest, m.name, archive)
                    key = m.name.rstrip("/")
                    if m.isfile() and key in seen:
                        raise SubmissionError(f"{archive}: two entries named '{m.name}'; which one is the "
                                              "prediction is ambiguous. Fix: re-create the archive with one "
                                              "file per name")
                    seen.add(key)
                    total += m.size
                    if total > lim.max_archive_bytes:
                        raise _limit_error(archive, f"uncompressed size (declared by its headers) exceeds the "
                                           f"limit of {lim.max_archive_bytes} bytes", "max_archive_bytes",
                                           lim.max_archive_bytes)
                    members.append(m)
                packed = max(archive.stat().st_size, 1)
                if total > (1 << 20) and total > lim.max_compression_ratio * packed:
                    raise _limit_error(archive, f"expands {packed} bytes to {total} (ratio above "
                                       f"{lim.max_compression_ratio}: a compression bomb)",
                                       "max_compression_ratio", lim.max_compression_ratio)
                for m in members:
                    target = _safe_target(dest, m.name, archive)
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    if src is None:
                        continue
                    with src:
                        _copy_limited(src, target, m.size, budget, archive, m.name, lim)
    except SubmissionError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, OSError, NotImplementedError,
            RuntimeError, ValueError) as e:
        import errno

        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise SubmissionError(f"{archive}: no space left on the temporary disk while extracting; nothing "
                                  "was scored. Fix: free space or set TMPDIR to a larger disk") from e
        raise SubmissionError(f"{archive}: cannot extract archive ({e}); check that it is complete "
                              "(re-download or re-create it)") from e


def _read_meta(path: Path, problems: list[Problem], display: str | None = None, limits=None) -> dict:
    from cardbench.limits import get_limits

    lim = limits or get_limits()
    shown = display or str(path)

    def refuse(what: str, fix: str) -> dict:
        problems.append(Problem(shown, what, fix, "metadata"))
        return {}

    try:
        meta = _load_small_yaml(path, lim) or {}
    except _YamlRefused as e:
        return refuse(e.what, e.fix)
    if not isinstance(meta, dict):
        return refuse("must be a mapping of keys (name, team, method, ...)",
                      "see docs/scoring.md, submission.yaml")
    unknown = sorted(set(map(str, meta)) - _ALLOWED_META_KEYS)
    if unknown:
        problems.append(Problem(shown, f"unknown keys {unknown}",
                                f"use only {sorted(_ALLOWED_META_KEYS)}", "metadata"))
    for key in ("name", "label", "team", "method"):  # text shown on the leaderboard: a list is no name
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            problems.append(Problem(shown, f"{key} is {type(v).__name__} {str(v)[:40]!r}, not text",
                                    f"write {key} as one line of text, quoted if it looks like a number or a "
                                    f"list ({key}: \"...\")", "metadata"))
            meta.pop(key)
    return meta


def _label_map_inside(meta: dict, root: Path, shown: str, problems: list[Problem], limits=None) -> None:
    """Check submission.yaml's ``label_map``: a built-in name and an inline mapping are kept; a file
    name is read only when it is a regular file inside the submission (``root``), at most
    ``max_meta_bytes``, holding a YAML mapping, which then replaces the name in ``meta``. Anything
    else (an absolute path, ``..``, a device, a link leaving the submission) is a problem and the key
    is dropped: a stranger's submission never makes cardbench open a file outside it."""
    import stat

    from cardbench.labelmaps import BUILTIN
    from cardbench.limits import get_limits

    spec = meta.get("label_map")
    fix = (f"give a built-in name ({', '.join(BUILTIN)}), a mapping (label_map: {{background: 0, LV: 1}}) or "
           "the name of a YAML file inside the submission")

    def refuse(what: str, fix: str = fix) -> None:
        problems.append(Problem(shown, f"label_map {str(spec)[:80]!r}: {what}", fix, "metadata"))
        meta.pop("label_map", None)

    if isinstance(spec, dict):  # an inline mapping: checked here, so its problem names submission.yaml
        return _check_label_map_mapping(spec, refuse)
    if spec is None or (isinstance(spec, str) and spec.lower() in BUILTIN):
        return
    lim = limits or get_limits()

    if not isinstance(spec, str) or not spec.strip():
        return refuse("not a name, a mapping or a file name")
    rel = Path(spec)
    if rel.is_absolute() or ".." in rel.parts:
        return refuse("a path outside the submission; it was not read")
    path = root / rel
    real = root.resolve()
    try:
        target = path.resolve()
        if target != real and real not in target.parents:
            return refuse("leads outside the submission; it was not read")
        st = os.stat(target)
    except (OSError, RuntimeError):
        return refuse("no such file in the submission")
    if not stat.S_ISREG(st.st_mode):
        return refuse("not a regular file; it was not read")
    try:
        data = _load_small_yaml(target, lim, noun="a label map file",
                                doc="docs/extending.md, Adding a label map")
    except _YamlRefused as e:
        return refuse(e.what, e.fix)  # the fix for what is wrong in the file (a tag: remove it)
    if not isinstance(data, dict):
        return refuse("must be a YAML mapping like {name: x, labels: {background: 0, LV: 1}}")
    data.setdefault("name", rel.stem)
    data.setdefault("source", str(rel))
    meta["label_map"] = data
    _check_label_map_mapping(data, refuse)


def _check_label_map_mapping(data: dict, refuse) -> None:
    """``refuse(problem, fix)`` when the label map mapping ``data`` (inline in submission.yaml or read
    from a file it names) is not a valid label map (:func:`cardbench.labelmaps.get_label_map`: a
    background entry, whole values 0..255, each value once, known class names)."""
    from cardbench.labelmaps import get_label_map

    try:
        get_label_map(data)
    except (TypeError, ValueError) as e:
        refuse(str(e), "write one entry per class with a distinct whole value 0..255 and background, e.g. "
                       "label_map: {background: 0, LV: 1, MY: 2, RV: 3} (see docs/scoring.md, label maps)")


def _link_stays_inside(link: Path, root: Path) -> bool:
    """True when the symbolic link ``link`` resolves inside ``root`` (resolved), or into a git-annex
    object store (``.git/annex/objects``: an annexed file of a DataLad dataset the submission is part of)."""
    target = link.resolve()
    if target == root or root in target.parents:
        return True
    parts = target.parts
    return any(parts[i:i + 3] == (".git", "annex", "objects") for i in range(len(parts) - 2))


def load_submission(path: str | Path, workdir: str | Path | None = None) -> Submission:
    """List a submission folder or archive.

    ``workdir``: an archive is extracted into a new folder inside it (default: the system's
    temporary folder); distributed scoring needs it on storage every worker sees.

    Raises:
        SubmissionError: the path does not exist, is an unsupported file, or the archive is
            corrupt or unsafe. Problems with individual files are collected in
            ``Submission.problems`` instead.
    """
    source = Path(path)
    if not source.exists():
        raise SubmissionError(f"{source}: predictions not found; pass a folder or a .zip/.tar.gz of one")
    tmp = None
    if source.is_file():
        low = source.name.lower()
        if not low.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
            raise SubmissionError(f"{source}: not a folder or a .zip/.tar.gz/.tgz/.tar archive")
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="cardbench-sub-", dir=None if workdir is None else str(workdir))
        try:
            _extract(source, Path(tmp))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        root = Path(tmp)
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
    else:
        root = source
    files: dict[CaseKey, list[Path]] = {}
    ignored: list[Path] = []
    problems: list[Problem] = []
    meta: dict = {}
    meta_path = None
    walk_errors: list[OSError] = []
    found: list[Path] = []
    linked_dirs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_errors.append):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        linked_dirs.extend(Path(dirpath) / d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    tmp_shown = Submission(source=source, root=root, files={}, _tmp=tmp)
    for d in linked_dirs:  # os.walk does not follow them: say so rather than report their files missing
        where = "outside the submission folder" if not _link_stays_inside(d, root.resolve()) else "in the submission"
        problems.append(Problem(tmp_shown.display(str(d)), f"symbolic link to a folder {where}; it was not read",
                                "copy the folder into the submission instead of linking to it",
                                "outside" if where.startswith("outside") else "metadata"))
    for e in walk_errors:
        why = "permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e))
        problems.append(Problem(tmp_shown.display(str(e.filename or root)),
                                f"folder cannot be read ({why}); its files would be reported as missing",
                                "make it readable (chmod -R a+rX) or remove it", "unreadable"))
    root_resolved = root.resolve()
    for p in sorted(found):
        # a dangling link (git-annex content not retrieved) is kept, so reading it says so
        if not (p.is_file() or (p.is_symlink() and not p.exists())):
            if p.exists() and mask_format(p) is not None:  # a FIFO, a device or a link to one named as a mask
                from cardbench.datasets.formats.base import special_file_kind

                problems.append(Problem(tmp_shown.display(str(p)), f"not a regular file: {special_file_kind(p)}; "
                                        "it was not read", "put the mask file itself in its place", "not_regular"))
            continue
        if p.is_symlink() and p.exists() and not _link_stays_inside(p, root_resolved):
            problems.append(Problem(tmp_shown.display(str(p)), "symbolic link to a file outside the submission "
                                    f"folder ({root}); it was not read",
                                    "copy the file into the submission instead of linking to it", "outside"))
            continue
        if p.name in _META_NAMES and p.parent == root:
            meta_path = p
            meta = _read_meta(p, problems, display=tmp_shown.display(str(p)))
            _label_map_inside(meta, root, tmp_shown.display(str(p)), problems)
            continue
        if mask_format(p) is None:
            ignored.append(p)
            continue
        try:
            key = parse_case_name(p)
        except ValueError as e:
            problems.append(Problem(tmp_shown.display(str(p)), str(e).split(": ", 1)[-1].split("; ")[0],
                                    str(e).split("; ", 1)[-1], "name"))
            continue
        files.setdefault(key, []).append(p)
    return Submission(source=source, root=root, files=files, meta=meta, meta_path=meta_path,
                      ignored=ignored, problems=problems, _tmp=tmp)
