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

import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cardbench.benchmark.validation import Problem
from cardbench.datasets.naming import CaseKey, mask_format, parse_case_name

_META_NAMES = ("submission.yaml", "submission.yml")
_ALLOWED_META_KEYS = {"name", "team", "method", "training_data", "url", "label_map", "description",
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

    def close(self) -> None:
        """Delete the temporary extraction folder (archives only)."""
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "Submission":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _extract(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    p = Path(info.filename)
                    if p.is_absolute() or ".." in p.parts:
                        raise SubmissionError(f"{archive}: unsafe path '{info.filename}' in archive; "
                                              "re-create it with relative paths only")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                for m in tf.getmembers():
                    p = Path(m.name)
                    if p.is_absolute() or ".." in p.parts or m.issym() or m.islnk():
                        raise SubmissionError(f"{archive}: unsafe member '{m.name}' (absolute, '..' or link); "
                                              "re-create the archive with plain files and relative paths")
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # Python < 3.10.12: members were checked above
                    tf.extractall(dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise SubmissionError(f"{archive}: cannot extract archive ({e}); check that it is complete "
                              "(re-download or re-create it)") from e


def _read_meta(path: Path, problems: list[Problem]) -> dict:
    import yaml

    try:
        meta = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        problems.append(Problem(str(path), f"not valid YAML{where}: {what}",
                                "fix the syntax (see the README's submission.yaml example)", "metadata"))
        return {}
    if not isinstance(meta, dict):
        problems.append(Problem(str(path), "must be a mapping of keys (name, team, method, ...)",
                                "see the README's submission.yaml example", "metadata"))
        return {}
    unknown = sorted(set(meta) - _ALLOWED_META_KEYS)
    if unknown:
        problems.append(Problem(str(path), f"unknown keys {unknown}",
                                f"use only {sorted(_ALLOWED_META_KEYS)}", "metadata"))
    return meta


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
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
            continue
        if p.name in _META_NAMES and p.parent == root:
            meta_path = p
            meta = _read_meta(p, problems)
            continue
        if mask_format(p) is None:
            ignored.append(p)
            continue
        try:
            key = parse_case_name(p)
        except ValueError as e:
            problems.append(Problem(str(p), str(e).split(": ", 1)[-1].split("; ")[0],
                                    str(e).split("; ", 1)[-1], "name"))
            continue
        files.setdefault(key, []).append(p)
    return Submission(source=source, root=root, files=files, meta=meta, meta_path=meta_path,
                      ignored=ignored, problems=problems, _tmp=tmp)
