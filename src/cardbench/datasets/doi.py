"""Files published under a DOI (Zenodo, figshare, Dataverse), fetched with pooch and verified.

A dataset card may name files that are not in cardbench's ``REGISTRY.tsv`` but in a data
repository record with a DOI, in its ``doi_files`` field::

    doi_files:
      doi: 10.5281/zenodo.3876351       # the record
      what: ukbb_cardiac labels ...      # one line for messages and docs
      files: []                          # file names of the record to fetch; empty: all of them

:func:`fetch_doi_files` reads the record through the repository's public API (pooch's DOI support:
``pooch.create(base_url="doi:<DOI>/")`` and :meth:`pooch.Pooch.load_registry_from_doi`, which fills
the registry with each file's checksum from the record, md5 on Zenodo), downloads each file with
:class:`pooch.DOIDownloader` (``doi:<DOI>/<file>`` URLs) and checks it against that checksum.
Everything is downloaded into a staging folder first; only when every file is verified are the
files moved into ``<cache>/doi/<record>/`` together with ``record.json`` (the record's API JSON,
so the folder verifies itself later) and ``SHA256SUMS`` (sha256 of each file, computed here: the
record only gives md5). A wrong checksum raises :class:`DoiIntegrityError` naming the file; nothing
of that run is kept.

Without internet: pass ``source=`` (``--source DIR``), a local folder holding the files and the
record's JSON saved as ``record.json`` (``https://zenodo.org/api/records/<id>``), or set
``$CARDBENCH_MIRROR`` to a folder holding ``doi/<record>/`` in that form (a copy of the cache).
The checksums then come from that ``record.json``.

Errors: :class:`DoiUnreachable` (the record or a file could not be read: one line naming the DOI,
the files and ``--source`` / ``$CARDBENCH_MIRROR``), :class:`DoiIntegrityError` (a checksum differs),
:class:`DoiSpecError` (the card's ``doi_files`` or a local copy is unusable).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardbench._util import atomic_write_text, sha256_file
from cardbench.datasets.cards import DatasetCard, load_card

#: Largest record JSON read (bytes): a Zenodo record with a few thousand files is well below it.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class DoiSpecError(ValueError):
    """The card's ``doi_files`` field, a requested file name or a local copy is unusable."""


class DoiUnreachable(RuntimeError):
    """The DOI record or one of its files could not be obtained (network, HTTP error)."""


class DoiIntegrityError(ValueError):
    """A file arrived with another checksum than the record's (nothing of the run was kept).

    Attributes:
        file: the record's file name; source: where it came from.
    """

    def __init__(self, file: str, source: str, detail: str):
        self.file, self.source = file, source
        super().__init__(f"{file}: checksum differs from the DOI record ({detail}) from {source}; nothing was "
                         "kept. Fetch again; if it persists the copy is corrupt: use another source "
                         "(--source DIR) or report it")


@dataclass(frozen=True)
class DoiSpec:
    """The ``doi_files`` field of a card.

    Attributes:
        doi: e.g. ``10.5281/zenodo.3876351``; what: one-line description;
        files: file names to fetch (empty: every file of the record).
    """

    doi: str
    what: str = ""
    files: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """Folder name of the record in the cache: ``zenodo.3876351`` for ``10.5281/zenodo.3876351``."""
        tail = self.doi.rsplit("/", 1)[-1]
        return "".join(c if (c.isalnum() or c in "._-") else "_" for c in tail) or "record"

    def files_text(self) -> str:
        return ", ".join(self.files) if self.files else "all files of the record"


