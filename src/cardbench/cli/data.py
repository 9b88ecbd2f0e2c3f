"""``cardbench data ...``: dataset cards, download (pooch or DataLad), verification, splits, release.

A thin layer over :mod:`cardbench.datasets.cards`, :mod:`~cardbench.datasets.fetch`,
:mod:`~cardbench.datasets.splits` and :mod:`~cardbench.datasets.release`. ``data_app`` is the Typer
sub-app; other modules add commands to it (``cardbench data prepare`` lives in
``cli/data_prepare.py``, imported at the end of this file when present).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cardbench.cli import app
from cardbench.cli import errors as _errors

data_app = typer.Typer(
    name="data",
    help="Dataset cards, download (pooch or DataLad) and verification, standard splits, DataLad release.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def _fail(msg: str, code: int = 1) -> None:
    _errors.fail(msg, code)  # one escaped line; exit codes in cardbench.cli.errors


def _card(name: str):
    from cardbench.datasets.cards import CardError, load_card

    try:
        return load_card(name)
    except KeyError as e:
        _fail(str(e.args[0]) if e.args else str(e), 2)
    except CardError as e:
        _fail(str(e), 1)


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{n} B"  # pragma: no cover


class Backend(str, Enum):
    pooch = "pooch"
    datalad = "datalad"


CACHE_OPT = typer.Option(None, "--cache", help="Cache folder (default: $CARDBENCH_DATA, else the platform cache "
                         "folder).", show_default=False)


@data_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered datasets: version, access, files and size, split."""
    from cardbench.datasets.cards import CardError, list_cards, load_card

    rows = []
    for n in list_cards():
        try:
            c = load_card(n)
        except CardError as e:
            err.print(f"[yellow]warning:[/yellow] {escape(str(e))}", highlight=False, soft_wrap=True)
            continue
        rows.append({"name": c.name, "version": c.version, "access": c.access, "license": c.license,
                     "files": len(c.files), "bytes": c.total_bytes,
                     "split": {k: len(v) for k, v in c.splits.items()}, "title": c.title})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich import box

    t = Table(title="cardbench datasets (`cardbench data info NAME` shows the card)", box=box.SIMPLE_HEAD,
              pad_edge=False)
    t.add_column("name version", no_wrap=True)
    t.add_column("access", no_wrap=True)
    t.add_column("files (size)", justify="right", no_wrap=True)
    t.add_column("train/val/test", justify="right", no_wrap=True)
    for r in rows:
        t.add_row(f"{r['name']} {r['version']}", r["access"], f"{r['files']} ({_human(r['bytes'])})",
                  "/".join(str(r["split"].get(k, 0)) for k in ("train", "val", "test")) if r["split"] else "-")
    out.print(t)


