"""Kaggle volume track: LV volumes and EF from per-image pixel counts, scored against the released volumes.

The Second Annual Data Science Bowl (Kaggle, 2016; 1140 patients: train 1-500, validate 501-700,
test 701-1140) released, per patient, the LV volume at end-diastole and end-systole
(``truth/{train,validate,solution}.csv`` of the seed repository). Ankenbrand et al. (2021) labelled
the images with ukbb_cardiac, trained U-Nets on them and published, for ten of them, the number of
LV and MY pixels each predicts in every image (``predictions/<model>.tsv.xz``: ``file, lv_pixels,
my_pixels``) plus the volumes ukbb_cardiac itself reports (``ukbb_ventricular_volumes.csv``). Each
is a volume-track submission.

Volumes (summation of discs; Schulz-Menger et al., JCMR 2020;22:19)::

    LV volume of a frame (mL) = sum over slices of lv_pixels x a_px x slice_spacing / 1000
    a_px (mm^2)               = pixelSpacingX x pixelSpacingY x (max(X, Y) / grid)^2

with ``pixelSpacingX/Y`` (mm), ``X, Y`` (pixels) and ``sliceSpacing`` (mm) of the curated series
from ``patient_dimensions.tsv``. Those spacings already belong to the curated images (series wider
than 256 px were downscaled to 256 px and their spacing enlarged by 1 / scaleFactor during
curation), so ``scaleFactor`` is not applied again. The models saw each image resized so that its
longer side is ``grid`` pixels and the shorter side zero-padded (fastai ``ResizeMethod.PAD``; the
seed's ``train_fastai_segmentation.py``), hence the factor ``(max(X, Y) / grid)^2``: ``grid`` is
256, or 128 for the ``size128`` model. MY gives the predicted LV mass (MY volume at ED x 1.05 g/mL).

ED and ES of a prediction: the frames with the largest and the smallest predicted LV volume (the
competition asked for the two volumes, not for frames); EDV, ESV from those frames, EF = 100 x
(EDV - ESV) / EDV.

Series and patients. The curated data hold 1396 series for the 1140 patients: a series whose rows
are fewer than its columns also exists rotated by 90 degrees (``<id>_rot90``; 247 patients), and
nine patients have two complete repeated acquisitions (``<id>_a``, ``<id>_b``: 123, 334, 437, 516,
619, 721, 793, 1082, 1111). Two resolution rules (:data:`RULES`):

``cardbench`` (default): one row per patient. The rotated series is used where it exists (the
    orientation of the training images; the seed keeps only that one for training). A patient with
    repeated acquisitions gets the mean EDV and mean ESV of its series (both are complete
    measurements of the same heart; picking one would be arbitrary), and EF from these means.
``seed``: as the seed's ``prediction_vs_gt_{diastole,systole}.tsv`` and its README table: the rotated
    series where it exists, and each repeated acquisition (``_a``, ``_b``) as its own row against
    the patient's released volumes (1149 rows).

EF absolute difference (the seed's table): ``|EF_pred - EF_true|`` in percentage points, summarised
by mean, SD (ddof 1), median and IQR (75th - 25th percentile, linear interpolation as R's
``quantile`` type 7 and numpy's default). Where the predicted EF is undefined (predicted EDV 0),
the difference counts as 100 percentage points (the worst case; the seed's
``replace_na(distance.ef = 1)``), flagged with status ``pred_undefined`` and counted. The
agreement statistics (bias, LoA, MAE, r; :mod:`cardbench.benchmark.stats`) leave such subjects out
and count them.
"""

from __future__ import annotations

import io
import lzma
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cardbench._version import __version__
from cardbench.formulas import MYOCARDIAL_DENSITY_G_PER_ML, ejection_fraction

KAGGLE = "cmr-seg-tl/analysis/kaggle/"
DIMENSIONS = KAGGLE + "patient_dimensions.tsv"
IMAGE_LIST = KAGGLE + "image_list.tsv.xz"
CONFIDENCE = KAGGLE + "confidence_by_patient.tsv"
UKBB_VOLUMES = KAGGLE + "ukbb_ventricular_volumes.csv"
TRUTH = {"train": KAGGLE + "truth/train.csv", "validate": KAGGLE + "truth/validate.csv",
         "test": KAGGLE + "truth/solution.csv"}
RULES = ("cardbench", "seed")
#: EF difference counted for an undefined predicted EF (percentage points).
EF_WORST = 100.0
DATASET = "ankenbrand2021-derived"

_SERIES = re.compile(r"^(?P<subject>\d+)(?:_(?P<rep>[ab]))?(?P<rot>_rot90)?$")
_FILE = re.compile(r"(?:^|/)(?P<series>[^/]+)/(?P<series2>[^/]+)-frame(?P<frame>\d+)-slice(?P<slice>\d+)\.png$")


#: parsed names of the image lists seen last (key: sha256 of the names' Arrow buffers); the seed's
#: tables of ten models list the same 433,460 images, so a reproduction parses them about twice.
_PARTS_CACHE: dict[str, pd.DataFrame] = {}


def _file_parts(files: pd.Series) -> pd.DataFrame:
    """series, series2, frame, slice (text; all missing where the name does not match) of image
    file names ``.../<series>/<series>-frame<FFF>-slice<SSS>.png``, in the order of ``files``.

    :data:`_FILE` applied by Arrow's regex engine (RE2; ``\\d`` is an ASCII digit) in one vectorised
    call, about twice as fast as ``Series.str.extract``, which matches one Python call at a time;
    a list of names already parsed (byte for byte the same) is not parsed again."""
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(files.astype(str).fillna(""))  # a missing name matches nothing
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    h = hashlib.sha256(f"{arr.offset} {len(arr)} {arr.null_count}".encode())
    for buf in arr.buffers()[1:]:  # offsets (every name's length), then the characters
        h.update(memoryview(buf))
    key = h.hexdigest()
    parts = _PARTS_CACHE.get(key)
    if parts is None:
        got = pc.extract_regex(arr, _FILE.pattern)  # null where a name does not match
        parts = pd.DataFrame({f: pc.struct_field(got, f).to_pandas() for f in ("series", "series2", "frame", "slice")})
        if len(_PARTS_CACHE) >= 4:
            _PARTS_CACHE.pop(next(iter(_PARTS_CACHE)))
        _PARTS_CACHE[key] = parts
    return parts.set_axis(files.index).copy()


class VolumeTrackError(ValueError):
    """A volume-track input is unreadable or inconsistent (message: file, problem, fix)."""


@dataclass(frozen=True)
class KaggleModel:
    """One published volume-track submission of the seed.

    Attributes:
        key: file stem (``predictions/<key>.tsv.xz``) or ``ukbb_cardiac``.
        label: the seed's method name (README table, ``prediction_vs_gt_*.tsv``).
        grid: side of the square prediction grid in pixels (None for a volume table).
        confidence: confidence cutoff in % of the training set (None: not trained on Kaggle).
        published: (mean, SD, median, IQR) of the EF absolute difference in the seed's README, or None.
    """

    key: str
    label: str
    grid: int | None
    confidence: int | None
    published: tuple[float, float, float, float] | None

    @property
    def path(self) -> str:
        return UKBB_VOLUMES if self.grid is None else f"{KAGGLE}predictions/{self.key}.tsv.xz"


