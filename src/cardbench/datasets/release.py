"""DataLad release of a dataset, and fetching a released dataset with DataLad.

:func:`release` turns a dataset into a DataLad dataset (https://www.datalad.org; layout after the
YODA principles of the DataLad handbook: inputs kept apart, every step recorded):

1. ``datalad create`` with the ``text2git`` procedure: binary files (DICOM, NIfTI, PNG) go to the
   git-annex, text files (card.yaml, subjects.csv, contours, README) to git.
2. ``sourcedata/``: the dataset's published source files from the registry (fetched and sha256-
   checked by :func:`cardbench.datasets.fetch.fetch`, at their registry paths), saved
   in one commit.
3. The conversion into the standard layout (``card.yaml``, ``subjects.csv``, optional
   ``annotations.csv``, ``images/``, ``labels/``) plus a datasheet ``README.md`` is run with
   ``datalad run`` so that ``datalad rerun`` re-executes it: with the dataset's converter
   (``cardbench data convert NAME --source sourcedata --into .``) when cardbench has one, else by
   copying a prepared folder given with ``prepared=`` (``--from-prepared``; re-executable where that
   folder exists). Without either, the release holds the source files, the card and the datasheet.
4. Web URLs: every annexed file whose sha256 equals a REGISTRY.tsv row gets that row's public URL
   registered (``git annex registerurl``), so a clone can get it from the web as well as from the
   release.

Then ``datalad clone OUT other && datalad get -d other other`` yields the same bytes, and
:func:`fetch_datalad` does both for the user (``cardbench data fetch NAME --backend datalad
--source URL_OR_PATH``).

DataLad is optional (the ``[datalad]`` extra, which also installs the ``git-annex`` wheel): it is
imported only inside these functions. :class:`DataladMissing` names what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cardbench._util import atomic_write_text
from cardbench._version import __version__
from cardbench.datasets.cards import DatasetCard, load_card, parse_card
from cardbench.datasets.embedded import registry

#: Files and folders of the standard layout that a conversion writes (the datalad run outputs).
LAYOUT_ITEMS = ("card.yaml", "subjects.csv", "annotations.csv", "spacing.csv", "sources.csv", "volumes.csv",
                "images", "labels")


class DataladMissing(RuntimeError):
    """DataLad or git-annex is not installed (or git has no identity)."""


class ReleaseError(RuntimeError):
    """The release cannot be made (bad prepared folder, output exists, a datalad step failed)."""


# --------------------------------------------------------------------------- tools

def ensure_datalad():
    """Import ``datalad.api``; make sure git-annex and a git identity are available.

    The git-annex wheel from PyPI puts its binary next to the Python executable (the venv's
    ``bin/``); when that folder is not on PATH it is prepended for this process.

    Returns:
        the ``datalad.api`` module.

    Raises:
        DataladMissing: datalad not importable, git-annex not found, or git has no user.name /
            user.email (the message says how to fix each).
    """
    try:
        import datalad.api as dl
    except ImportError as e:
        raise DataladMissing("DataLad is not installed: pip install 'cardbench[datalad]' (installs datalad and the "
                             "git-annex wheel), or pip install datalad git-annex") from e
    venv_bin = Path(sys.executable).parent
    for tool in ("git-annex", "cardbench"):  # datalad run calls `cardbench`; the git-annex wheel sits in bin/
        if shutil.which(tool) is None and (venv_bin / tool).exists():
            os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("git-annex") is None:
        raise DataladMissing("git-annex not found on PATH: pip install git-annex (a wheel; its binary lands in "
                             "the environment's bin/, which must be on PATH) or apt-get install git-annex "
                             "(Debian/Ubuntu) or brew install git-annex (macOS)")
    if shutil.which("git") is None:
        raise DataladMissing("git not found on PATH: install git")
    for key, env in (("user.name", "GIT_AUTHOR_NAME"), ("user.email", "GIT_AUTHOR_EMAIL")):
        if os.environ.get(env):
            continue
        r = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True)
        if r.returncode != 0 or not r.stdout.strip():
            raise DataladMissing(f"git has no {key}: run git config --global {key} \"...\" (DataLad commits need an "
                                 "identity)")
    return dl


def _git(repo: Path, *args: str, input: str | None = None) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, input=input)
    if r.returncode != 0:
        raise ReleaseError(f"{repo}: git {' '.join(args[:3])} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


# --------------------------------------------------------------------------- conversion step

def _preparer(name: str):
    """The converter of dataset ``name`` or None: ``cardbench.datasets.prepare.PREPARERS[name]``,
    run through :func:`cardbench.datasets.prepare.prepare_dataset` (``(name, out, source=...)``)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("cardbench.datasets.prepare") is None:
        return None
    mod = importlib.import_module("cardbench.datasets.prepare")
    table = getattr(mod, "PREPARERS", None)
    if isinstance(table, dict) and name in table and hasattr(mod, "prepare_dataset"):
        return lambda source, out: mod.prepare_dataset(name, out, source=source)
    return None