@data_app.command("info")
def info_cmd(name: str = typer.Argument(..., help="Dataset name (see `cardbench data list`)."),
             cache: Optional[Path] = CACHE_OPT,
             as_json: bool = typer.Option(False, "--json", help="Print the card as JSON.")) -> None:
    """Show a dataset's card: description, license, citation, classes, access, files, split, known issues."""
    from cardbench.datasets.fetch import cache_dir, dataset_path

    c = _card(name)
    if as_json:
        typer.echo(json.dumps(c.raw, indent=2, default=str))
        return
    root = cache_dir(cache)
    n_cached = sum((root / e.local_path).is_file() for e in c.files)
    # printed as text, not soft_wrap: rich wraps every line at the terminal's width (word by word)
    out.print(f"[bold]{c.name}[/bold] {c.version}: {escape(c.title)}", highlight=False)
    out.print(c.description, highlight=False, markup=False)
    kv = [("license", c.license), ("citation", c.citation), ("modality", c.modality),
          ("field strength", c.field_strength), ("label map", str(c.label_map)), ("classes", ", ".join(c.classes)),
          ("annotators", c.annotators + (f" ({c.raw['annotators_note'].strip()})" if c.raw.get("annotators_note")
                                         else "")),
          ("access", c.access),
          ("files", f"{len(c.files)} registry files, {_human(c.total_bytes)} (prefix {', '.join(c.registry_prefix)})"
           if c.files else "none in the registry"),
          ("cache", f"{dataset_path(c, root)} ({n_cached}/{len(c.files)} files present; "
                    f"`cardbench data verify {c.name}` checks them)" if c.files else "-")]
    if c.subjects:
        kv.append(("subjects", str(len(c.subjects))))
    if c.splits:
        kv.append(("split", " / ".join(f"{k} {len(v)}" for k, v in c.splits.items())
                   + f" (splits_version {c.splits_version}; `cardbench data splits {c.name}`)"))
    if c.subsets:
        kv.append(("subsets", ", ".join(c.subsets.get("definitions", {}))))
    t = Table(show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in kv:
        t.add_row(k, v)
    out.print(t)
    if c.access_steps:
        out.print("[bold]Access steps:[/bold]")
        out.print(_hanging([(f"{i}.", s) for i, s in enumerate(c.access_steps, 1)]))
    if c.known_issues:
        out.print("[bold]Known issues:[/bold]")
        out.print(_hanging([("-", s) for s in c.known_issues]))


def _hanging(items: list[tuple[str, str]]) -> Table:
    """Numbered or bulleted items as a grid, so that a long item wraps under its own text."""
    from rich.text import Text

    g = Table.grid(padding=(0, 1))
    g.add_column(justify="right", min_width=3)
    g.add_column(overflow="fold")
    for mark, text in items:
        g.add_row(mark, Text(text))
    return g


def _print_access_steps(c) -> None:
    if c.access == "open":
        return
    err.print(f"[bold yellow]{c.name}: access is '{c.access}'[/bold yellow]: the files above are the public part; "
              "the rest is NOT downloaded automatically. Steps:", highlight=False, soft_wrap=True)
    for i, s in enumerate(c.access_steps, 1):
        err.print(f"  {i}. {s}", highlight=False, soft_wrap=True, markup=False)


@data_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="Dataset name (see `cardbench data list`)."),
    backend: Backend = typer.Option(Backend.pooch, "--backend", help="pooch: download each registry file "
                                    "(sha256-checked). datalad: clone a released DataLad dataset and get its files."),
    source: Optional[str] = typer.Option(None, "--source", help="datalad backend: URL or path of the released "
                                         "DataLad dataset (see `cardbench data release`). With --labels: a local "
                                         "folder holding the DOI files and record.json (no network)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="pooch backend: download from this base URL or "
                                         "local folder holding the registry layout instead of the pinned URLs "
                                         "(default: $CARDBENCH_MIRROR)."),
    cache: Optional[Path] = CACHE_OPT,
    dest: Optional[Path] = typer.Option(None, "--out", help="datalad backend: clone folder (default "
                                        "<cache>/datalad/<name>)."),
    retries: int = typer.Option(3, "--retries", min=0, help="Extra attempts per file after a failed download."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Parallel downloads."),
    labels: bool = typer.Option(False, "--labels", help="Fetch the files the card names under a DOI instead "
                                "(kaggle-dsb-ukbb: the ukbb_cardiac labels on Zenodo, doi:10.5281/zenodo.3876351), "
                                "each checked against the record's checksum. Offline: --source DIR holding the "
                                "files and the record's JSON as record.json."),
) -> None:
    """Download a dataset into the cache and verify every file's sha256 (or clone it with DataLad).

    A file that arrives truncated or with another sha256 is not kept; the error names the file, the
    expected and received sha256 and what to do. Datasets whose access is not open print the exact
    steps for the part that cannot be downloaded automatically. `--labels` fetches the files the
    card names under a DOI (pooch's DOI support; checksums from the record) into <cache>/doi/RECORD.
    """
    c = _card(name)
    if labels and backend == Backend.pooch:
        from cardbench.datasets.doi import DoiIntegrityError, DoiSpecError, DoiUnreachable, fetch_doi_files

        try:
            drep = fetch_doi_files(c, cache=cache, source=source, retries=retries)
        except DoiIntegrityError as e:
            _fail(str(e), 1)
        except DoiSpecError as e:
            _fail(str(e), 2)
        except DoiUnreachable as e:
            _fail(str(e), 1)
        err.print(f"{c.name}: {len(drep.files)} files of doi:{drep.doi} verified (record checksums) in {drep.path}: "
                  f"{len(drep.downloaded)} downloaded ({_human(drep.bytes_downloaded)}) from {drep.source}, "
                  f"{len(drep.cached)} already cached", highlight=False, soft_wrap=True, markup=False)
        typer.echo(str(drep.path))
        return
    if backend == Backend.datalad:
        from cardbench.datasets.release import DataladMissing, ReleaseError, fetch_datalad

        if not source:
            _fail("--backend datalad needs --source URL_OR_PATH of a released DataLad dataset "
                  f"(made with `cardbench data release {name} --out DIR`)", 2)
        try:
            path = fetch_datalad(c.name, source, dest, cache)
        except (DataladMissing, ReleaseError) as e:
            _fail(str(e))
        err.print(f"{c.name}: cloned from {source} and got all files", highlight=False, soft_wrap=True, markup=False)
        typer.echo(str(path))
        return
    if source:
        _fail("--source is for --backend datalad; use --mirror for the pooch backend", 2)
    from cardbench.datasets.fetch import DownloadError, FileIntegrityError, fetch

    try:
        rep = fetch(c, cache=cache, mirror=mirror, retries=retries, jobs=jobs)
    except ValueError as e:  # FileIntegrityError is a ValueError too
        _fail(str(e), 1 if isinstance(e, FileIntegrityError) else 2)
    except DownloadError as e:
        _fail(str(e))
    if not c.files:
        err.print(f"{c.name}: no file of this dataset is in the download registry.", highlight=False, soft_wrap=True, markup=False)
    else:
        msg = (f"{c.name}: {rep.n_files} files verified (sha256) in {rep.path}: {len(rep.downloaded)} downloaded "
               f"({_human(rep.bytes_downloaded)}) from {rep.source}, {len(rep.cached)} already cached")
        if rep.replaced:
            msg += f", {len(rep.replaced)} corrupt cached file(s) replaced"
        err.print(msg, highlight=False, soft_wrap=True, markup=False)
    _print_access_steps(c)
    typer.echo(str(rep.path))