#: The seed's README table (github chfc-cmi/cmr-seg-tl, section "Training own U-Nets"), plus the
#: fastai2 model it published without a README row.
PUBLISHED_MODELS: tuple[KaggleModel, ...] = (
    KaggleModel("resnet34_5percent_size256_normalTfms_ceLoss", "r34_p05_s256", 256, 5, (3.64, 3.38, 2.87, 3.72)),
    KaggleModel("resnet50_5percent_size256_normalTfms_ceLoss", "r50_p05_s256", 256, 5, (3.71, 3.73, 2.79, 3.70)),
    KaggleModel("resnet34_15percent_size256_normalTfms_ceLoss", "r34_p15_s256", 256, 15, (3.73, 3.38, 2.91, 3.72)),
    KaggleModel("resnet34_5percent_size256_normalTfms_focalLoss", "r34_p05_s256_focal", 256, 5,
                (3.75, 3.90, 2.86, 3.80)),
    KaggleModel("resnet34_10percent_size256_normalTfms_ceLoss", "r34_p10_s256", 256, 10, (3.77, 4.44, 2.89, 3.76)),
    KaggleModel("resnet34_5percent_size256_extremeTfms_ceLoss", "r34_p05_s256_extremeTfms", 256, 5,
                (3.78, 3.59, 2.89, 3.64)),
    KaggleModel("resnet34_5percent_size128_normalTfms_ceLoss", "r34_p05_s128", 128, 5, (3.90, 4.26, 3.05, 3.86)),
    KaggleModel("resnet34_5percent_size256_normalTfms_softdiceLoss", "r34_p05_s256_dice", 256, 5,
                (3.93, 3.43, 3.07, 3.91)),
    KaggleModel("vgg16_5percent_size256_normalTfms_ceLoss", "v16_p05_s256", 256, 5, (4.06, 4.94, 3.02, 3.87)),
    KaggleModel("resnet34_5percent_size256_extremeTfms_ceLoss_fastai2", "r34_p05_s256_fastai2", 256, 5, None),
    KaggleModel("ukbb_cardiac", "UKBB", None, None, (5.42, 8.83, 3.72, 4.34)),
)


# --- data access -------------------------------------------------------------------------------

def default_data_dir() -> Path:
    """The pooch cache of ``cardbench data fetch`` (registry layout): ``$CARDBENCH_DATA`` or the platform cache."""
    try:
        from cardbench.datasets.fetch import cache_dir
    except ImportError:  # pragma: no cover - fetch is part of cardbench.datasets
        import os

        import platformdirs

        env = os.environ.get("CARDBENCH_DATA")
        return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("cardbench")) / "data"
    return cache_dir()


def read_published(local_path: str, data_dir: str | Path | None = None) -> tuple[bytes, str, str]:
    """Bytes of a registry file from ``data_dir`` (default :func:`default_data_dir`), sha256-checked.

    Returns:
        (bytes, where they were read from, sha256).

    Raises:
        FileNotFoundError: the file is not there (the message says how to fetch it).
        cardbench.datasets.embedded.IntegrityError: the sha256 differs from the registry's.
    """
    from cardbench.datasets.embedded import open_published

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / local_path
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: not found. The Kaggle volume track needs the published files of the seed: run "
            f"`cardbench data fetch {DATASET}` (offline: set CARDBENCH_MIRROR to a copy), or pass --data DIR "
            "with a folder holding the registry layout (cmr-seg-tl/analysis/kaggle/...)")
    data, entry, where = open_published(local_path, root)
    return data, where, entry.sha256


def _source_bytes(source: "str | Path | bytes", name: str | None, limits=None) -> tuple[bytes, str]:
    """(decompressed bytes, name for messages) of a path or of bytes already read, bounded: a path
    must be a regular file (a link to one is followed; a FIFO, a device, a folder or a link to one is
    refused before it is opened), of at most ``max_table_bytes`` bytes (:mod:`cardbench.limits`,
    env ``CARDBENCH_MAX_TABLE_BYTES``; checked by ``stat`` and again while reading), and an .xz/.gz
    table decompresses to at most as many bytes (:func:`_decompress` stops there).

    Raises:
        VolumeTrackError: not a regular file, unreadable, or above the limit (one line: file,
            problem, the limit and the variable that raises it).
    """
    import os
    import stat

    from cardbench.limits import get_limits

    cap = (limits or get_limits()).max_table_bytes
    if isinstance(source, (bytes, bytearray)):
        name = name or "<bytes>"
        data = bytes(source)
        if len(data) > cap:
            raise VolumeTrackError(_too_large(name, f"{len(data)} bytes", cap))
    else:
        name = name or str(source)
        path = Path(source)
        try:
            st = path.stat()
        except OSError as e:
            raise VolumeTrackError(f"{name}: cannot be read ({e.strerror}); check the path") from None
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, a device (/dev/zero) never ends
            from cardbench.datasets.formats.base import special_file_kind

            raise VolumeTrackError(f"{name}: not a regular file: {special_file_kind(path)}; it was not read: "
                                   "give the pixel table itself")
        if st.st_size > cap:
            raise VolumeTrackError(_too_large(name, f"{st.st_size} bytes on disk", cap))
        try:
            with open(path, "rb") as fh:
                fd_mode = os.fstat(fh.fileno()).st_mode
                if not stat.S_ISREG(fd_mode):  # replaced between stat and open
                    raise VolumeTrackError(f"{name}: not a regular file; it was not read: give the pixel table "
                                           "itself")
                data = fh.read(cap + 1)  # a file that grows after the stat is still cut at the limit
        except OSError as e:
            raise VolumeTrackError(f"{name}: cannot be read ({e.strerror}); check the path") from None
        if len(data) > cap:
            raise VolumeTrackError(_too_large(name, f"more than {cap} bytes", cap))
    return _decompress(data, name, cap), name


def _too_large(name: str, what: str, cap: int, decompressed: bool = False) -> str:
    from cardbench.limits import Limits

    where = "decompresses to" if decompressed else "is"
    return (f"{name}: {where} {what}, above the limit of {cap} bytes for a pixel table (the published tables "
            f"are at most 25 MB decompressed); it was not read{' further' if decompressed else ''}: a "
            f"decompression bomb or not a pixel table; if the table is genuine raise the limit with "
            f"{Limits.env_name('max_table_bytes')}=BYTES")


_DECOMPRESS_STEP = 4 << 20  # bytes of output per decompressor call


