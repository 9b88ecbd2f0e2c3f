"""Download and verify the files of a registered dataset with pooch (sha256 for every file).

Every file of a dataset is a row of the shipped ``data/REGISTRY.tsv`` (path, sha256, size, source
repository, pinned commit, URL) selected by the card's ``registry_prefix``. :func:`fetch` puts each
file at ``<cache>/<path>``:

- cache: ``$CARDBENCH_DATA`` if set, else the platform cache folder (``platformdirs``:
  ``~/.cache/cardbench/data`` on Linux, ``~/Library/Caches/cardbench/data`` on macOS,
  ``%LOCALAPPDATA%\\cardbench\\cardbench\\Cache\\data`` on Windows); or the ``cache=`` argument.
- source: the pinned-commit URL of each file, or a mirror holding the registry layout
  (``$CARDBENCH_MIRROR`` or ``mirror=``): an ``http(s)://`` base URL (``<mirror>/<path>``), a
  local folder or a ``file://`` URL. pooch refuses ``file://`` URLs, so a local mirror is read by
  our own downloader; the sha256 is checked the same way.
- each download goes to a temporary file next to its destination, its size and sha256 are
  checked, and only then is it renamed into place (pooch's ``stream_download``); failures are
  retried ``retries`` times. A file already cached is hashed first: a good copy is kept, a corrupt
  one is deleted before it is downloaded again, so a bad file never stays in the cache as if valid.

:func:`verify` re-hashes what is cached (pooch alone would silently download a corrupt cached file
again instead of reporting it).

Errors: :class:`FileIntegrityError` (hash mismatch or truncated download: names the file, the
expected and received sha256 and sizes, and what to do) and :class:`DownloadError` (the file could
not be obtained at all: names the file, the URL, the cause and what to do).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

from cardbench._util import sha256_file
from cardbench.datasets.cards import DatasetCard, load_card
from cardbench.datasets.embedded import IntegrityError, RegistryEntry

ENV_CACHE = "CARDBENCH_DATA"
ENV_MIRROR = "CARDBENCH_MIRROR"


class FileIntegrityError(IntegrityError):
    """A downloaded or cached file does not have the registry's sha256 (or size).

    Attributes:
        path: registry path of the file (``local_path``).
        source: where the bytes came from (URL or cached file).
        expected_sha256, received_sha256: hex digests.
        expected_bytes, received_bytes: sizes in bytes.
        truncated: the received file is shorter than the registry size.
    """

    def __init__(self, path: str, source: str, expected_sha256: str, received_sha256: str,
                 expected_bytes: int, received_bytes: int, fix: str, cause: str = ""):
        self.path, self.source = path, source
        self.expected_sha256, self.received_sha256 = expected_sha256, received_sha256
        self.expected_bytes, self.received_bytes = expected_bytes, received_bytes
        self.truncated = received_bytes < expected_bytes
        self.fix = fix
        what = (f"truncated: got {received_bytes} of {expected_bytes} bytes" if self.truncated
                else f"sha256 mismatch ({received_bytes} bytes, registry {expected_bytes})")
        cause = f" ({cause})" if cause else ""
        super().__init__(f"{path}: {what}{cause}; expected sha256 {expected_sha256}, received {received_sha256} "
                         f"from {source}. {fix}")


class DownloadError(RuntimeError):
    """A file could not be downloaded (network, HTTP error, missing on the mirror).

    Attributes:
        path: registry path; url: the URL tried; cause: the underlying error text.
    """

    def __init__(self, path: str, url: str, cause: str, fix: str):
        self.path, self.url, self.cause, self.fix = path, url, cause, fix
        super().__init__(f"{path}: could not download from {url} ({cause}); {fix}")


#: (words in the error chain, the reason shown): the first match names why a download failed.
_REASONS = (
    (("nameresolution", "name or service not known", "temporary failure in name resolution",
      "failed to resolve", "nodename nor servname", "getaddrinfo failed"),
     "no network connection (name resolution failed)"),
    (("network is unreachable", "no route to host"), "no network connection (network unreachable)"),
    (("connection refused", "errno 111", "winerror 10061"), "connection refused"),
    (("connection reset", "connection aborted", "remotedisconnected"), "connection reset by the server"),
    (("timed out", "timeout"), "timed out"),
    (("certificate", "ssl"), "TLS/SSL error (certificate or protocol)"),
)


def download_reason(exc: BaseException) -> str:
    """A short reason for a failed download (``connection refused``, ``no network connection (name
    resolution failed)``, ``HTTP 404 Not Found``, ``timed out``...), without the object reprs that
    requests/urllib3 put into their messages; unknown errors give their type and first line."""
    import requests

    resp = getattr(exc, "response", None)
    if isinstance(exc, requests.exceptions.HTTPError) and resp is not None:
        return f"HTTP {resp.status_code} {resp.reason or ''}".strip()
    chain, seen, x = [], set(), exc
    while x is not None and id(x) not in seen:  # requests wraps urllib3 wraps socket errors
        seen.add(id(x))
        chain.append(f"{type(x).__name__} {x}")
        x = x.__cause__ or x.__context__
    text = " ".join(chain).lower()
    for needles, why in _REASONS:
        if any(n in text for n in needles):
            return why
    if isinstance(exc, FileNotFoundError):
        return "not found on the mirror"
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


# --------------------------------------------------------------------------- locations

def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The data cache folder: ``cache``, else ``$CARDBENCH_DATA``, else the platform cache folder.

    Raises:
        NotADirectoryError: the path exists and is not a folder (a file given as the cache).
    """
    if cache is not None:
        root = Path(cache).expanduser()
    elif os.environ.get(ENV_CACHE):
        root = Path(os.environ[ENV_CACHE]).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("cardbench")) / "data"
    if root.exists() and not root.is_dir():
        import errno

        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(root))
    return root