def has_converter(name: str) -> bool:
    """True when cardbench can convert ``name``'s source files into the standard layout."""
    return _preparer(name) is not None


def check_prepared(folder: str | Path, name: str | None = None) -> DatasetCard:
    """Check that ``folder`` is a prepared standard-layout dataset and return its card.

    Needs ``card.yaml`` (valid card; its ``name`` equal to ``name`` when given), ``subjects.csv``
    and ``labels/`` with masks that :func:`cardbench.datasets.reference.load_reference` can list.

    Raises:
        ReleaseError: naming the folder, the problem and the fix.
    """
    import yaml

    from cardbench.datasets.reference import ReferenceError, load_reference

    folder = Path(folder)
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: prepared dataset folder not found; prepare it first (`cardbench data prepare "
                           f"{name or 'NAME'}`) or pass the right folder")
    for item in ("card.yaml", "subjects.csv", "labels"):
        if not (folder / item).exists():
            raise ReleaseError(f"{folder}: not a prepared dataset: {item} is missing (standard layout: card.yaml, "
                               "subjects.csv, images/, labels/)")
    try:
        card = parse_card(yaml.safe_load((folder / "card.yaml").read_text(encoding="utf-8")),
                          str(folder / "card.yaml"), check_registry=False)
        load_reference(folder)
    except (ValueError, ReferenceError, yaml.YAMLError) as e:
        raise ReleaseError(f"{folder}: not a usable prepared dataset: {e}") from e
    if name is not None and card.name != name:
        raise ReleaseError(f"{folder / 'card.yaml'}: dataset name '{card.name}' differs from '{name}'; release the "
                           "right folder or name")
    return card


def _layout_items(src: Path) -> list[str]:
    """Top-level items of a prepared folder to release: everything not hidden."""
    return sorted(p.name for p in src.iterdir() if not p.name.startswith("."))


def _copy_layout(src: Path, dest: Path) -> list[str]:
    copied = []
    for item in _layout_items(src):
        s, d = src / item, dest / item
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.is_dir():
            shutil.rmtree(d)
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copyfile(s, d)
        copied.append(item)
    return copied


def convert_into(name: str, into: str | Path, *, source: str | Path | None = None,
                 prepared: str | Path | None = None) -> list[str]:
    """Write the standard layout of ``name`` and its datasheet README into an existing folder.

    This is the step :func:`release` records with ``datalad run``. Either converts ``source`` (the
    dataset's source files, e.g. ``sourcedata/``) with cardbench's converter, or copies the
    ``prepared`` folder. Existing layout items in ``into`` are replaced; nothing else is touched
    (``.git``, ``.datalad``, ``sourcedata/`` stay).

    Returns:
        the layout items written (plus ``README.md``).

    Raises:
        ReleaseError: no converter and no prepared folder, or the result is not a valid layout.
    """
    into = Path(into)
    if prepared is not None:
        src = Path(prepared)
        check_prepared(src, name)
        converter_readme = (src / "README.md").read_text(encoding="utf-8") if (src / "README.md").is_file() else ""
        written = _copy_layout(src, into)
    else:
        fn = _preparer(name)
        if fn is None:
            raise ReleaseError(f"cardbench has no converter for '{name}'; pass a prepared folder "
                               "(--from-prepared DIR)")
        if source is None:
            raise ReleaseError("converting needs --source (the folder of source files, e.g. sourcedata)")
        tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=into))
        try:
            fn(Path(source), tmp / "out")
            check_prepared(tmp / "out", name)
            readme = tmp / "out" / "README.md"
            converter_readme = readme.read_text(encoding="utf-8") if readme.is_file() else ""
            written = _copy_layout(tmp / "out", into)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    card = check_prepared(into, name)
    text = datasheet(card, into)
    if converter_readme.strip():
        body = converter_readme.strip().splitlines()
        if body and body[0].startswith("# "):
            body = body[1:]
        text += "\n## Notes of the conversion\n\n" + "\n".join(body).strip() + "\n"
    atomic_write_text(into / "README.md", text)
    return sorted(set(written) | {"README.md"})