def _decompress(data: bytes, name: str, cap: int | None = None) -> bytes:
    """``data`` decompressed when it is .xz (by name or magic bytes) or gzip (magic bytes), else as is;
    concatenated streams/members are decompressed one after the other (as ``lzma.decompress`` and
    ``gzip.decompress`` do). Streaming (``LZMADecompressor`` / ``zlib.decompressobj`` with
    ``max_length``): never more than ``cap`` + 1 bytes are produced, so a bomb costs no memory.

    Args:
        data: the file's bytes.
        name: the file, for messages.
        cap: most bytes allowed out (default ``max_table_bytes`` of :func:`cardbench.limits.get_limits`).

    Raises:
        VolumeTrackError: a corrupt or truncated stream, or output above ``cap``.
    """
    import zlib

    if cap is None:
        from cardbench.limits import get_limits

        cap = get_limits().max_table_bytes
    if name.endswith(".xz") or data[:6] == b"\xfd7zXZ\x00":
        make, errors, kind = (lambda: lzma.LZMADecompressor()), (lzma.LZMAError,), ".xz"
    elif data[:2] == b"\x1f\x8b":
        make, errors, kind = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)), (zlib.error,), ".gz"
    else:
        return data
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = make()
        try:
            buf = rest
            while True:
                want = min(cap - total + 1, _DECOMPRESS_STEP)  # in steps: at most cap + 1 bytes ever held
                chunk = d.decompress(buf, want)
                total += len(chunk)
                out.append(chunk)
                if total > cap:
                    raise VolumeTrackError(_too_large(name, f"more than {cap} bytes", cap, decompressed=True))
                if d.eof:
                    break
                buf = getattr(d, "unconsumed_tail", b"")  # zlib keeps unread input there; lzma inside
                if not buf and len(chunk) < want:  # all input used, output not full, no end of stream
                    raise VolumeTrackError(f"{name}: not a valid {kind} file (truncated: the end of the stream is "
                                           "missing); fetch or write it again")
        except errors as e:
            if out and total and rest is not data:
                break  # leftover data after the last stream is not a stream: ignored, as lzma.decompress does
            raise VolumeTrackError(f"{name}: not a valid {kind} file ({e}); fetch or write it again") from None
        rest = d.unused_data
        if kind == ".gz":
            rest = rest.lstrip(b"\x00")  # zero padding between and after members, as gzip.decompress skips
            if rest and not rest.startswith(b"\x1f\x8b"):
                raise VolumeTrackError(f"{name}: not a valid .gz file (data after the end of the stream); fetch "
                                       "or write it again")
    return b"".join(out)


def parse_series(series: str) -> tuple[str, str | None, bool]:
    """Split a curated series name into (patient, repeat ``a``/``b`` or None, rotated).

    Raises:
        VolumeTrackError: the name is not ``<id>``, ``<id>_a``, ``<id>_b``, optionally + ``_rot90``.
    """
    m = _SERIES.match(str(series))
    if not m:
        raise VolumeTrackError(f"series name {series!r}: expected <patient id>[_a|_b][_rot90]")
    return m.group("subject"), m.group("rep"), bool(m.group("rot"))