@dataclass(frozen=True)
class Mirror:
    """Where files are downloaded from instead of their registry URLs.

    Attributes:
        kind: ``"folder"`` (a local folder with the registry layout) or ``"http"``.
        location: the folder (absolute) or the base URL (ending with ``/``).
    """

    kind: str
    location: str

    def url(self, local_path: str) -> str:
        """The URL (or file path) of ``local_path`` on this mirror."""
        if self.kind == "folder":
            return str(Path(self.location) / local_path)
        return self.location + local_path


def resolve_mirror(mirror: str | os.PathLike | None = None) -> Mirror | None:
    """Parse a mirror (argument, else ``$CARDBENCH_MIRROR``); ``None`` means the registry URLs.

    Accepts ``http://...`` / ``https://...`` base URLs, ``file://`` URLs and local folders.

    Raises:
        ValueError: an unsupported scheme, or a local folder that does not exist.
    """
    m = mirror if mirror is not None else os.environ.get(ENV_MIRROR) or None
    if m is None or str(m) == "":
        return None
    try:
        return _parse_mirror(str(m))
    except ValueError as e:
        if mirror is None:
            raise ValueError(f"{e} (the mirror comes from ${ENV_MIRROR}; unset it to download from the "
                             "registry URLs)") from None
        raise


def _parse_mirror(s: str) -> Mirror:
    parsed = urlparse(s)
    if parsed.scheme in ("http", "https"):
        return Mirror("http", s if s.endswith("/") else s + "/")
    if parsed.scheme == "file":
        s = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"mirror {s!r}: unsupported scheme '{parsed.scheme}'; give an http(s) base URL, a "
                         "file:// URL or a local folder that holds the registry layout (a copy of the registry's files)")
    p = Path(s).expanduser().resolve()
    if not p.is_dir():
        raise ValueError(f"mirror {s!r}: folder not found; give an existing folder that holds the registry "
                         "layout (a copy of the registry's files) or an http(s) base URL")
    return Mirror("folder", str(p))


def file_urls(name: str | DatasetCard, mirror: str | os.PathLike | None = None) -> dict[str, str]:
    """registry path -> the URL (or mirror file) :func:`fetch` would download it from."""
    card = name if isinstance(name, DatasetCard) else load_card(name)
    m = resolve_mirror(mirror)
    return {e.local_path: (m.url(e.local_path) if m else e.url) for e in card.files}


def dataset_path(name: str | DatasetCard, cache: str | os.PathLike | None = None) -> Path:
    """Folder of a dataset in the cache: ``<cache>/<common folder of its registry prefixes>``.

    ``ankenbrand2021-derived``, ``cmr-7t`` and ``kaggle-dsb-ukbb`` -> ``<cache>/cmr-seg-tl`` (their
    files lie below it); ``sunnybrook-sample`` -> ``<cache>/sunnybrook-sample``.
    """
    card = name if isinstance(name, DatasetCard) else load_card(name)
    root = cache_dir(cache)
    prefixes = [p.rstrip("/") for p in card.registry_prefix if p.strip("/")]
    if not prefixes:
        return root / card.name
    common = os.path.commonpath(prefixes) if len(prefixes) > 1 else prefixes[0]
    return root / common if common not in ("", ".") else root