@data_app.command("verify")
def verify_cmd(name: str = typer.Argument(..., help="Dataset name."), cache: Optional[Path] = CACHE_OPT) -> None:
    """Re-hash every cached file of a dataset against the registry (sha256 and size).

    Exit code 0 when every file is present and intact, 1 otherwise (each bad file on one line with the
    expected and found sha256 and the fix).
    """
    from cardbench.datasets.fetch import verify

    c = _card(name)
    if not c.files:
        err.print(f"{c.name}: no file of this dataset is in the download registry; nothing to verify.",
                  highlight=False, soft_wrap=True)
        return
    rep = verify(c, cache=cache)
    if rep.ok:
        err.print(f"{c.name}: all {len(rep.files)} files intact (sha256 matches the registry) in {rep.root}",
                  highlight=False, soft_wrap=True)
        return
    if rep.count("missing") == len(rep.files):
        from cardbench.datasets.embedded import IntegrityError, open_published
        from cardbench.datasets.fetch import embedded_paths

        shipped = embedded_paths()
        if all(e.local_path in shipped for e in c.files):  # nothing in the cache, but cardbench ships it
            bad = []
            for e in c.files:
                try:
                    open_published(e.local_path)  # checks the copy's sha256 against the registry
                except IntegrityError as ex:
                    bad.append(str(ex))
            if bad:
                _fail(f"{c.name}: {len(bad)} of the {len(c.files)} files embedded in cardbench are corrupt "
                      f"({bad[0]}); reinstall cardbench", code=1)
            err.print(f"{c.name}: all {len(c.files)} files embedded in cardbench are intact (sha256 matches the "
                      f"registry); none is in the cache {rep.root} yet (`cardbench data fetch {c.name}` copies "
                      "them there, no network needed)", highlight=False, soft_wrap=True)
            return
        _fail(f"{c.name}: not fetched yet: none of its {len(rep.files)} files is in the cache {rep.root}; run "
              f"`cardbench data fetch {c.name}` first", code=1)
    for line in rep.problems:
        err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    _fail(f"{c.name}: {rep.count('corrupt')} corrupt and {rep.count('missing')} missing of {len(rep.files)} files")


