"""Small helpers shared by every part: sha256 of files, atomic writes, and text made safe for a terminal.

Writes are atomic: content goes to a temporary file in the destination folder, is flushed and
fsync'ed, then renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows
for paths on one file system). A crash leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

_CHUNK = 1 << 20

#: characters a terminal acts on instead of showing (or that reorder what it shows): C0 controls
#: (NUL..US, ESC, newline, CR, tab), DEL, C1 controls (0x80-0x9f), the Unicode bidi embeddings and
#: overrides U+202A-U+202E, the bidi isolates U+2066-U+2069, and the line/paragraph separators
#: U+2028/U+2029.
_UNSAFE = {c: None for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F),
                             *range(0x2066, 0x206A), 0x2028, 0x2029]}
_NAMED = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
for _c in _UNSAFE:
    _UNSAFE[_c] = _NAMED.get(_c, f"\\x{_c:02x}" if _c < 0x100 else f"\\u{_c:04x}")
del _c


def terminal_safe(text) -> str:
    """``text`` (any object, as ``str``) with every character a terminal would act on replaced by a
    visible escape, as Python's ``repr`` writes it: ESC becomes ``\\x1b``, a newline ``\\n``, CR ``\\r``,
    tab ``\\t``, BEL ``\\x07``, DEL ``\\x7f``, a C1 control ``\\x9b``, a bidi override ``\\u202e``.

    For every stranger-supplied string (file names, submission names and labels, leaderboard
    entries) before it reaches a terminal line: no escape sequence can clear the screen, recolour
    or retitle the terminal, and no newline can forge a second (``error: ...``) line. Printable text,
    including non-ASCII letters, is kept as it is; a backslash is kept too (so the result is
    readable, not reversible). Rich markup is a separate matter: escape with
    :func:`rich.markup.escape` as well when printing through rich.
    """
    return str(text).translate(_UNSAFE)


def current_umask() -> int:
    """The process's file-mode creation mask (read from /proc where possible, so no thread sees it change)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex sha256 of the file at ``path`` (read in 1 MiB chunks).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path`` and rename it over ``path`` on success.

    On an exception inside the ``with`` block (including a full disk) the temporary file is removed
    and ``path`` is left untouched. ``mode`` is ``"w"`` (text) or ``"wb"`` (binary). The file gets
    the permissions of any new file (``0666`` less the umask), not ``mkstemp``'s ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" in mode:
        encoding = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a result file follows the umask like any other file
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, encoding=encoding, newline="" if "b" not in mode else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


#: hidden file that marks a folder as written by cardbench (and so replaceable by it).
OWNER_FILE = ".cardbench-output"
_OWNER_TEXT = "This folder was written by cardbench; cardbench may replace it as a whole.\n"


def is_cardbench_output(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder cardbench wrote with :func:`atomic_dir` (it holds OWNER_FILE)."""
    return (Path(path) / OWNER_FILE).is_file()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False, owned_only: bool = True) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place when the block succeeds.

    Yields the temporary folder to fill. On success a hidden ownership file (:data:`OWNER_FILE`) is
    added and the folder is renamed to ``path``; an existing ``path`` is moved aside first and
    deleted only after the new one is in place, so a crash never leaves a half-written ``path``. On
    an exception the temporary folder is deleted and ``path`` is untouched.

    An existing ``path`` is replaced only when it is an empty folder, or when ``overwrite`` is True
    and (with ``owned_only``, the default) cardbench wrote it: it holds :data:`OWNER_FILE`. A
    user's folder is never deleted, whatever files it holds.

    Raises:
        FileExistsError: ``path`` exists and may not be replaced (the message names the fix).
        ValueError: ``path`` is the current folder or one of its parents.
    """
    path = Path(path)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(f"{path}: cannot write results into the current folder or one of its parents; "
                         "give a new sub-folder (e.g. --out results)")
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path}: exists and is a file; choose another folder")
        empty = not any(path.iterdir())
        if not empty and not overwrite:
            raise FileExistsError(f"{path}: already exists; choose another folder or delete it first")
        if not empty and owned_only and not is_cardbench_output(path):
            raise FileExistsError(f"{path}: exists and was not written by cardbench; cardbench replaces only "
                                  "its own output folders: choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: a shared folder must stay readable
        yield tmp
        (tmp / OWNER_FILE).write_text(_OWNER_TEXT, encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old, path)  # put the previous folder back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a temporary folder next to ``path``; when the block succeeds, move what it holds into ``path``.

    For an output folder that may already hold earlier results (an export): on an exception inside
    the block the temporary folder is deleted and ``path`` is left as it was (never half-written).
    On success a missing ``path`` is the temporary folder renamed; into an existing ``path`` each
    file is moved with :func:`os.replace` (a file of the same name is replaced), a folder that
    cardbench wrote with :func:`atomic_dir` (it holds :data:`OWNER_FILE`) replaces one of the same
    name only when that one is empty or cardbench wrote it too, and other folders are merged the same
    way. Every such check is done before the first move.

    Raises:
        FileExistsError: ``path`` is a file, or a folder in it that a folder of the result would
            replace was not written by cardbench (nothing is moved; the message names the fix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: a shared folder must stay readable
        yield tmp
        if not path.exists() and not path.is_symlink():
            os.replace(tmp, path)
            return
        if not path.is_dir():
            raise FileExistsError(f"{path}: exists and is a file; choose another folder")
        moves: list[tuple[Path, Path]] = []
        _plan_merge(tmp, path, moves)
        for src, dst in moves:
            if src.is_dir() and dst.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
                old.rmdir()
                os.replace(dst, old)
                os.replace(src, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plan_merge(src: Path, dst: Path, moves: list) -> None:
    """The moves that put the content of ``src`` into the existing folder ``dst`` (see :func:`staged_dir`)."""
    for item in sorted(src.iterdir()):
        target = dst / item.name
        if target.is_symlink() or (target.exists() and item.is_dir() != target.is_dir()):
            raise FileExistsError(f"{target}: exists and is not what cardbench writes there (a "
                                  f"{'link' if target.is_symlink() else 'file' if item.is_dir() else 'folder'}); "
                                  "choose another folder or move it away first")
        if item.is_dir() and target.exists():
            if is_cardbench_output(item):
                if any(target.iterdir()) and not is_cardbench_output(target):
                    raise FileExistsError(f"{target}: exists and was not written by cardbench; cardbench replaces "
                                          "only its own output folders: choose another folder")
            else:
                _plan_merge(item, target, moves)
                continue
        moves.append((item, target))


def yaml_error_text(e: Exception) -> str:
    """A PyYAML error as one line: ``at line L, column C: <problem>`` (PyYAML's own message spans
    several lines with a caret drawing)."""
    mark = getattr(e, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
    return f"{where}{what}"


def release_memory() -> None:
    """Hand memory that was freed back to the operating system: Arrow's unused pool memory and, on
    Linux with glibc, the C heap's free pages (``malloc_trim``), which fragmentation otherwise keeps
    in the process after a phase that built and dropped many small objects. Changes no value."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover
        pass
    global _LIBC
    if _LIBC is None:
        import ctypes

        try:  # glibc's soname; ctypes.util.find_library would start a subprocess (ldconfig) to look
            lib = ctypes.CDLL("libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:  # not glibc (macOS, musl, Windows): nothing to trim
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None