def cache_sizes(name: str | DatasetCard, cache: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """The cheap check of a dataset's cached files: by presence and size only (no file is read; the
    sha256 check is :func:`verify`).

    Returns:
        (missing, wrong_size): registry paths of the files not in the cache, and of those whose size in
        bytes differs from REGISTRY.tsv (a truncated or damaged download).

    Raises:
        KeyError: unknown dataset.
    """
    card = name if isinstance(name, DatasetCard) else load_card(name)
    root = cache_dir(cache)
    missing: list[str] = []
    wrong: list[str] = []
    for e in card.files:
        path = root / e.local_path
        if not path.is_file():
            missing.append(e.local_path)
        elif path.stat().st_size != e.bytes:
            wrong.append(e.local_path)
    return missing, wrong


# --------------------------------------------------------------------------- downloaders

class _LocalCopy:
    """pooch downloader for a local-folder mirror: copies ``url`` (a file path) to the output file."""

    def __call__(self, url: str, output_file, pooch, check_only: bool = False):
        src = Path(url)
        if check_only:
            return src.is_file()
        if not src.is_file():
            raise FileNotFoundError(f"{src}: not on the mirror")
        if hasattr(output_file, "write"):
            with open(src, "rb") as fh:
                shutil.copyfileobj(fh, output_file)
        else:
            shutil.copyfile(src, output_file)
        return None


class _EmbeddedCopy:
    """pooch downloader that writes the gzip copy embedded in cardbench (``embedded:<registry path>``)."""

    def __call__(self, url: str, output_file, pooch, check_only: bool = False):
        import gzip

        from cardbench.datasets.embedded import data_root

        res = data_root() / (url.split(":", 1)[1] + ".gz")
        if check_only:
            return res.is_file()
        data = gzip.decompress(res.read_bytes())
        if hasattr(output_file, "write"):
            output_file.write(data)
        else:
            with open(output_file, "wb") as fh:
                fh.write(data)
        return None


def embedded_paths() -> set[str]:
    """Registry paths of which cardbench ships a (gzip) copy, e.g. the Sunnybrook sample."""
    from cardbench.datasets.embedded import data_root, registry

    root = data_root()
    return {p for p in registry() if (root / (p + ".gz")).is_file()}


class _Checked:
    """Wraps a pooch downloader: after the download, check size and sha256 against the registry.

    Raises :class:`FileIntegrityError` (a ValueError, so pooch retries and then deletes the
    temporary file) with the expected and received sha256.
    """

    def __init__(self, inner: Callable, entry: RegistryEntry, name: str):
        self.inner, self.entry, self.name = inner, entry, name

    def __call__(self, url, output_file, pooch, check_only: bool = False):
        if check_only:
            return self.inner(url, output_file, pooch, check_only=True)
        import requests

        fix = (f"The mirror or server gave different bytes: run `cardbench data fetch {self.name}` again; if it "
               "persists, the source changed or is corrupt: use another mirror (--mirror / CARDBENCH_MIRROR) "
               "or report it. Nothing was stored in the cache.")
        try:
            self.inner(url, output_file, pooch)
        except requests.exceptions.RequestException as e:
            # a connection that drops mid-transfer (e.g. IncompleteRead) ends here: report what arrived
            if isinstance(e, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)) \
                    and isinstance(output_file, str) and os.path.exists(output_file) \
                    and os.path.getsize(output_file) > 0:
                raise FileIntegrityError(self.entry.local_path, url, self.entry.sha256, sha256_file(output_file),
                                         self.entry.bytes, os.path.getsize(output_file), fix,
                                         cause=f"connection closed: {type(e).__name__}") from e
            raise
        got = sha256_file(output_file)
        size = os.path.getsize(output_file)
        if got != self.entry.sha256 or size != self.entry.bytes:
            raise FileIntegrityError(self.entry.local_path, url, self.entry.sha256, got, self.entry.bytes, size, fix)
        return None


def _downloader(mirror: Mirror | None, url: str):
    if url.startswith("embedded:"):
        return _EmbeddedCopy()
    if mirror is not None and mirror.kind == "folder":
        return _LocalCopy()
    import pooch

    return pooch.HTTPDownloader(progressbar=False, timeout=60)