# --------------------------------------------------------------------------- datasheet

def _md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def datasheet(card: DatasetCard, folder: str | Path | None = None) -> str:
    """A datasheet (README.md) for a released dataset, after Gebru et al., "Datasheets for Datasets",
    Commun ACM 2021;64(12):86, doi:10.1145/3458723 (motivation, composition, collection, preprocessing,
    uses, distribution, maintenance), filled from the card and, when ``folder`` is a prepared
    layout, from its ``subjects.csv`` and file lists. Deterministic: the same inputs give the same text.
    """
    import pandas as pd

    folder = Path(folder) if folder is not None else None
    lines = [f"# {card.title}", "",
             f"`{card.name}` version {card.version}. License: {card.license}. Access: {card.access}.", "",
             f"Cite: {card.citation}", ""]
    lines += ["## Motivation", "", card.description, ""]
    lines += ["## Composition", ""]
    lines += [f"- Modality: {card.modality}; field strength: {card.field_strength}.",
              f"- Label map: {card.label_map if isinstance(card.label_map, str) else 'custom (see card.yaml)'}; "
              f"annotated classes: {', '.join(card.classes)}.",
              f"- Annotators: {card.annotators}." + (f" {card.raw['annotators_note'].strip()}"
                                                     if card.raw.get("annotators_note") else "")]
    if folder is not None and (folder / "subjects.csv").is_file():
        subj = pd.read_csv(folder / "subjects.csv", dtype={"subject": str})
        n_img = len(list((folder / "images").rglob("*.nii*"))) if (folder / "images").is_dir() else 0
        n_lab = len(list((folder / "labels").rglob("*.nii*"))) if (folder / "labels").is_dir() else 0
        lines += [f"- {len(subj)} subjects; {n_img} image volumes in images/, {n_lab} label volumes in labels/ "
                  "(`<subject>/<subject>_frame<FF>.nii.gz`; spacing and orientation in the NIfTI header)."]
        if "split" in subj.columns:
            counts = subj["split"].value_counts()
            lines += ["- Split: " + ", ".join(f"{k} {int(counts[k])}" for k in ("train", "val", "test")
                                              if k in counts) + f" subjects (splits_version {card.splits_version})."]
        lines += ["", _md_table(list(subj.columns), subj.astype(object).where(subj.notna(), "").values.tolist())]
        if (folder / "annotations.csv").is_file():
            lines += ["", "annotations.csv lists the classes annotated in each (subject, frame); a class not listed "
                      "there is not annotated (unknown), not empty."]
    elif card.splits:
        lines += ["- Split: " + ", ".join(f"{k} {len(v)}" for k, v in card.splits.items())
                  + f" subjects (splits_version {card.splits_version})."]
    lines += ["", "## Collection and source", ""]
    src = card.raw.get("source") or {}
    if src:
        lines += [f"- Source: {src.get('url') or src.get('repo', '')}"
                  + (f" (commit {src['commit']})" if src.get("commit") else "")]
    if card.registry_prefix:
        lines += [f"- Source files: `sourcedata/` (registry prefix {', '.join(card.registry_prefix)}), each with "
                  "its sha256 in cardbench's REGISTRY.tsv and its public URL registered in git-annex."]
    for r in card.raw.get("references") or []:
        lines += [f"- {r.get('text', '')}: " + (f"doi:{r['doi']}" if r.get("doi") else r.get("url", ""))]
    lines += ["", "## Preprocessing", "",
              "The standard layout was produced by the `datalad run` commit in this dataset's history "
              f"(cardbench {__version__}); `git log` shows the command and `datalad rerun <commit>` "
              "re-executes it.", ""]
    lines += ["## Uses", "",
              "Benchmarking and training of cardiac cine segmentation with cardbench "
              "(`cardbench score predictions/ --reference .`).", ""]
    if card.known_issues:
        lines += ["Known issues:", ""] + [f"- {k}" for k in card.known_issues] + [""]
    lines += ["## Distribution", "", f"License: {card.license}."]
    if card.access_steps:
        lines += ["", "Access steps:", ""] + [f"{i}. {s}" for i, s in enumerate(card.access_steps, 1)]
    lines += ["", "Get the files: `datalad clone <this dataset> DIR && cd DIR && datalad get .`, or "
              f"`cardbench data fetch {card.name} --backend datalad --source <this dataset>`.", "",
              "## Maintenance", "",
              f"Any change of content bumps the version in card.yaml (now {card.version}). Maintained with "
              "cardbench (`cardbench data release`).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- release

@dataclass
class ReleaseReport:
    """Result of :func:`release`.

    Attributes:
        name, path: the dataset and the released DataLad dataset.
        source_files: files saved under sourcedata/.
        run_commit: the ``datalad run`` commit of the conversion ("" when none).
        conversion: ``converter``, ``prepared`` or ``none``.
        urls_registered: annexed files given a web URL.
        annexed, in_git: counts of annexed and git-tracked files.
    """

    name: str
    path: Path
    source_files: int = 0
    run_commit: str = ""
    conversion: str = "none"
    urls_registered: int = 0
    annexed: int = 0
    in_git: int = 0
    notes: list[str] = field(default_factory=list)
    doi_files: int = 0


def _annexed(repo: Path) -> dict[str, str]:
    """path -> git-annex key of every annexed file in ``repo`` (HEAD)."""
    out = _git(repo, "annex", "find", "--include=*", "--format=${key}\t${file}\n")
    res = {}
    for line in out.splitlines():
        if "\t" in line:
            key, path = line.split("\t", 1)
            res[path] = key
    return res


def _key_sha256(key: str) -> str | None:
    # SHA256E-s<size>--<hex>.<ext> / SHA256-s<size>--<hex>
    if not key.startswith("SHA256"):
        return None
    h = key.split("--", 1)[1] if "--" in key else ""
    return h.split(".", 1)[0] or None


def register_urls(repo: str | Path) -> int:
    """Register the public registry URL of every annexed file whose sha256 matches a registry row.

    Uses ``git annex registerurl`` (records the URL without downloading). Returns the count.
    """
    repo = Path(repo)
    by_sha: dict[str, str] = {}
    for e in registry().values():
        by_sha.setdefault(e.sha256, e.url)
    lines = []
    for path, key in _annexed(repo).items():
        sha = _key_sha256(key)
        if sha and sha in by_sha:
            lines.append(f"{key} {by_sha[sha]}")
    if lines:
        _git(repo, "annex", "registerurl", "--batch", input="\n".join(lines) + "\n")
    return len(lines)


def _add_doi_files(ds, repo: Path, card: DatasetCard, cache, source, progress: bool) -> tuple[int, int]:
    """Fetch the card's DOI files, save them under ``sourcedata/doi/<record>/`` and register the web
    URL of each annexed one (``git annex registerurl``). Returns (files, URLs registered)."""
    from cardbench.datasets.doi import doi_spec, fetch_doi_files

    drep = fetch_doi_files(card, cache=cache, source=source, progress=progress)
    sub = Path("sourcedata") / "doi" / doi_spec(card).slug
    for n in [*drep.files, "record.json", "SHA256SUMS"]:
        if (drep.path / n).is_file():
            (repo / sub / n).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(drep.path / n, repo / sub / n)
    ds.save(path=[str(sub)], message=f"Add the {len(drep.files)} files of doi:{drep.doi} ({card.name}; checksums "
            "verified against the record)", result_renderer="disabled")
    keys = _annexed(repo)
    lines = [f"{keys[(sub / n).as_posix()]} {drep.urls[n]}" for n in drep.files
             if (sub / n).as_posix() in keys and drep.urls.get(n, "").startswith(("http://", "https://"))]
    if lines:
        _git(repo, "annex", "registerurl", "--batch", input="\n".join(lines) + "\n")
    return len(drep.files), len(lines)


def release(name: str, out: str | Path, *, prepared: str | Path | None = None,
            mirror: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
            sourcedata: bool = True, progress: bool = True, labels: bool = False,
            labels_source: str | os.PathLike | None = None) -> ReleaseReport:
    """Release dataset ``name`` as a DataLad dataset at ``out`` (see the module docstring).

    Args:
        name: registered dataset.
        out: new folder (must not exist, or be empty).
        prepared: a prepared standard-layout folder to release (used when cardbench has no
            converter for ``name``; otherwise the conversion is run from sourcedata).
        mirror, cache: passed to :func:`cardbench.datasets.fetch.fetch` for the source files.
        sourcedata: include the registry source files under ``sourcedata/``.
        progress: progress bars.
        labels: also include the files the card names under a DOI (``doi_files``; kaggle-dsb-ukbb: the
            ukbb_cardiac labels on Zenodo) under ``sourcedata/doi/<record>/``, fetched and verified by
            :func:`cardbench.datasets.doi.fetch_doi_files`, each annexed file with its web URL from the
            record registered in git-annex.
        labels_source: local copy of those files (folder with the files and ``record.json``).

    Returns:
        :class:`ReleaseReport`.

    Raises:
        DataladMissing: datalad, git-annex or a git identity is missing.
        ReleaseError: ``out`` is not empty, the prepared folder is unusable, or a step failed.
        KeyError: unknown dataset. FileIntegrityError, DownloadError: a source file failed.
    """
    dl = ensure_datalad()
    import logging

    logging.getLogger("datalad").setLevel(logging.WARNING)
    from cardbench.datasets.fetch import cache_dir, fetch

    card = load_card(name)
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out}: exists and is not empty; choose a new folder for the release")
    if prepared is not None:
        check_prepared(prepared, name)
    rep = ReleaseReport(card.name, out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if out.parent.exists()
                                else None))
    try:
        ds = dl.create(path=str(tmp), cfg_proc="text2git", result_renderer="disabled",
                       description=f"{card.name} {card.version} release",
                       message=f"Create DataLad dataset for {card.name} {card.version}")
        ds = dl.Dataset(str(tmp))
        # SHA256E keys: the annex key of a source file then carries the sha256 of REGISTRY.tsv
        ga = tmp / ".gitattributes"
        ga.write_text(ga.read_text(encoding="utf-8").replace("annex.backend=MD5E", "annex.backend=SHA256E"),
                      encoding="utf-8")
        ds.save(path=[".gitattributes"], message="Use SHA256E keys (the registry's checksum) for annexed files",
                result_renderer="disabled")
        files = card.files if sourcedata else []
        if files:
            fetch(card, cache=cache, mirror=mirror, progress=progress)
            root = cache_dir(cache)
            for e in files:
                dest = tmp / "sourcedata" / e.local_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / e.local_path, dest)
            rep.source_files = len(files)
            ds.save(path=["sourcedata"], message=f"Add source data of {card.name}: {len(files)} files from "
                    f"{', '.join(card.registry_prefix)} (sha256-verified against cardbench's REGISTRY.tsv)",
                    result_renderer="disabled")
        if labels:
            rep.doi_files, n_urls = _add_doi_files(ds, tmp, card, cache, labels_source, progress)
            rep.urls_registered += n_urls
        # the card of the registry, for releases without a standard layout
        conv_cmd = None
        if has_converter(card.name) and files and prepared is None:
            conv_cmd = f"cardbench data convert {card.name} --source sourcedata --into ."
            rep.conversion = "converter"
        elif prepared is not None:
            conv_cmd = f"cardbench data convert {card.name} --from-prepared {Path(prepared).resolve()} --into ."
            rep.conversion = "prepared"
        if conv_cmd is not None:
            outputs = sorted(set(LAYOUT_ITEMS) | {"README.md"} | (set(_layout_items(Path(prepared)))
                                                                 if prepared is not None else set()))
            res = ds.run(conv_cmd, inputs=["sourcedata"] if files else None, outputs=outputs,
                         message=f"Convert {card.name} into the cardbench standard layout", result_renderer="disabled",
                         on_failure="ignore", return_type="list", result_xfm=None)
            bad = [r for r in res if r.get("status") not in ("ok", "notneeded")]
            if bad:
                raise ReleaseError(f"datalad run `{conv_cmd}` failed: "
                                   + "; ".join(str(r.get("message", r.get("status"))) for r in bad[:3]))
            rep.run_commit = _git(tmp, "rev-parse", "HEAD").strip()
        else:
            atomic_write_text(tmp / "card.yaml", card.path.read_text(encoding="utf-8"))
            atomic_write_text(tmp / "README.md", datasheet(card, None))
            ds.save(path=["card.yaml", "README.md"], message=f"Add card and datasheet of {card.name}",
                    result_renderer="disabled")
            rep.notes.append("no converter and no prepared folder: the release holds the source files, the card and "
                             "the datasheet")
        rep.urls_registered += register_urls(tmp)
        rep.annexed = len(_annexed(tmp))
        rep.in_git = len([p for p in _git(tmp, "ls-files").splitlines() if p]) - rep.annexed
        status = _git(tmp, "status", "--porcelain").strip()
        if status:
            raise ReleaseError(f"{out}: unsaved changes after the release steps: {status.splitlines()[:5]}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return rep


# --------------------------------------------------------------------------- fetch with datalad

def fetch_datalad(name: str, source: str, dest: str | Path | None = None,
                  cache: str | os.PathLike | None = None) -> Path:
    """Clone a released dataset and get all its files (``datalad clone`` + ``datalad get``).

    Args:
        name: expected dataset name (checked against the clone's card.yaml when it has one).
        source: URL or path of the released DataLad dataset.
        dest: clone folder (default ``<cache>/datalad/<name>``); an existing clone is updated
            with ``datalad get`` only.
        cache: see :func:`cardbench.datasets.fetch.cache_dir`.

    Returns:
        the clone folder, with every annexed file present.

    Raises:
        DataladMissing, ReleaseError (clone/get failed, or the clone holds another dataset).
    """
    import yaml

    dl = ensure_datalad()
    from cardbench.datasets.fetch import cache_dir

    # absolute: datalad resolves a relative path given to Dataset.get against the dataset (Y/Y)
    dest = (Path(dest).expanduser() if dest is not None else cache_dir(cache) / "datalad" / name).resolve()
    if Path(str(source)).expanduser().exists():   # a local release given relative to the current folder
        source = str(Path(str(source)).expanduser().resolve())
    if not (dest / ".datalad").is_dir():
        if dest.exists() and any(dest.iterdir()):
            raise ReleaseError(f"{dest}: exists, is not empty and is not a DataLad dataset; choose another --out")
        dest.parent.mkdir(parents=True, exist_ok=True)
        res = dl.clone(source=str(source), path=str(dest), result_renderer="disabled", on_failure="ignore",
                       return_type="list", result_xfm=None)
        bad = [r for r in res if r.get("status") not in ("ok", "notneeded")]
        if bad:
            raise ReleaseError(f"datalad clone {source} {dest} failed: {bad[0].get('message')}; check the URL or path "
                               "of the released dataset")
    res = dl.Dataset(str(dest)).get(path=str(dest), result_renderer="disabled", on_failure="ignore",
                                    return_type="list", result_xfm=None)
    bad = [r for r in res if r.get("status") not in ("ok", "notneeded")]
    if bad:
        raise ReleaseError(f"datalad get in {dest} failed for {len(bad)} file(s), e.g. {bad[0].get('path')}: "
                           f"{bad[0].get('message')}")
    card_path = dest / "card.yaml"
    if card_path.is_file():
        got = (yaml.safe_load(card_path.read_text(encoding="utf-8")) or {}).get("name")
        if got != name:
            raise ReleaseError(f"{card_path}: the dataset at {source} is '{got}', not '{name}'")
    return dest