@data_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Dataset name."), cache: Optional[Path] = CACHE_OPT) -> None:
    """Print the dataset's folder in the cache. Before any fetch it exits 0 with a hint on stderr (the
    folder is where the files will be). It checks the files cheaply, by presence and size: when only
    some are there, or one has the wrong size (an incomplete or damaged cache), it exits 1. It reads
    no file: a file of the right size but the wrong content is found by `cardbench data verify NAME`
    (sha256 of every file)."""
    from cardbench.datasets.fetch import cache_sizes, dataset_path

    c = _card(name)
    p = dataset_path(c, cache)
    typer.echo(str(p))
    missing, wrong = cache_sizes(c, cache)
    if missing and len(missing) == len(c.files):
        from cardbench.cli.errors import err_console

        err_console().print(f"hint: {escape(c.name)} is not fetched yet; `cardbench data fetch {escape(c.name)}` "
                            "puts its files there", highlight=False)
    elif wrong:
        _fail(f"{c.name}: {len(wrong)} of {len(c.files)} cached files have the wrong size (first: {wrong[0]}); "
              f"run `cardbench data fetch {c.name}` (it replaces them)", code=1)
    elif missing:
        _fail(f"{c.name}: {len(missing)} of {len(c.files)} files are not in the cache; run `cardbench data fetch "
              f"{c.name}`")