# --------------------------------------------------------------------------- verify

@dataclass
class FileStatus:
    """State of one cached file.

    Attributes:
        entry: the registry row; path: the cached file.
        status: ``ok``, ``missing`` or ``corrupt``.
        received_sha256, received_bytes: of the cached file (``""`` / ``-1`` when missing).
    """

    entry: RegistryEntry
    path: Path
    status: str
    received_sha256: str = ""
    received_bytes: int = -1

    def message(self, name: str) -> str:
        """One line: the file, the problem and the fix."""
        if self.status == "missing":
            return f"{self.path}: not in the cache. Fix: `cardbench data fetch {name}`"
        if self.status == "corrupt":
            what = ("truncated" if 0 <= self.received_bytes < self.entry.bytes else "sha256 mismatch")
            return (f"{self.path}: {what}: expected sha256 {self.entry.sha256} ({self.entry.bytes} bytes), found "
                    f"{self.received_sha256} ({self.received_bytes} bytes). The cached file is corrupt or was "
                    f"modified. Fix: `cardbench data fetch {name}` deletes it and downloads a verified copy")
        return f"{self.path}: ok"


@dataclass
class VerifyReport:
    """Result of :func:`verify`.

    Attributes:
        name: dataset; root: cache folder; files: one :class:`FileStatus` per registry file.
    """

    name: str
    root: Path
    files: list[FileStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file is cached with the registry sha256."""
        return all(f.status == "ok" for f in self.files)

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def problems(self) -> list[str]:
        """One line per missing or corrupt file."""
        return [f.message(self.name) for f in self.files if f.status != "ok"]


def _status(entry: RegistryEntry, root: Path) -> FileStatus:
    path = root / entry.local_path
    if not path.is_file():
        return FileStatus(entry, path, "missing")
    size = path.stat().st_size
    got = sha256_file(path)
    if got == entry.sha256 and size == entry.bytes:
        return FileStatus(entry, path, "ok", got, size)
    return FileStatus(entry, path, "corrupt", got, size)


def _progress(enabled: bool):
    """A bar (bytes, speed) in a terminal; a line per 10 % of the bytes when stderr is not a terminal."""
    from cardbench._progress import progress_bar

    return progress_bar(enabled, transient=True, bytes=True)


def verify(name: str | DatasetCard, cache: str | os.PathLike | None = None, progress: bool = True) -> VerifyReport:
    """Re-hash every cached file of a dataset against the registry.

    Reads only; changes nothing. Each file is ``ok``, ``missing`` or ``corrupt`` (size or sha256
    differs from REGISTRY.tsv).

    Raises:
        KeyError: unknown dataset.
    """
    card = name if isinstance(name, DatasetCard) else load_card(name)
    root = cache_dir(cache)
    rep = VerifyReport(card.name, root)
    files = card.files
    present = [e for e in files if (root / e.local_path).is_file()]  # checked first: a missing file needs no hash
    if not present:  # never fetched: every file missing, said at once, without a progress bar
        rep.files.extend(FileStatus(e, root / e.local_path, "missing") for e in files)
        return rep
    with _progress(progress) as bar:  # the bar counts the bytes that are hashed, the present files' only
        t = bar.add_task(f"verify {card.name}", total=sum(e.bytes for e in present), unit="bytes", info="")
        for i, e in enumerate(files):
            st = _status(e, root)
            rep.files.append(st)
            if st.status != "missing":
                bar.update(t, advance=e.bytes, info=f"{i + 1}/{len(files)} files")
    return rep


# --------------------------------------------------------------------------- fetch

@dataclass
class FetchReport:
    """Result of :func:`fetch`.

    Attributes:
        name: dataset; root: cache folder; path: the dataset's folder in the cache.
        downloaded: registry paths downloaded now; cached: paths already present and verified.
        replaced: paths whose cached copy was corrupt and was replaced.
        bytes_downloaded: sum of the sizes downloaded now.
        source: ``"registry URLs"`` or the mirror.
        from_embedded: paths taken from the copy embedded in cardbench (no network needed).
    """

    name: str
    root: Path
    path: Path
    downloaded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    source: str = "registry URLs"
    from_embedded: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.downloaded) + len(self.cached)


@contextlib.contextmanager
def _quiet_pooch():
    import pooch

    log = pooch.get_logger()
    old = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(old)


def fetch(name: str | DatasetCard, *, cache: str | os.PathLike | None = None,
          mirror: str | os.PathLike | None = None, retries: int = 3, jobs: int = 4,
          progress: bool = True, embedded: bool = True) -> FetchReport:
    """Download every registry file of a dataset into the cache, verified by sha256.

    Args:
        name: dataset name (``cardbench data list``) or card.
        cache: cache folder (default :func:`cache_dir`).
        mirror: base URL or local folder with the registry layout (default ``$CARDBENCH_MIRROR``,
            else each file's pinned-commit URL).
        retries: extra attempts per file after a failed download or a hash mismatch (pooch waits
            1 s, 2 s, ... between attempts).
        jobs: parallel downloads (threads).
        progress: rich progress bar (bytes and files) on stderr.
        embedded: without a mirror, take the files cardbench ships (e.g. the Sunnybrook sample) from
            that copy instead of the network; the sha256 is checked all the same.

    Returns:
        :class:`FetchReport`. Files of datasets whose access is not open (e.g. Kaggle images) are not
        in the registry; the card's ``access_steps`` say how to get them.

    Raises:
        KeyError: unknown dataset.
        ValueError: a bad mirror.
        FileIntegrityError: a file arrived with the wrong sha256 or truncated after all retries
            (nothing is left in the cache for it).
        DownloadError: a file could not be downloaded after all retries.
    """
    import pooch
    import requests

    card = name if isinstance(name, DatasetCard) else load_card(name)
    root = cache_dir(cache)
    m = resolve_mirror(mirror)
    files = card.files
    rep = FetchReport(card.name, root, dataset_path(card, root),
                      source=("registry URLs" if m is None else m.location))
    if not files:
        return rep
    root.mkdir(parents=True, exist_ok=True)
    todo: list[RegistryEntry] = []
    for e in files:
        st = _status(e, root)
        if st.status == "ok":
            rep.cached.append(e.local_path)
            continue
        if st.status == "corrupt":
            st.path.unlink()
            rep.replaced.append(e.local_path)
        todo.append(e)
    for e in todo:  # create folders up front: pooch's makedirs is not safe across threads
        (root / e.local_path).parent.mkdir(parents=True, exist_ok=True)
    shipped = embedded_paths() if (m is None and embedded) else set()
    urls = {e.local_path: (m.url(e.local_path) if m else
                           f"embedded:{e.local_path}" if e.local_path in shipped else e.url) for e in files}
    # pooch's base_url is only used for files without an explicit URL; every file has one here
    pup = pooch.create(path=root, base_url=(m.location if m and m.kind == "http" else "https://invalid.invalid/"),
                       registry={e.local_path: f"sha256:{e.sha256}" for e in files}, urls=urls,
                       retry_if_failed=max(0, int(retries)))

    def one(e: RegistryEntry) -> RegistryEntry:
        url = urls[e.local_path]
        try:
            pup.fetch(e.local_path, downloader=_Checked(_downloader(m, url), e, card.name))
        except FileIntegrityError:
            raise
        except (requests.exceptions.RequestException, OSError) as exc:
            fix = ("check the network connection, or download from a mirror with --mirror (a local folder or an "
                   "http base URL holding the registry layout; also CARDBENCH_MIRROR)") if m is None else \
                  ("check that the mirror given with --mirror (or CARDBENCH_MIRROR) holds this file at that path "
                   "(the registry layout) and is reachable")
            raise DownloadError(e.local_path, url, download_reason(exc), fix) from exc
        return e

    with _quiet_pooch(), _progress(progress) as bar:
        done = 0
        t = bar.add_task(f"fetch {card.name}", total=sum(e.bytes for e in todo), unit="bytes",
                         info=f"0/{len(todo)} files")
        workers = max(1, min(int(jobs), len(todo))) if todo else 1
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futures = [ex.submit(one, e) for e in todo]
            try:
                for fut in futures:
                    e = fut.result()
                    done += 1
                    rep.downloaded.append(e.local_path)
                    rep.bytes_downloaded += e.bytes
                    if urls[e.local_path].startswith("embedded:"):
                        rep.from_embedded.append(e.local_path)
                    bar.update(t, advance=e.bytes, info=f"{done}/{len(todo)} files")
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    if rep.from_embedded:
        rep.source = ("the copy embedded in cardbench" if len(rep.from_embedded) == len(rep.downloaded)
                      else "registry URLs and the copy embedded in cardbench")
    return rep