def doi_spec(card: str | DatasetCard) -> DoiSpec:
    """The :class:`DoiSpec` of a card. Raises :class:`DoiSpecError` when it has none or it is malformed."""
    card = card if isinstance(card, DatasetCard) else load_card(card)
    raw = card.raw.get("doi_files")
    if not raw:
        raise DoiSpecError(f"{card.name}: its card names no files under a DOI (no doi_files field); --labels "
                           "applies to datasets whose card has one (cardbench data info NAME)")
    if not isinstance(raw, dict) or not isinstance(raw.get("doi"), str) or not raw["doi"].startswith("10."):
        raise DoiSpecError(f"{card.path}: doi_files needs doi: 10.xxxx/... (a DOI without the doi: prefix)")
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise DoiSpecError(f"{card.path}: doi_files.files must be a list of file names of the record")
    return DoiSpec(raw["doi"].strip(), str(raw.get("what") or "").strip(), tuple(files))


def doi_dir(card: str | DatasetCard, cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`fetch_doi_files` puts the files: ``<cache>/doi/<record slug>``."""
    from cardbench.datasets.fetch import cache_dir

    return cache_dir(cache) / "doi" / doi_spec(card).slug


# --------------------------------------------------------------------------- the record

@dataclass
class DoiRecord:
    """Files of a DOI record.

    Attributes:
        doi: the DOI; registry: file name -> checksum (``"md5:<hex>"``, pooch's format);
        urls: file name -> web download URL; sizes: file name -> bytes (``-1`` when the record has none);
        record: the repository's API JSON (saved as ``record.json``).
    """

    doi: str
    registry: dict[str, str]
    urls: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def _files_of_json(record: Any) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """(registry, urls, sizes) of a Zenodo API record JSON (``files``: key or filename, checksum, links)."""
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        raise DoiSpecError("record.json: not a Zenodo API record (no 'files' list); save "
                           "https://zenodo.org/api/records/<id> as record.json")
    reg, urls, sizes = {}, {}, {}
    for f in record["files"]:
        if not isinstance(f, dict):
            continue
        name = f.get("key") or f.get("filename")
        checksum = str(f.get("checksum") or "")
        if not isinstance(name, str) or not checksum:
            continue
        reg[name] = checksum if ":" in checksum else f"md5:{checksum}"
        links = f.get("links") or {}
        url = links.get("self") or links.get("download") or links.get("content")
        if isinstance(url, str):
            urls[name] = url
        sizes[name] = int(f.get("size") or f.get("filesize") or -1)
    return reg, urls, sizes


def read_record(doi: str, *, timeout: float = 60) -> DoiRecord:
    """Read a DOI record through its repository's API (pooch): checksums, download URLs, sizes.

    The registry comes from :meth:`pooch.Pooch.load_registry_from_doi`; URLs from the repository
    object (:func:`pooch.downloaders.doi_to_repository`, ``download_url``).

    Raises:
        DoiUnreachable: the DOI or the repository API could not be reached or answered an error.
    """
    import pooch
    import pooch.downloaders as pdl
    import requests

    try:
        pup = pooch.create(path=tempfile.gettempdir(), base_url=f"doi:{doi}/", registry=None)
        pup.load_registry_from_doi()
        repo = pdl.doi_to_repository(doi, timeout=timeout)
        urls = {n: repo.download_url(n) for n in pup.registry}
        record = getattr(repo, "api_response", {}) or {}
    except (requests.exceptions.RequestException, OSError, ValueError, KeyError) as e:
        raise DoiUnreachable(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    _, _, sizes = _files_of_json(record) if isinstance(record, dict) and "files" in record else ({}, {}, {})
    return DoiRecord(doi, dict(pup.registry), urls, sizes, record if isinstance(record, dict) else {})


def read_local_record(folder: str | os.PathLike, doi: str) -> DoiRecord:
    """The record of a local copy: ``<folder>/record.json`` (Zenodo API JSON), URLs pointing at the folder.

    Raises:
        DoiSpecError: no record.json, too large, not JSON, or not a record.
    """
    folder = Path(folder)
    rj = folder / "record.json"
    if not rj.is_file():
        raise DoiSpecError(f"{rj}: not found; a local copy of doi:{doi} needs the files and the record's JSON "
                           "(https://zenodo.org/api/records/<id>) saved as record.json in that folder")
    if rj.stat().st_size > MAX_RECORD_BYTES:
        raise DoiSpecError(f"{rj}: larger than {MAX_RECORD_BYTES} bytes; not a record JSON")
    try:
        record = json.loads(rj.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DoiSpecError(f"{rj}: not valid JSON ({e}); save the record's API JSON again") from None
    reg, web, sizes = _files_of_json(record)
    rec = DoiRecord(doi, reg, {n: str(folder / n) for n in reg}, sizes, record)
    rec.record.setdefault("_web_urls", web)
    return rec


# --------------------------------------------------------------------------- fetch

@dataclass
class DoiFetchReport:
    """Result of :func:`fetch_doi_files`.

    Attributes:
        name: dataset; doi; path: the folder of the files; files: file names present and verified;
        downloaded: fetched now; cached: already present with the record's checksum;
        source: ``"doi:<DOI>"`` or the local folder; urls: file name -> web URL (for a release).
        bytes_downloaded: sum of the sizes fetched now.
    """

    name: str
    doi: str
    path: Path
    files: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    source: str = ""
    urls: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0


def _safe_name(name: str) -> bool:
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def _local_source(spec: DoiSpec, source: str | os.PathLike | None) -> Path | None:
    if source is not None:
        p = Path(source).expanduser()
        if not p.is_dir():
            raise DoiSpecError(f"{p}: --source folder not found; give the folder holding the files of doi:{spec.doi} "
                               "and record.json")
        return p.resolve()
    from cardbench.datasets.fetch import ENV_MIRROR

    m = os.environ.get(ENV_MIRROR) or ""
    if m and "://" not in m and (Path(m).expanduser() / "doi" / spec.slug / "record.json").is_file():
        return (Path(m).expanduser() / "doi" / spec.slug).resolve()
    return None


def fetch_doi_files(name: str | DatasetCard, *, cache: str | os.PathLike | None = None,
                    source: str | os.PathLike | None = None, files: list[str] | None = None,
                    retries: int = 2, timeout: float = 60, progress: bool = True) -> DoiFetchReport:
    """Fetch the DOI files of a dataset (its card's ``doi_files``) into ``<cache>/doi/<record>/``, verified.

    Args:
        name: dataset name or card (e.g. ``kaggle-dsb-ukbb``).
        cache: cache folder (see :func:`cardbench.datasets.fetch.cache_dir`).
        source: local folder with the files and ``record.json`` (no network); default
            ``$CARDBENCH_MIRROR/doi/<record>`` when that exists, else the DOI record on the web.
        files: file names to fetch (default: the card's list; empty: every file of the record).
        retries: extra attempts per file (pooch).
        timeout: seconds per HTTP request.
        progress: a bar in a terminal, a line per 10 % of the files otherwise.

    Returns:
        :class:`DoiFetchReport`.

    Raises:
        DoiSpecError: the card has no ``doi_files``, a named file is not in the record, a bad local copy.
        DoiUnreachable: the record or a file could not be obtained (one line naming the DOI, the files
            and ``--source DIR`` / ``$CARDBENCH_MIRROR``).
        DoiIntegrityError: a file's checksum differs from the record's (nothing of the run is kept).
    """
    import pooch
    import requests

    from cardbench._progress import progress as _progress

    card = name if isinstance(name, DatasetCard) else load_card(name)
    spec = doi_spec(card)
    wanted = list(files) if files else list(spec.files)
    dest = doi_dir(card, cache)
    local = _local_source(spec, source)
    offline_fix = (f"doi:{spec.doi} ({spec.files_text() if not files else ', '.join(files)}) could not be read"
                   " ({cause}); where the internet is not reachable, put the files and the record's JSON "
                   "(saved as record.json) into one folder and pass --source DIR (or $CARDBENCH_MIRROR holding "
                   f"doi/{spec.slug}/)")
    if local is not None:
        rec = read_local_record(local, spec.doi)
        web = rec.record.get("_web_urls", {})
    else:
        try:
            rec = read_record(spec.doi, timeout=timeout)
            web = rec.urls
        except DoiUnreachable as e:
            # offline, but fetched before: the cached record.json verifies the cached files
            cached = read_local_record(dest, spec.doi) if (dest / "record.json").is_file() else None
            names = (wanted or sorted(cached.registry)) if cached else []
            if not cached or not names or not all(
                    n in cached.registry and (dest / n).is_file()
                    and pooch.hashes.hash_matches(str(dest / n), cached.registry[n]) for n in names):
                raise DoiUnreachable(offline_fix.format(cause=str(e))) from e
            return DoiFetchReport(card.name, spec.doi, dest, files=names, cached=list(names),
                                  source=f"{dest / 'record.json'} (offline)",
                                  urls={n: cached.record.get("_web_urls", {}).get(n, "") for n in names})
    names = wanted or sorted(rec.registry)
    missing = [n for n in names if n not in rec.registry]
    if missing:
        raise DoiSpecError(f"doi:{spec.doi}: {', '.join(missing)} not in the record (it has "
                           f"{', '.join(sorted(rec.registry)[:20])}{' ...' if len(rec.registry) > 20 else ''})")
    bad = [n for n in names if not _safe_name(n)]
    if bad:
        raise DoiSpecError(f"doi:{spec.doi}: file name {bad[0]!r} would be written outside the dataset folder; "
                           "refused")
    rep = DoiFetchReport(card.name, spec.doi, dest, source=(str(local) if local else f"doi:{spec.doi}"),
                         urls={n: web.get(n, "") for n in names})
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{spec.slug}.", suffix=".partial", dir=dest.parent))
    try:
        todo = []
        for n in names:
            have = dest / n
            if have.is_file() and pooch.hashes.hash_matches(str(have), rec.registry[n]):
                rep.cached.append(n)
            else:
                todo.append(n)
        if local is not None:
            from cardbench.datasets.fetch import _LocalCopy

            urls = {n: str(local / n) for n in todo}
            downloader = _LocalCopy()
        else:
            urls = {n: f"doi:{spec.doi}/{n}" for n in todo}
            downloader = pooch.DOIDownloader(progressbar=False, timeout=timeout)
        pup = pooch.create(path=stage, base_url=f"doi:{spec.doi}/",
                           registry={n: rec.registry[n] for n in todo}, urls=urls,
                           retry_if_failed=max(0, int(retries)))
        log = pooch.get_logger()
        old = log.level
        log.setLevel("WARNING")
        try:
            with _progress(len(todo), f"fetch doi:{spec.doi}", enabled=progress and bool(todo),
                           quiet_for=5.0) as bar:  # a quick failure stays one line
                for n in todo:
                    src = urls[n] if local is not None else (web.get(n) or urls[n])
                    try:
                        pup.fetch(n, downloader=downloader)
                    except ValueError as e:
                        if "hash" in str(e).lower():
                            m = re.search(r"got:?\s*'?([0-9a-fA-F]{8,})", str(e))
                            raise DoiIntegrityError(n, src, f"expected {rec.registry[n]}, received "
                                                    + (m.group(1) if m else "another hash")) from None
                        raise DoiUnreachable(offline_fix.format(cause=f"{n}: {e}")) from e
                    except (requests.exceptions.RequestException, OSError) as e:
                        raise DoiUnreachable(offline_fix.format(cause=f"{n}: {type(e).__name__}: {e}")) from e
                    rep.downloaded.append(n)
                    rep.bytes_downloaded += (stage / n).stat().st_size
                    bar.advance(info=n)
        finally:
            log.setLevel(old)
        # every file verified: move into place, then the record and the sha256 list
        dest.mkdir(parents=True, exist_ok=True)
        for n in todo:
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / n, dest / n)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    record = {k: v for k, v in rec.record.items() if k != "_web_urls"}
    if record:
        atomic_write_text(dest / "record.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    atomic_write_text(dest / "SHA256SUMS", "".join(f"{sha256_file(dest / n)}  {n}\n" for n in names))
    rep.files = names
    return rep