@data_app.command("splits")
def splits_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    subset: Optional[str] = typer.Option(None, "--subset", help="A published training subset (cmr-7t: v7, v3, v1, "
                                         "r7, r3, r1, esed, r_esed): list its images per subject."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the split (subject,split) or the "
                                            "subset's images (case,subject,split) as CSV."),
    freeze: bool = typer.Option(False, "--freeze", help="Maintainers: freeze the card's split as a new versioned "
                                "file with its sha256 in data/splits/SPLITS.tsv."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the standard split of a dataset (versioned, sha256-checked) or one of its subsets."""
    from cardbench._util import atomic_write_text
    from cardbench.datasets.splits import SplitError, freeze_split, load_split, split_csv_text
    from cardbench.datasets.splits import subset as get_subset

    c = _card(name)
    try:
        if freeze:
            f, digest = freeze_split(c)
            err.print(f"{c.name}: split v{c.splits_version} frozen in {f} (sha256 {digest})", highlight=False, soft_wrap=True, markup=False)
            return
        if subset is not None:
            try:
                df = get_subset(c, subset)
            except ValueError as e:
                _fail(str(e), 2)
            if out_file is not None:
                atomic_write_text(out_file, df.to_csv(index=False, lineterminator="\n"))
            per = df.groupby("subject", sort=False).size()
            if as_json:
                typer.echo(json.dumps({"dataset": c.name, "subset": subset, "images": len(df),
                                       "per_subject": {k: int(v) for k, v in per.items()},
                                       "description": c.subsets["definitions"][subset]}, indent=2))
                return
            t = Table(title=f"{c.name} subset {subset}: {len(df)} images of {len(per)} subjects",
                      caption=c.subsets["definitions"][subset])
            t.add_column("subject")
            t.add_column("split")
            t.add_column("images", justify="right")
            split_of = c.split_of()
            for s, n in per.items():
                t.add_row(str(s), split_of.get(str(s), ""), str(int(n)))
            out.print(t)
            return
        sp = load_split(c)
    except SplitError as e:
        _fail(str(e))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if out_file is not None:
        atomic_write_text(out_file, split_csv_text({k: sp.subjects(k) for k in sp.counts()}))
    if as_json:
        typer.echo(json.dumps({**sp.to_dict(), "splits": {k: sp.subjects(k) for k in sp.counts()}}, indent=2))
        return
    t = Table(title=f"{c.name} standard split v{sp.version} ({sp.file}, sha256 {sp.sha256[:16]}...)")
    t.add_column("split")
    t.add_column("subjects", justify="right")
    t.add_column("ids", overflow="fold")
    for k, n in sp.counts().items():
        ids = sp.subjects(k)
        shown = ", ".join(ids) if len(ids) <= 30 else f"{', '.join(ids[:3])} ... {', '.join(ids[-3:])}"
        t.add_row(k, str(n), shown)
    out.print(t)
    if c.subsets:
        err.print(f"subsets: {', '.join(c.subsets.get('definitions', {}))} (`--subset NAME`)", highlight=False, soft_wrap=True, markup=False)


@data_app.command("release")
def release_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    dest: Path = typer.Option(..., "--out", "-o", help="New folder for the DataLad dataset."),
    prepared: Optional[Path] = typer.Option(None, "--from-prepared", help="A prepared standard-layout folder to "
                                            "release (default: convert the source files with cardbench's converter "
                                            "for this dataset)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Fetch the source files from this mirror "
                                         "(default: $CARDBENCH_MIRROR, else the pinned URLs)."),
    cache: Optional[Path] = CACHE_OPT,
    no_sourcedata: bool = typer.Option(False, "--no-sourcedata", help="Leave the registry source files out."),
    labels: bool = typer.Option(False, "--labels", help="Also release the files the card names under a DOI "
                                "(kaggle-dsb-ukbb: the ukbb_cardiac labels, doi:10.5281/zenodo.3876351) under "
                                "sourcedata/doi/, verified against the record, with their web URLs in git-annex."),
    labels_source: Optional[Path] = typer.Option(None, "--labels-source", help="With --labels: local folder with "
                                                 "the DOI files and record.json (no network)."),
) -> None:
    """Release a dataset as a DataLad dataset (binaries annexed, text in git, conversion via `datalad run`).

    Then `datalad clone OUT other && datalad get -d other other` gives the same files, and
    `cardbench data fetch NAME --backend datalad --source OUT` does it for a user.
    """
    from cardbench.datasets.doi import DoiUnreachable
    from cardbench.datasets.fetch import DownloadError
    from cardbench.datasets.release import DataladMissing, ReleaseError, release

    c = _card(name)
    try:
        rep = release(c.name, dest, prepared=prepared, mirror=mirror, cache=cache, sourcedata=not no_sourcedata,
                      labels=labels, labels_source=labels_source)
    except (DataladMissing, ReleaseError, DownloadError, DoiUnreachable) as e:
        _fail(str(e))
    except ValueError as e:
        _fail(str(e))
    err.print(f"{c.name}: released at {rep.path}: {rep.annexed} annexed files ({rep.urls_registered} with a web "
              f"URL), {rep.in_git} files in git, {rep.source_files} source files"
              + (f", {rep.doi_files} DOI files" if rep.doi_files else "") + f"; conversion: {rep.conversion}"
              + (f" (datalad run commit {rep.run_commit[:10]})" if rep.run_commit else ""), highlight=False, soft_wrap=True)
    for n in rep.notes:
        err.print(f"note: {n}", highlight=False, soft_wrap=True, markup=False)
    typer.echo(str(rep.path))


@data_app.command("convert")
def convert_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    into: Path = typer.Option(..., "--into", help="Existing folder (e.g. a DataLad dataset) to write the standard "
                              "layout and datasheet README.md into."),
    source: Optional[Path] = typer.Option(None, "--source", help="Folder of the dataset's source files (converted "
                                          "with cardbench's converter)."),
    prepared: Optional[Path] = typer.Option(None, "--from-prepared", help="Copy this prepared folder instead."),
) -> None:
    """Write a dataset's standard layout + datasheet into a folder (the step `release` records with datalad run)."""
    from cardbench.datasets.release import ReleaseError, convert_into

    if (source is None) == (prepared is None):
        _fail("give exactly one of --source (convert) or --from-prepared (copy)", 2)
    try:
        written = convert_into(name, into, source=source, prepared=prepared)
    except (ReleaseError, KeyError) as e:
        _fail(str(e))
    err.print(f"{name}: wrote {', '.join(written)} into {into}", highlight=False, soft_wrap=True, markup=False)


# `cardbench data prepare` (converters) registers itself on data_app from its own module.
if importlib.util.find_spec("cardbench.cli.data_prepare") is not None:
    importlib.import_module("cardbench.cli.data_prepare")