def _read_tsv(data: bytes, name: str) -> pd.DataFrame:
    """A tab-separated table with a header row, read by Arrow's CSV reader (one thread; about 5x
    faster than pandas' on the seed's 433,460-row tables). A ``file`` column is text as written
    (never a number); every other column is what Arrow infers (a count column with text in it is
    text, and then refused by the checks of the caller)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(use_threads=False),
                               parse_options=pacsv.ParseOptions(delimiter="\t"),
                               convert_options=pacsv.ConvertOptions(column_types={"file": pa.string()}))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # malformed rows, bad UTF-8, no header
        raise VolumeTrackError(f"{name}: cannot be read as a tab-separated table ({e})") from e
    names = table.column_names
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise VolumeTrackError(f"{name}: the header names {dup} more than once; give each column once")
    return pd.DataFrame({c: table.column(c).to_pandas() for c in names})


MAX_PIXELS = 2**31 - 1
"""Largest pixel count a table may give (as :data:`cardbench.benchmark.confusion_tables.MAX_COUNT`):
a count above it cannot be a pixel count of one image and is refused before any cast to int64."""


def read_pixel_counts(source: str | Path | bytes, name: str | None = None, grid: int | None = None) -> pd.DataFrame:
    """Read a per-image pixel-count table (the seed's Kaggle prediction format).

    Format: tab-separated (optionally .xz or .gz compressed), header ``file  lv_pixels  my_pixels``;
    ``file`` ends in ``<series>/<series>-frame<FFF>-slice<SSS>.png``; counts are non-negative
    integers (``1430.0`` is accepted) in the prediction grid, at most :data:`MAX_PIXELS`, and when
    ``grid`` is given ``lv_pixels + my_pixels`` of one image is at most ``grid * grid`` (an image of
    a grid x grid prediction has no more pixels).

    Args:
        source: path or the file's bytes.
        name: name used in error messages (default: the path).
        grid: side of the square prediction grid in pixels, or None (then only :data:`MAX_PIXELS`
            bounds a count).

    Returns:
        DataFrame with columns series (str), frame (int), slice (int), lv_pixels, my_pixels (int64).

    Raises:
        VolumeTrackError: not a table (a row with too few or too many fields, bad UTF-8), a column
            named twice, missing columns, unparseable file names, negative, fractional or missing
            counts, counts above :data:`MAX_PIXELS` or (``grid`` given) more LV + MY pixels than
            ``grid * grid``, duplicate images (each problem names the file and the first offending rows).
    """
    data, name = _source_bytes(source, name)
    df = _read_tsv(data, name)
    need = {"file", "lv_pixels", "my_pixels"}
    if not need <= set(df.columns):
        raise VolumeTrackError(f"{name}: columns {sorted(need - set(df.columns))} missing (has {list(df.columns)}); "
                               "expected a header 'file<TAB>lv_pixels<TAB>my_pixels'")
    parts = _file_parts(df["file"])
    bad = parts["series"].isna() | (parts["series"] != parts["series2"])
    if bad.any():
        ex = ", ".join(df.loc[bad, "file"].astype(str).head(3))
        raise VolumeTrackError(f"{name}: {int(bad.sum())} file name(s) not of the form "
                               f"<series>/<series>-frameFFF-sliceSSS.png (e.g. {ex})")
    out = pd.DataFrame({"series": parts["series"].astype(str), "frame": parts["frame"].astype(np.int64),
                        "slice": parts["slice"].astype(np.int64)})
    for c in ("lv_pixels", "my_pixels"):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
        badv = ~np.isfinite(v) | (v < 0) | (v != np.round(v))
        if badv.any():
            ex = ", ".join(df.loc[badv, "file"].astype(str).head(3))
            raise VolumeTrackError(f"{name}: {int(badv.sum())} row(s) with a missing, negative or fractional "
                                   f"{c} (e.g. {ex}); counts must be whole numbers of pixels")
        big = v > MAX_PIXELS  # checked before the cast: 1e300 would not fit an int64
        if big.any():
            ex = ", ".join(df.loc[big, "file"].astype(str).head(3))
            raise VolumeTrackError(f"{name}: {int(big.sum())} row(s) with {c} above {MAX_PIXELS} (e.g. {ex}); "
                                   "counts must be pixels of one image of the prediction grid")
        out[c] = v.astype(np.int64)
    if grid is not None:
        check_pixel_grid(out, grid, name)
    dup = out.duplicated(["series", "frame", "slice"], keep=False)
    if dup.any():
        ex = ", ".join(df.loc[dup, "file"].astype(str).head(4))
        raise VolumeTrackError(f"{name}: {int(dup.sum())} rows give the same image twice (e.g. {ex}); keep one row "
                               "per image")
    return out


def check_pixel_grid(counts: pd.DataFrame, grid: int, name: str) -> None:
    """Refuse images with more LV + MY pixels than a ``grid`` x ``grid`` prediction has.

    Args:
        counts: :func:`read_pixel_counts` output (columns series, frame, slice, lv_pixels, my_pixels).
        grid: side of the square prediction grid in pixels.
        name: the table's name in the message.

    Raises:
        VolumeTrackError: one line naming the table, how many rows, the first three images and the fix.
    """
    cap = int(grid) * int(grid)
    over = (counts["lv_pixels"] + counts["my_pixels"]).to_numpy() > cap
    if over.any():
        bad = counts.loc[over].head(3)
        ex = ", ".join(f"{s}/{s}-frame{f:03d}-slice{sl:03d}.png"
                       for s, f, sl in zip(bad["series"], bad["frame"], bad["slice"]))
        raise VolumeTrackError(f"{name}: {int(over.sum())} row(s) with lv_pixels + my_pixels above {cap}, the "
                               f"pixels of a {grid}x{grid} grid (e.g. {ex}); give counts of one image in the "
                               "prediction grid, or the grid they were predicted on (--grid)")


def read_volume_table(source: str | Path | bytes, name: str | None = None) -> pd.DataFrame:
    """Read per-series volumes (ukbb_cardiac's ``eval_ventricular_volume.py`` output format).

    Format: CSV whose first column is the series and which has ``LVEDV (mL)`` and ``LVESV (mL)``
    (``LVM (g)`` optional).

    Returns:
        DataFrame series, edv, esv, lvm (mL, mL, g; lvm NaN when absent).

    Raises:
        VolumeTrackError: columns missing or values not numbers.
    """
    data, name = _source_bytes(source, name)
    df = pd.read_csv(io.BytesIO(data), dtype={0: str})
    df = df.rename(columns={df.columns[0]: "series"})
    need = ["LVEDV (mL)", "LVESV (mL)"]
    if not set(need) <= set(df.columns):
        raise VolumeTrackError(f"{name}: columns {need} are needed (has {list(df.columns)})")
    out = pd.DataFrame({"series": df["series"].astype(str)})
    for src, dst in (("LVEDV (mL)", "edv"), ("LVESV (mL)", "esv"), ("LVM (g)", "lvm")):
        v = pd.to_numeric(df[src], errors="coerce") if src in df.columns else pd.Series(np.nan, index=df.index)
        if src != "LVM (g)" and v.isna().any():
            raise VolumeTrackError(f"{name}: {int(v.isna().sum())} row(s) without a number in {src!r}")
        out[dst] = v.to_numpy(np.float64)
    if out["series"].duplicated().any():
        raise VolumeTrackError(f"{name}: series listed twice: {sorted(out.loc[out['series'].duplicated(), 'series'])[:5]}")
    return out


def read_dimensions(data: bytes, name: str = DIMENSIONS) -> pd.DataFrame:
    """``patient_dimensions.tsv``: series -> X, Y (pixels), pixel spacing x/y, slice spacing (mm), scale factor."""
    df = pd.read_csv(io.BytesIO(data), sep="\t", dtype={"pid": str})
    need = {"pid", "X", "Y", "pixelSpacingX", "pixelSpacingY", "sliceSpacing", "scaleFactor"}
    if not need <= set(df.columns):
        raise VolumeTrackError(f"{name}: columns {sorted(need - set(df.columns))} missing")
    return df.set_index("pid")


def read_truth(sources: dict[str, bytes]) -> pd.DataFrame:
    """The released volumes: one row per patient with subject, split, edv, esv (mL), ef (%).

    Args:
        sources: split -> bytes of ``train.csv`` / ``validate.csv`` (Id, Systole, Diastole) and
            ``solution.csv`` (Id ``<n>_Diastole``/``<n>_Systole``, Volume).

    Raises:
        VolumeTrackError: a patient twice, or a volume missing.
    """
    frames = []
    for split, data in sources.items():
        df = pd.read_csv(io.BytesIO(data), dtype={"Id": str})
        if {"Systole", "Diastole"} <= set(df.columns):
            t = pd.DataFrame({"subject": df["Id"], "edv": df["Diastole"], "esv": df["Systole"]})
        elif {"Id", "Volume"} <= set(df.columns):
            parts = df["Id"].str.extract(r"^(?P<subject>\d+)_(?P<phase>Diastole|Systole)$")
            if parts["subject"].isna().any():
                raise VolumeTrackError(f"{split} truth: ids not of the form <n>_Diastole / <n>_Systole")
            t = pd.concat([parts, df["Volume"]], axis=1).pivot(index="subject", columns="phase", values="Volume")
            t = pd.DataFrame({"subject": t.index, "edv": t["Diastole"].to_numpy(), "esv": t["Systole"].to_numpy()})
        else:
            raise VolumeTrackError(f"{split} truth: unknown columns {list(df.columns)}")
        t["split"] = split
        frames.append(t)
    truth = pd.concat(frames, ignore_index=True)
    if truth["subject"].duplicated().any():
        raise VolumeTrackError(f"truth: patients listed twice: {sorted(truth.loc[truth['subject'].duplicated(), 'subject'])[:5]}")
    if truth[["edv", "esv"]].isna().any().any():
        raise VolumeTrackError("truth: a released volume is missing")
    truth["ef"] = ejection_fraction(truth["edv"], truth["esv"])
    return truth[["subject", "split", "edv", "esv", "ef"]].reset_index(drop=True)


@dataclass
class KaggleData:
    """The published tables the volume track needs, read and verified once.

    Attributes:
        truth: :func:`read_truth`.
        dimensions: :func:`read_dimensions`.
        images: series -> (number of frames, number of slices) from ``image_list.tsv.xz``.
        image_keys: set of (series, frame, slice) of every curated image.
        confidence: series -> ukbb_cardiac confidence (larger relative volume deviation, fraction).
        inputs: registry path -> sha256 of every file read.
        data_dir: where they were read from.
    """

    truth: pd.DataFrame
    dimensions: pd.DataFrame
    images: pd.DataFrame
    image_keys: pd.MultiIndex
    confidence: pd.Series
    inputs: dict[str, str] = field(default_factory=dict)
    data_dir: str = ""


def load_kaggle_data(data_dir: str | Path | None = None) -> KaggleData:
    """Read the truth, dimensions, image list and confidence tables from ``data_dir`` (sha256-checked).

    Raises:
        FileNotFoundError, IntegrityError, VolumeTrackError: see :func:`read_published`.
    """
    inputs = {}

    def get(p):
        data, _, sha = read_published(p, data_dir)
        inputs[p] = sha
        return data

    truth = read_truth({split: get(p) for split, p in TRUTH.items()})
    dims = read_dimensions(get(DIMENSIONS))
    il = pd.read_csv(io.BytesIO(lzma.decompress(get(IMAGE_LIST))), sep="\t", header=None, names=["pid", "file"],
                     dtype=str)
    parts = _file_parts(il["file"])
    keys = pd.MultiIndex.from_arrays([parts["series"], parts["frame"].astype(np.int64),
                                      parts["slice"].astype(np.int64)], names=["series", "frame", "slice"])
    g = pd.DataFrame({"series": parts["series"], "frame": keys.get_level_values(1),
                      "slice": keys.get_level_values(2)}).groupby("series")
    images = pd.DataFrame({"n_frames": g["frame"].nunique(), "n_slices": g["slice"].nunique()})
    conf = pd.read_csv(io.BytesIO(get(CONFIDENCE)), sep="\t", dtype={"Id": str}).set_index("Id")["confidence"]
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return KaggleData(truth, dims, images, keys, conf, inputs, str(root))


# --- volumes -----------------------------------------------------------------------------------

def pixel_area_mm2(dimensions: pd.DataFrame, grid: int) -> pd.Series:
    """Area of one prediction-grid pixel per series (mm^2): psx x psy x (max(X, Y) / grid)^2."""
    if grid is None or int(grid) <= 0:
        raise ValueError(f"grid must be a positive number of pixels, got {grid!r}")
    mx = dimensions[["X", "Y"]].max(axis=1).astype(np.float64)
    return dimensions["pixelSpacingX"] * dimensions["pixelSpacingY"] * (mx / float(grid)) ** 2


def series_dimensions(series: list[str], dimensions: pd.DataFrame, name: str = "pixel table") -> pd.DataFrame:
    """Dimensions of each series; a ``<id>_rot90`` series takes those of ``<id>`` with X/Y and spacings swapped.

    ``patient_dimensions.tsv`` lists the curated series before rotation; the rotated copy has the
    same pixels turned by 90 degrees (rows and columns exchanged) and the same slices.

    Raises:
        VolumeTrackError: a series (or the original of a rotated series) without dimensions.
    """
    base = [s[: -len("_rot90")] if s.endswith("_rot90") else s for s in series]
    missing = sorted({b for b in base if b not in dimensions.index})
    if missing:
        raise VolumeTrackError(f"{name}: {len(missing)} series have no entry in {DIMENSIONS} "
                               f"(e.g. {', '.join(missing[:5])}); series names must be the curated ones")
    d = dimensions.loc[base].copy()
    d.index = pd.Index(series, name="series")
    rot = np.array([s.endswith("_rot90") for s in series])
    for a, b in (("X", "Y"), ("pixelSpacingX", "pixelSpacingY")):
        va, vb = d[a].to_numpy().copy(), d[b].to_numpy().copy()
        d.loc[rot, a], d.loc[rot, b] = vb[rot], va[rot]
    return d


def frame_volumes_from_pixels(counts: pd.DataFrame, dimensions: pd.DataFrame, grid: int,
                              name: str = "pixel table") -> pd.DataFrame:
    """LV and MY volume per (series, frame) in mL from per-image pixel counts.

    Args:
        counts: :func:`read_pixel_counts` output.
        dimensions: :func:`read_dimensions` output (indexed by series).
        grid: side of the square prediction grid (pixels).
        name: for error messages.

    Returns:
        DataFrame series, frame, n_slices, lv_ml, my_ml.

    Raises:
        VolumeTrackError: a series without dimensions.
    """
    dims = series_dimensions(sorted(map(str, counts["series"].unique())), dimensions, name)
    area = pixel_area_mm2(dims, grid)
    g = counts.groupby(["series", "frame"], sort=True).agg(lv=("lv_pixels", "sum"), my=("my_pixels", "sum"),
                                                            n_slices=("slice", "size")).reset_index()
    ml = (area.reindex(g["series"]).to_numpy() * dims["sliceSpacing"].reindex(g["series"]).to_numpy()) / 1000.0
    g["lv_ml"] = g["lv"].to_numpy(np.float64) * ml
    g["my_ml"] = g["my"].to_numpy(np.float64) * ml
    return g[["series", "frame", "n_slices", "lv_ml", "my_ml"]]


def series_indices(frame_vols: pd.DataFrame) -> pd.DataFrame:
    """EDV, ESV (largest and smallest LV volume over frames), EF and LV mass per series.

    Ties go to the earliest frame. Returns DataFrame series, n_frames, ed_frame, es_frame, edv,
    esv (mL), ef (%), lvm (g: MY volume at the ED frame x 1.05 g/mL).
    """
    fv = frame_vols.sort_values(["series", "frame"], kind="stable").reset_index(drop=True)
    g = fv.groupby("series", sort=True)
    ed_idx = g["lv_ml"].idxmax()
    es_idx = g["lv_ml"].idxmin()
    out = pd.DataFrame({
        "series": ed_idx.index, "n_frames": g.size().to_numpy(),
        "ed_frame": fv.loc[ed_idx.to_numpy(), "frame"].to_numpy(), "es_frame": fv.loc[es_idx.to_numpy(), "frame"].to_numpy(),
        "edv": fv.loc[ed_idx.to_numpy(), "lv_ml"].to_numpy(), "esv": fv.loc[es_idx.to_numpy(), "lv_ml"].to_numpy(),
        "lvm": fv.loc[ed_idx.to_numpy(), "my_ml"].to_numpy() * MYOCARDIAL_DENSITY_G_PER_ML,
    })
    out["ef"] = ejection_fraction(out["edv"], out["esv"])
    return out


def resolve_series(series: pd.Series | list[str], rule: str = "cardbench") -> pd.DataFrame:
    """Map curated series to the rows that are scored (see the module docstring).

    Args:
        series: the series a submission covers.
        rule: ``cardbench`` or ``seed``.

    Returns:
        DataFrame series, subject, row (the id of the scored row: the patient under ``cardbench``,
        the series under ``seed``); series not used (the unrotated copy of a rotated series) are
        absent.

    Raises:
        ValueError: unknown rule. VolumeTrackError: a malformed series name.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use {' or '.join(RULES)}")
    recs = []
    for s in sorted(set(map(str, series))):
        subj, rep, rot = parse_series(s)
        recs.append({"series": s, "subject": subj, "rep": rep or "", "rot": rot})
    df = pd.DataFrame.from_records(recs, columns=["series", "subject", "rep", "rot"])
    if df.empty:
        return pd.DataFrame(columns=["series", "subject", "row"])
    # the rotated copy replaces the original of the same (patient, repeat)
    has_rot = df.groupby(["subject", "rep"])["rot"].transform("any")
    df = df[df["rot"] | ~has_rot]
    df = df.assign(row=df["subject"] if rule == "cardbench" else df["series"])
    return df[["series", "subject", "row"]].reset_index(drop=True)


def score_series(indices: pd.DataFrame, truth: pd.DataFrame, rule: str = "cardbench",
                 confidence: pd.Series | None = None, cutoff: int | None = None,
                 n_slices: pd.Series | None = None) -> pd.DataFrame:
    """Per-row comparison of predicted and released volumes.

    Args:
        indices: per-series EDV, ESV (and optionally ed_frame, es_frame, lvm, n_frames).
        truth: :func:`read_truth`.
        rule: see :func:`resolve_series`.
        confidence: series -> ukbb_cardiac confidence; with ``cutoff`` marks the rows whose series
            were in the model's training data (confidence <= cutoff %).
        n_slices: series -> number of slices (reported).

    Returns:
        one row per scored row with: row, subject, split, series (``+``-joined when averaged),
        n_series, n_slices, ed_frame, es_frame, edv_ref, esv_ref, ef_ref, edv_pred, esv_pred,
        ef_pred, lvm_pred, ef_abs_diff (worst case 100 where undefined), in_training, status
        (``ok`` | ``pred_undefined`` | ``missing``: a patient of the truth without any series).
    """
    res = resolve_series(indices["series"], rule)
    ix = indices.set_index("series")
    m = res.join(ix, on="series")
    if n_slices is not None:
        m["n_slices"] = n_slices.reindex(m["series"]).to_numpy()
    if confidence is not None and cutoff is not None:
        m["in_training"] = confidence.reindex(m["series"]).to_numpy() <= cutoff / 100.0
    else:
        m["in_training"] = False
    for c in ("ed_frame", "es_frame", "lvm", "n_slices"):
        if c not in m.columns:
            m[c] = np.nan
    g = m.groupby("row", sort=False)
    rows = pd.DataFrame({
        "subject": g["subject"].first(), "series": g["series"].agg("+".join), "n_series": g.size(),
        "n_slices": g["n_slices"].mean(), "edv_pred": g["edv"].mean(), "esv_pred": g["esv"].mean(),
        "lvm_pred": g["lvm"].mean(), "in_training": g["in_training"].any(),
        "ed_frame": g["ed_frame"].first().where(g.size() == 1), "es_frame": g["es_frame"].first().where(g.size() == 1),
    }).reset_index()
    rows["ef_pred"] = ejection_fraction(rows["edv_pred"], rows["esv_pred"])
    t = truth.rename(columns={"edv": "edv_ref", "esv": "esv_ref", "ef": "ef_ref"})
    out = rows.merge(t, on="subject", how="right" if rule == "cardbench" else "left")
    out["row"] = out["row"].fillna(out["subject"])
    out["status"] = np.where(out["edv_pred"].isna(), "missing",
                             np.where(out["ef_pred"].isna(), "pred_undefined", "ok"))
    d = (out["ef_pred"] - out["ef_ref"]).abs()
    out["ef_abs_diff"] = d.where(out["status"] == "ok", EF_WORST)
    out["in_training"] = out["in_training"].fillna(False).astype(bool)
    cols = ["row", "subject", "split", "series", "n_series", "n_slices", "ed_frame", "es_frame", "edv_ref", "esv_ref",
            "ef_ref", "edv_pred", "esv_pred", "ef_pred", "lvm_pred", "ef_abs_diff", "in_training", "status"]
    out["ed_frame"] = out["ed_frame"].astype("Int64")
    out["es_frame"] = out["es_frame"].astype("Int64")
    out["n_series"] = out["n_series"].astype("Int64")
    key = out["subject"].astype(int) * 10 + out["row"].str.endswith("_b").astype(int)
    return out.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")[cols].reset_index(drop=True)


def ef_error_summary(ef_abs_diff) -> dict[str, float]:
    """mean, SD (ddof 1), median, IQR (75th - 25th percentile, linear) and n of EF absolute differences."""
    x = np.asarray(ef_abs_diff, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "mean": np.nan, "sd": np.nan, "median": np.nan, "iqr": np.nan}
    q1, q3 = np.quantile(x, [0.25, 0.75])
    return {"n": int(x.size), "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else np.nan,
            "median": float(np.median(x)), "iqr": float(q3 - q1)}


def _long(table: pd.DataFrame) -> pd.DataFrame:
    """Per-row table -> clinical-style long table (index LVEDV, LVESV, LVEF) for agreement statistics."""
    parts = []
    for ix, unit, c in (("LVEDV", "mL", "edv"), ("LVESV", "mL", "esv"), ("LVEF", "%", "ef")):
        parts.append(pd.DataFrame({"subject": table["row"], "split": table["split"], "index": ix, "unit": unit,
                                   "ref": table[f"{c}_ref"], "pred": table[f"{c}_pred"]}))
    return pd.concat(parts, ignore_index=True)


@dataclass
class VolumeTrackResult:
    """Scores of one volume-track submission.

    Attributes:
        summary: JSON-ready dict (see :meth:`write`).
        per_subject: :func:`score_series` output.
        agreement: agreement table of LVEDV, LVESV, LVEF (:func:`cardbench.benchmark.stats.agreement_table`).
    """

    summary: dict
    per_subject: pd.DataFrame
    agreement: pd.DataFrame

    def write(self, out: str | Path, overwrite: bool = True) -> Path:
        """Write ``summary.json``, ``per_subject.csv`` and ``agreement.csv`` atomically into ``out``."""
        from cardbench._util import atomic_dir
        from cardbench.benchmark.results import to_json

        out = Path(out)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            (tmp / "summary.json").write_text(to_json(self.summary) + "\n", encoding="utf-8")
            self.per_subject.to_csv(tmp / "per_subject.csv", index=False, float_format="%.6g")
            self.agreement.to_csv(tmp / "agreement.csv", index=False, float_format="%.6g")
        return out


def _summarise(table: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """EF-error summary per group with bootstrap 95 % CIs (rows resampled, as :mod:`cardbench.benchmark.stats`)."""
    from cardbench.benchmark.aggregate import bootstrap_ci
    from cardbench.benchmark.stats import bootstrap_stat_ci

    groups = {"all": table}
    for s in ("train", "validate", "test"):
        groups[f"split={s}"] = table[table["split"] == s]
    if table["in_training"].any():
        groups["not_in_training"] = table[~table["in_training"]]
    stats = {"sd": lambda v: v.std(axis=1, ddof=1), "median": lambda v: np.median(v, axis=1),
             "iqr": lambda v: np.subtract(*np.quantile(v, [0.75, 0.25], axis=1))}
    out = {}
    for k, g in groups.items():
        x = g["ef_abs_diff"].to_numpy(np.float64)
        x = x[np.isfinite(x)]
        e = ef_error_summary(x)
        e["n_worst_case"] = int((g["status"] != "ok").sum())
        e["mean_ci_low"], e["mean_ci_high"] = bootstrap_ci(x, n_boot, seed) if x.size else (np.nan, np.nan)
        for name, fn in stats.items():
            e[f"{name}_ci_low"], e[f"{name}_ci_high"] = bootstrap_stat_ci(fn, [x], n_boot, seed)
        out[k] = e
    return out


def score_volume_track(indices: pd.DataFrame, kaggle: KaggleData, *, name: str, rule: str = "cardbench",
                       cutoff: int | None = None, n_boot: int = 2000, seed: int = 20210421,
                       inputs: dict | None = None, method: dict | None = None) -> VolumeTrackResult:
    """Score per-series volumes against the released volumes.

    Args:
        indices: per-series EDV/ESV (:func:`series_indices` or :func:`read_volume_table`).
        kaggle: :func:`load_kaggle_data`.
        name: submission name.
        rule: series resolution rule (:data:`RULES`).
        cutoff: the model's training confidence cutoff in % (marks ``in_training``), or None.
        n_boot, seed: subject bootstrap of the agreement CIs.
        inputs: extra input files (path -> sha256) recorded in the summary.
        method: how the volumes were obtained (recorded).

    Returns:
        :class:`VolumeTrackResult`. Summary keys: ``track`` ("kaggle-volumes"), ``submission``,
        ``rule`` (name and text), ``volume_method``, ``ef_abs_diff`` (group -> n, mean, sd, median,
        iqr in percentage points, each with ``_ci_low``/``_ci_high`` (bootstrap over rows),
        n_worst_case; groups all, split=train|validate|test, not_in_training), ``agreement`` (records as in ``clinical.agreement`` of a score summary:
        LVEDV, LVESV in mL, LVEF in %; EF pairs with an undefined prediction are excluded and
        counted), ``counts``, ``bootstrap``, ``inputs`` (sha256), ``cardbench_version``.
    """
    from cardbench.benchmark.stats import agreement_table

    table = score_series(indices, kaggle.truth, rule, kaggle.confidence, cutoff, kaggle.images["n_slices"])
    agree = agreement_table(_long(table), n_boot=n_boot, seed=seed)
    used = table["series"].dropna().str.split("+").explode()
    summary = {
        "cardbench_version": __version__,
        "track": "kaggle-volumes",
        "dataset": {"name": DATASET, "part": "Second Annual Data Science Bowl released volumes (1140 patients)",
                    "path": kaggle.data_dir},
        "submission": {"name": name, **({"training_confidence_cutoff_percent": cutoff} if cutoff else {})},
        "rule": {"name": rule, "text": _RULE_TEXT[rule]},
        "volume_method": method or {},
        "ef_abs_diff": _summarise(table, n_boot, seed),
        "agreement": agree.to_dict(orient="records"),
        "counts": {"rows": int(len(table)), "patients": int(table["subject"].nunique()),
                   "series_used": int(used.nunique()), "status": table["status"].value_counts().to_dict()},
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "row (patient under rule cardbench)",
                      "interval": "95 % percentile"},
        "inputs": {**kaggle.inputs, **(inputs or {})},
        "units": {"edv": "mL", "esv": "mL", "ef": "%", "lvm": "g", "ef_abs_diff": "percentage points"},
    }
    return VolumeTrackResult(summary, table, agree)


_FORMULA = ("LV volume per frame = sum(lv_pixels) x pixelSpacingX x pixelSpacingY x (max(X, Y) / grid)^2 x "
            "sliceSpacing / 1000 mL; ED/ES = frames of largest/smallest LV volume; LV mass = MY volume at ED x "
            "1.05 g/mL")

_RULE_TEXT = {
    "cardbench": ("one row per patient; the _rot90 series where it exists; repeated acquisitions (_a, _b): mean EDV "
                  "and mean ESV of the series, EF from the means; undefined predicted EF counts as 100 points "
                  "in the EF error table and is excluded (counted) from agreement statistics"),
    "seed": ("as the seed's prediction_vs_gt tables: the _rot90 series where it exists; each repeated acquisition "
             "(_a, _b) its own row against the patient's released volumes; undefined predicted EF counts as "
             "100 points"),
}


def check_complete(counts: pd.DataFrame, kaggle: KaggleData, name: str, allow_missing: bool = False) -> list[str]:
    """Check that a pixel table predicts every curated image exactly once.

    Returns:
        notes (missing series when ``allow_missing``).

    Raises:
        VolumeTrackError: images not in the curated list; missing images (unless ``allow_missing``,
            where only whole missing series are allowed).
    """
    keys = pd.MultiIndex.from_frame(counts[["series", "frame", "slice"]])
    extra = keys.difference(kaggle.image_keys)
    if len(extra):
        ex = ", ".join(f"{s}/frame{f:03d}/slice{sl:03d}" for s, f, sl in list(extra)[:3])
        raise VolumeTrackError(f"{name}: {len(extra)} image(s) are not among the curated Kaggle images "
                               f"({IMAGE_LIST}), e.g. {ex}; name files as in that list")
    missing = kaggle.image_keys.difference(keys)
    notes = []
    if len(missing):
        ms = pd.Index(missing.get_level_values(0)).unique()
        partial = sorted(set(ms) & set(counts["series"].unique()))
        if partial or not allow_missing:
            what = (f"{len(partial)} series are incomplete (e.g. {', '.join(partial[:5])})" if partial
                    else f"{len(ms)} series have no prediction (e.g. {', '.join(sorted(ms)[:5])})")
            raise VolumeTrackError(f"{name}: {len(missing)} curated image(s) have no row: {what}. Predict every "
                                   "image of a series (a volume needs all its slices); pass --allow-missing to "
                                   "score patients without any series as missing")
        notes.append(f"{len(ms)} series without prediction")
    return notes


def score_pixel_table(source: str | Path | bytes, kaggle: KaggleData, *, grid: int = 256, name: str | None = None,
                      rule: str = "cardbench", cutoff: int | None = None, allow_missing: bool = False,
                      n_boot: int = 2000, seed: int = 20210421,
                      counts: pd.DataFrame | None = None) -> VolumeTrackResult:
    """Score one per-image pixel-count table (``file, lv_pixels, my_pixels``) on the Kaggle volume track.

    Args:
        source: path or bytes of the table (.tsv, .tsv.xz, .tsv.gz).
        kaggle: :func:`load_kaggle_data`.
        grid: side of the square prediction grid in pixels (the image's longer side was resized
            to it, the shorter padded).
        name: submission name (default: the file stem).
        rule, cutoff, n_boot, seed: see :func:`score_volume_track`.
        allow_missing: patients without any predicted series are scored as missing (EF error 100).
        counts: the table already read by :func:`read_pixel_counts` with this ``grid`` (the CLI
            checks the table before it loads the Kaggle data); None reads ``source``.

    Raises:
        VolumeTrackError: bad table (see :func:`read_pixel_counts`, :func:`check_complete`).
    """
    label = name or (Path(source).name.split(".")[0] if not isinstance(source, (bytes, bytearray)) else "submission")
    where = str(source) if not isinstance(source, (bytes, bytearray)) else label
    if counts is None:
        counts = read_pixel_counts(source, where)
    check_pixel_grid(counts, grid, where)
    notes = check_complete(counts, kaggle, where, allow_missing)
    fv = frame_volumes_from_pixels(counts, kaggle.dimensions, grid, where)
    ind = series_indices(fv)
    method = {"input": "per-image pixel counts", "grid": grid, "formula": _FORMULA, "notes": notes}
    from cardbench._util import sha256_bytes, sha256_file

    sha = sha256_bytes(bytes(source)) if isinstance(source, (bytes, bytearray)) else sha256_file(source)
    return score_volume_track(ind, kaggle, name=label, rule=rule, cutoff=cutoff, n_boot=n_boot, seed=seed,
                              inputs={where: sha}, method=method)


def published_model_indices(model: KaggleModel, kaggle: KaggleData,
                            data_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict, dict]:
    """Per-series EDV, ESV of one of the seed's published submissions (:data:`PUBLISHED_MODELS`).

    Returns:
        (indices, inputs {registry path: sha256}, method description).
    """
    data, where, sha = read_published(model.path, data_dir)
    if model.grid is None:
        method = {"input": "per-series volumes reported by ukbb_cardiac (eval_ventricular_volume.py)"}
        return read_volume_table(data, where), {model.path: sha}, method
    counts = read_pixel_counts(data, where)
    check_complete(counts, kaggle, where)
    ind = series_indices(frame_volumes_from_pixels(counts, kaggle.dimensions, model.grid, where))
    method = {"input": "per-image pixel counts", "grid": model.grid, "formula": _FORMULA}
    return ind, {model.path: sha}, method


def score_published_model(model: KaggleModel, kaggle: KaggleData, rule: str = "cardbench",
                          data_dir: str | Path | None = None, n_boot: int = 2000,
                          seed: int = 20210421) -> VolumeTrackResult:
    """Score one of the seed's published volume-track submissions (:data:`PUBLISHED_MODELS`)."""
    ind, inputs, method = published_model_indices(model, kaggle, data_dir)
    return score_volume_track(ind, kaggle, name=model.label, rule=rule, cutoff=model.confidence, n_boot=n_boot,
                              seed=seed, inputs=inputs, method=method)


def reproduce_kaggle_volumes(data_dir: str | Path | None = None, n_boot: int = 2000, seed: int = 20210421,
                             progress: bool = True) -> tuple[pd.DataFrame, dict[tuple[str, str], VolumeTrackResult]]:
    """Score the seed's ten U-Nets and ukbb_cardiac on the volume track under both rules.

    Returns:
        (table, results). The table has one row per model: model, label, published_mean/sd/median/
        iqr, seed_n/mean/sd/median/iqr (rule ``seed``), match (all four equal the published values
        at 2 decimals; NA without a published row), cardbench_n/mean/sd/median/iqr, cardbench
        mean's 95 % CI (``cardbench_mean_ci_low/high``: bootstrap of the mean EF absolute
        difference over patients), bias/LoA of EF, and the EF error on patients the model was not
        trained on (``heldout_n``, ``heldout_mean``). results: (label, rule) -> VolumeTrackResult.
    """
    from cardbench._progress import progress as _progress

    kaggle = load_kaggle_data(data_dir)
    results: dict[tuple[str, str], VolumeTrackResult] = {}
    recs = []
    # a bar in a terminal, a line per 10 % of the models in a log (after 5 s: a quick run prints none)
    with _progress(len(PUBLISHED_MODELS), "kaggle volume track", enabled=progress, quiet_for=5.0) as bar:
        for model in PUBLISHED_MODELS:
            rec = {"model": model.key, "label": model.label}
            pub = model.published or (np.nan,) * 4
            rec.update(dict(zip(["published_mean", "published_sd", "published_median", "published_iqr"], pub)))
            ind, inputs, method = published_model_indices(model, kaggle, data_dir)
            for rule in ("seed", "cardbench"):
                r = score_volume_track(ind, kaggle, name=model.label, rule=rule, cutoff=model.confidence,
                                       n_boot=n_boot, seed=seed, inputs=inputs, method=method)
                results[(model.label, rule)] = r
                e = r.summary["ef_abs_diff"]["all"]
                for k in ("n", "mean", "sd", "median", "iqr"):
                    rec[f"{rule}_{k}"] = e[k]
            if model.published:
                got = tuple(round(rec[f"seed_{k}"] + 1e-9, 2) for k in ("mean", "sd", "median", "iqr"))
                rec["match"] = got == tuple(round(v, 2) for v in model.published)
            else:
                rec["match"] = None
            cb = results[(model.label, "cardbench")]
            e = cb.summary["ef_abs_diff"]["all"]
            rec["cardbench_mean_ci_low"], rec["cardbench_mean_ci_high"] = e["mean_ci_low"], e["mean_ci_high"]
            ef = cb.agreement[(cb.agreement["index"] == "LVEF") & (cb.agreement["grouping"] == "all")].iloc[0]
            rec["ef_bias"], rec["ef_loa_low"], rec["ef_loa_high"] = ef["bias"], ef["loa_low"], ef["loa_high"]
            held = cb.summary["ef_abs_diff"].get("not_in_training", cb.summary["ef_abs_diff"]["all"])
            rec["heldout_n"], rec["heldout_mean"] = held["n"], held["mean"]
            recs.append(rec)
            bar.advance()
    return pd.DataFrame.from_records(recs), results


def choice_sensitivity(model_key: str = "resnet34_5percent_size256_normalTfms_ceLoss",
                       data_dir: str | Path | None = None, kaggle: KaggleData | None = None) -> pd.DataFrame:
    """How each choice of the volume computation changes the scores of one published model.

    Variants (each changes one thing from rule ``cardbench`` unless stated):

    - ``seed rule``: rule ``seed`` (1149 rows; the seed's README table);
    - ``cardbench rule``: one row per patient, ``_a``/``_b`` averaged;
    - ``repeats: _a only`` / ``repeats: _b only``: the first / second acquisition instead of the mean;
    - ``unrotated series``: the original series instead of its ``_rot90`` copy (247 patients);
    - ``scaleFactor applied again``: volumes divided by scaleFactor^2 (the curated spacing already
      includes it; shown to make the consequence of double-counting visible);
    - ``grid factor ignored``: without ``(max(X, Y) / grid)^2``.

    Returns:
        DataFrame variant, n, ef_mean, ef_sd, ef_median, ef_iqr (EF absolute difference, points),
        edv_bias, edv_mae (mL; prediction - released).
    """
    model = next((m for m in PUBLISHED_MODELS if m.key == model_key), None)
    if model is None or model.grid is None:
        raise ValueError(f"{model_key}: not one of the published pixel-count models "
                         f"({', '.join(m.key for m in PUBLISHED_MODELS if m.grid)})")
    kaggle = kaggle or load_kaggle_data(data_dir)
    data, where, _ = read_published(model.path, data_dir)
    counts = read_pixel_counts(data, where)
    base = series_indices(frame_volumes_from_pixels(counts, kaggle.dimensions, model.grid, where))
    series = base["series"]
    dims = series_dimensions(list(series), kaggle.dimensions)
    variants: list[tuple[str, pd.DataFrame, str]] = [
        ("seed rule", base, "seed"),
        ("cardbench rule", base, "cardbench"),
        ("repeats: _a only", base[~series.str.contains("_b")], "cardbench"),
        ("repeats: _b only", base[~series.str.contains("_a")], "cardbench"),
        ("unrotated series", base[~series.str.endswith("_rot90")], "cardbench"),
    ]
    sf2 = dims["scaleFactor"].reindex(series).to_numpy() ** 2
    variants.append(("scaleFactor applied again", base.assign(edv=base["edv"] / sf2, esv=base["esv"] / sf2), "cardbench"))
    gf = (dims[["X", "Y"]].max(axis=1).reindex(series).to_numpy() / model.grid) ** 2
    variants.append(("grid factor ignored", base.assign(edv=base["edv"] / gf, esv=base["esv"] / gf), "cardbench"))
    recs = []
    for name, ind, rule in variants:
        t = score_series(ind, kaggle.truth, rule)
        e = ef_error_summary(t["ef_abs_diff"])
        d = (t["edv_pred"] - t["edv_ref"]).dropna()
        recs.append({"variant": name, "n": e["n"], "ef_mean": e["mean"], "ef_sd": e["sd"], "ef_median": e["median"],
                     "ef_iqr": e["iqr"], "edv_bias": float(d.mean()), "edv_mae": float(d.abs().mean())})
    return pd.DataFrame.from_records(recs)
