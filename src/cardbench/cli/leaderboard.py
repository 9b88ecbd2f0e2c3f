"""``cardbench leaderboard show | remove | export | prefill | path``: a thin layer over
:mod:`cardbench.benchmark.leaderboard`."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as _rich_escape

from cardbench._util import terminal_safe


def escape(text) -> str:
    """Stranger-supplied text for one rich terminal line: control characters shown as ``\\x1b`` /
    ``\\n`` (:func:`cardbench._util.terminal_safe`), markup shown as itself."""
    return _rich_escape(terminal_safe(text))

from cardbench.cli import app
from cardbench.cli import errors as _errors

err = Console(stderr=True)
lb_app = typer.Typer(name="leaderboard", help="Show, export and edit a leaderboard folder (one folder per "
                     "benchmark = dataset + split + protocol, one entry per submission).",
                     no_args_is_help=True)
app.add_typer(lb_app, name="leaderboard")

_DIR_HELP = ("Leaderboard folder (default: $CARDBENCH_LEADERBOARD, else the user data dir; pre-filled with the "
             "published entries on first use).")


#: The leaderboard folder option, one style for every ``cardbench leaderboard`` subcommand (and
#: ``cardbench dashboard``): ``--leaderboard/-L DIR``.
LB_OPT = typer.Option(None, "--leaderboard", "-L", help=_DIR_HELP, show_default=False)
#: The old positional form (``show DIR``, ``remove NAME DIR``, ``prefill DIR``, ``private DIR``): still accepted.
_POS_HELP = "Deprecated: the folder as a positional argument; use --leaderboard/-L DIR."


def _folder(positional: Optional[Path], option: Optional[Path], cmd: str) -> Optional[Path]:
    """The leaderboard folder from ``--leaderboard/-L`` or the deprecated positional form (a note in a
    terminal); both given and different: exit 2."""
    if positional is not None and option is not None and Path(positional) != Path(option):
        _fail(f"two leaderboard folders given ({positional} and --leaderboard {option}); give it once: "
              f"cardbench leaderboard {cmd} --leaderboard DIR")
    if positional is not None and option is None and err.is_terminal:
        err.print(f"note: `cardbench leaderboard {cmd} ... DIR` is deprecated; use `--leaderboard/-L DIR`",
                  highlight=False, soft_wrap=True, markup=False)
    return option if option is not None else positional


class Format(str, Enum):
    table = "table"
    csv = "csv"
    markdown = "markdown"
    json = "json"


def _fail(msg: str, code: int = 2) -> None:
    _errors.fail(msg, code)  # one escaped line; exit codes in cardbench.cli.errors


def _open(folder: Optional[Path], prefill: bool = True, create: bool = False):
    """Open a leaderboard; an explicit folder must exist unless ``create`` (a typo never becomes a
    new, pre-filled leaderboard). The default folder is created and pre-filled on first use."""
    from cardbench.benchmark.leaderboard import open_leaderboard

    if folder is not None and not create and not Path(folder).is_dir():
        _fail(f"{folder}: leaderboard folder not found; check the path, or create one with "
              f"`cardbench leaderboard prefill -L {folder}` or `cardbench score ... --leaderboard {folder} --name NAME`")
    return open_leaderboard(folder, prefill=prefill, progress=True)  # lines in a log only after 5 s


class ProblemReporter:
    """Prints the problems of one leaderboard (every corrupt benchmark, entry or marker it skipped:
    :meth:`Leaderboard.problems`) on stderr, one line each and each once, so that a command can print
    the warnings found so far before a line that refers to them and the remaining ones at its end.

    Args:
        lb: the :class:`~cardbench.benchmark.leaderboard.Leaderboard` whose problems are printed.
        console: where to print (default: the shared stderr console).
    """

    def __init__(self, lb, console: Console | None = None):
        self.lb = lb
        self.console = console if console is not None else err
        #: the problem lines printed so far (or shown otherwise, see :meth:`shown_elsewhere`).
        self.printed: set[str] = set()

    def print_new(self) -> None:
        """Print the problems found since the last call (``warning: <line>``, escaped, one line each)."""
        for line in self.lb.problems():
            if line in self.printed:
                continue
            self.printed.add(line)
            self.console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)

    def shown_elsewhere(self, lines) -> None:
        """Never print ``lines`` (problems an error line already names, e.g. a corrupt benchmark.json)."""
        self.printed.update(lines)

    def fail(self, msg: str, code: int = 2) -> None:
        """Print the new problems first (the corrupt entries, each in its own line), then fail with ``msg``."""
        self.print_new()
        _fail(msg, code)


def _resolve_benchmark(lb, benchmark: Optional[str]) -> list[str]:
    ids = lb.benchmark_ids()
    if not ids:
        _fail(f"{lb.root}: no benchmark yet; add one with: cardbench score ... --leaderboard {lb.root} --name NAME",
              code=1)
    if benchmark is None:
        return ids
    if benchmark in ids:
        return [benchmark]
    matches = [b for b in ids if b.startswith(benchmark)]
    if len(matches) == 1:
        return matches
    if matches:
        _fail(f"{lb.root}: benchmark '{benchmark}' is ambiguous: it matches {', '.join(matches)}; give one of them "
              "(or a longer prefix)")
    _fail(f"{lb.root}: no benchmark '{benchmark}'; available: {', '.join(ids)}")
    return []


@lb_app.command("show")
def show_cmd(
    folder_pos: Optional[Path] = typer.Argument(None, help=_POS_HELP, show_default=False, metavar="DIR"),
    folder: Optional[Path] = LB_OPT,
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Benchmark id (or a unique prefix, "
                                            "e.g. cmr-7t); `leaderboard show` lists them. Default: all."),
    metric: str = typer.Option("dice_lv", "--metric", "-m", help="Ranking metric: METRIC_CLASS or METRIC_CLASS_PHASE, "
                               "e.g. dice_lv, dice_my_es, hd95_lv; clinical agreement: mae_lvef, bias_lvedv, "
                               "pearson_r_lvm."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Further metric families to show as columns, "
                                          "comma-separated (e.g. iou,hd95)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    ranks: bool = typer.Option(False, "--ranks", help="Print the ranking's uncertainty instead: median rank and "
                               "95 % rank interval over subject bootstrap resamples, Kendall's tau, Holm-corrected "
                               "pairwise Wilcoxon tests (see docs/ranking.md)."),
    ranking: str = typer.Option("aggregate-then-rank", "--ranking", help="Ranking method with --ranks: "
                                "aggregate-then-rank (the leaderboard's) or rank-then-aggregate (mean of "
                                "per-subject ranks)."),
    resamples: Optional[int] = typer.Option(None, "--resamples", min=1, max=100000, help="Bootstrap resamples "
                                            "with --ranks (default: the protocol's, else 1000)."),
) -> None:
    """Print the leaderboard ranked by a metric, with 95 % confidence intervals where the protocol has them."""
    from cardbench.benchmark.leaderboard import LeaderboardError, NoValidEntryError, display_table, render

    lb = _open(_folder(folder_pos, folder, "show"))
    if ranks:
        from cardbench.cli.ranks import show_ranks

        report = ProblemReporter(lb)
        show_ranks(lb, _resolve_benchmark(lb, benchmark), metric, ranking, resamples, fmt.value,
                   explicit=benchmark is not None, fail=report.fail, warn=report.print_new)
        report.print_new()
        return
    extra = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    out = []
    shown = 0
    report = ProblemReporter(lb)
    for b in _resolve_benchmark(lb, benchmark):
        try:
            info = lb.benchmark(b)
            df = lb.ranked(b, metric, metrics=extra)
        except LeaderboardError as e:
            if benchmark is not None:
                # the corrupt entries first, each in its own line; a corrupt benchmark.json only in the error
                report.shown_elsewhere(f"skipped {p}: {w}" for p, w in lb.skipped.items() if str(e).startswith(w))
                report.fail(str(e), code=1 if isinstance(e, NoValidEntryError) and not lb.problems(b) else 2)
            report.print_new()  # the warning a skipped line refers to comes before it
            if not any(why in str(e) for why in lb.skipped.values()):  # corrupt files: named once, above
                err.print(f"[yellow]skipped[/yellow] {escape(b)}: {escape(str(e))}", highlight=False, soft_wrap=True)
            continue
        shown += 1
        if fmt == Format.table:
            _print_rich(df, info, display_table(df))
        elif fmt == Format.json:
            out.append(render(df, "json", info.title))
        elif fmt == Format.csv:
            df.insert(1, "benchmark", b)
            out.append(df)
        else:
            out.append(render(df, fmt.value, info.title))
    report.print_new()
    if not out and fmt != Format.table or fmt == Format.table and not shown:
        _fail(f"no benchmark in {lb.root} has the metric '{metric}'; see the skipped lines above")
    if fmt == Format.csv:
        import pandas as pd

        from cardbench.benchmark.leaderboard.rendering import terminal_safe_columns

        typer.echo(terminal_safe_columns(pd.concat(out, ignore_index=True)).to_csv(index=False, float_format="%.6g"),
                   nl=False)
    elif fmt == Format.json and len(out) > 1:
        typer.echo("[\n" + ",\n".join(o.rstrip() for o in out) + "\n]")
    else:
        typer.echo("\n".join(out), nl=False)


def _rich_table(disp, title: str, narrow: bool):
    """The ranked table for a terminal. ``narrow`` (it does not fit the terminal): no vertical
    rules, the label under the entry name, and a value's interval on a line of its own, so that
    at 80 columns no entry name, value or interval is broken across lines."""
    from rich import box
    esc = _rich_escape  # the cells are display_table's: submitters' text already terminal_safe
    from rich.table import Table

    cols = [c for c in disp.columns if not (narrow and c == "label")]
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
    for c in cols:
        if narrow and c == "entry":
            w = max([len(c), *(len(str(v)) for v in disp[c])])  # the longest entry name, never broken
            t.add_column(c, justify="left", min_width=w, max_width=max(w, 28))  # a label wraps within it
        elif narrow and c not in ("rank", "subjects", "values"):
            t.add_column(c, justify="right", no_wrap=True)
        else:
            t.add_column(c, justify="left" if c in ("entry", "label") else "right",
                         overflow="fold", max_width=40 if c == "label" else None)
    for _, r in disp.iterrows():
        cells = []
        for c in cols:
            v = str(r[c])
            if narrow and c == "entry" and "label" in disp.columns and str(r["label"]):
                v = f"{esc(v)}\n[dim]{esc(str(r['label']))}[/dim]"
            elif narrow and " [" in v:
                v = esc(v.replace(" [", "\n[", 1))
            else:
                v = esc(v)
            cells.append(v)
        t.add_row(*cells)
    return t


def _print_rich(df, info, disp) -> None:
    from cardbench.benchmark.leaderboard import direction_text

    a = df.attrs
    proto = info.protocol
    con = Console()
    title = f"{escape(info.title)}  |  ranked by {a['rank_column']} ({a['group']}), {direction_text(a['direction'])}"
    def width(table) -> int:  # natural width, not squeezed to the terminal
        return con.measure(table, options=con.options.update(max_width=100_000)).maximum

    # the title as text above the table, so that it wraps at the terminal's width (as a table title
    # it is laid out at the table's width, and a table wider than the terminal crops it)
    con.print(f"[italic]{title}[/italic]", highlight=False)
    t = _rich_table(disp, "", narrow=False)
    if width(t) > con.width:
        t = _rich_table(disp, "", narrow=True)
    if width(t) <= con.width:
        con.print(t)
    else:  # still too wide (several metrics): as many metric columns per table as fit, each with the entries
        fixed = [c for c in ("rank", "entry", "label") if c in disp.columns]
        counts = [c for c in ("subjects", "values") if c in disp.columns]

        def fits(cols: list[str]) -> bool:  # at its natural width
            return width(_rich_table(disp[fixed + cols], "", narrow=True)) <= con.width

        def fits_wrapped(cols: list[str]) -> bool:
            """The table renders at the terminal's width with every header word, entry name and value
            whole (rich wraps the labels; a layout it cannot reach crops columns, which this catches)."""
            import io
            import re

            buf = Console(width=con.width, file=io.StringIO(), color_system=None, highlight=False, emoji=False)
            buf.print(_rich_table(disp[fixed + cols], "", narrow=True))
            text = buf.file.getvalue()
            if max((len(ln) for ln in text.splitlines()), default=0) > con.width:
                return False
            parts = [w for c in cols for w in str(c).split()]
            parts += [p for c in ["entry", *cols] for v in disp[c] for p in str(v).replace(" [", "\n[").split("\n")]
            return all(re.search(rf"(^|\s){re.escape(p)}(\s|$)", text) for p in parts if p)

        groups: list[list[str]] = [[]]
        for c in [c for c in disp.columns if c not in fixed + counts]:
            if groups[-1] and not fits(groups[-1] + [c]):
                groups.append([])
            groups[-1].append(c)
        # the counts go with the last group: move its metric columns to a further table until they fit
        # (at worst the counts get a table of their own), so that no column is cut
        while counts and not fits_wrapped(groups[-1] + counts):
            last, moved = groups[-1], []
            while last and not fits_wrapped(last + counts):
                moved.insert(0, last.pop())
            if not last:
                groups[-1] = moved
                groups.append([])
                break
            groups.append(moved)
        groups = [g for i, g in enumerate(groups) if g or i == len(groups) - 1]
        for i, g in enumerate(groups):
            last = i == len(groups) - 1
            con.print(_rich_table(disp[fixed + g + (counts if last else [])], "", narrow=True))
    ci = ("95 % CI in brackets: " + str(proto.get("bootstrap", {}).get("resamples")) + " subject bootstrap resamples"
          if a.get("has_ci") else "no confidence interval under this protocol")
    con.print(f"[dim]protocol {proto.get('name')} v{proto.get('version')}: {proto.get('description', '')} {ci}.[/dim]",
              highlight=False)


@lb_app.command("remove")
def remove_cmd(
    name: str = typer.Argument(..., help="Entry name."),
    folder_pos: Optional[Path] = typer.Argument(None, help=_POS_HELP, show_default=False, metavar="DIR"),
    folder: Optional[Path] = LB_OPT,
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Benchmark id (needed when the name "
                                            "is in several benchmarks); 'all' removes it from every benchmark."),
) -> None:
    """Remove an entry (atomically). Pre-filled published entries stay removed.

    An entry name or benchmark that does not exist is bad input: exit 2 with one line naming it and
    the command that lists what exists."""
    from cardbench.benchmark.leaderboard import LeaderboardError, check_name

    lb = _open(_folder(folder_pos, folder, "remove"))
    root = shlex.quote(str(lb.root))  # a command to paste
    try:
        check_name(name)
    except LeaderboardError as e:
        _fail(f"{e}; list the entries with: cardbench leaderboard show -L {root}")
    if benchmark is not None and benchmark != "all":
        if not lb.benchmark_ids():
            _fail(f"{lb.root}: no benchmark '{benchmark}' (the leaderboard has none); list what exists with: "
                  f"cardbench leaderboard show -L {root}")
        benches = _resolve_benchmark(lb, benchmark)  # unknown or ambiguous: exit 2, naming the benchmarks
        missing = [b for b in benches if name not in lb.entry_names(b)]
        if missing:
            b = missing[0]
            _fail(f"{lb.root / b}: no entry '{name}' in benchmark {b}; list its entries with: "
                  f"cardbench leaderboard show -L {root} -b {b}")
    else:
        benches = [b for b in lb.benchmark_ids() if name in lb.entry_names(b)]
        if benchmark is None and len(benches) > 1:
            _fail(f"entry '{name}' is in {len(benches)} benchmarks ({', '.join(benches)}); pass --benchmark ID "
                  "or --benchmark all")
    if not benches:
        _fail(f"{lb.root}: no entry '{name}' in any benchmark; list the entries with: "
              f"cardbench leaderboard show -L {root}")
    for b in benches:
        try:
            lb.remove(b, name)
        except LeaderboardError as e:
            _fail(str(e), code=1)
        Console().print(f"removed [bold]{escape(name)}[/bold] from {escape(b)}")


@lb_app.command("export")
def export_cmd(
    out: Path = typer.Argument(..., help="Output folder."),
    folder: Optional[Path] = LB_OPT,
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Only this benchmark."),
    metric: str = typer.Option("dice_lv", "--metric", "-m", help="Ranking metric."),
    with_entries: bool = typer.Option(False, "--with-entries", help="Also copy the full entries (summary, "
                                      "per-case tables, submission.yaml) into OUT/leaderboard/, a leaderboard "
                                      "folder another user can open."),
    public: bool = typer.Option(False, "--public", help="Aggregates and submission metadata only, no per-case or "
                                "per-subject value (always so for private benchmarks; docs/private.md)."),
) -> None:
    """Write each benchmark's ranked table as CSV, Markdown and JSON (and optionally the full entries)."""
    from cardbench.benchmark.private import export_public, is_private

    from cardbench._util import staged_dir
    from cardbench.benchmark.leaderboard import LeaderboardError, NoValidEntryError
    from cardbench.benchmark.leaderboard.rendering import check_export_target

    lb = _open(folder)
    benches = _resolve_benchmark(lb, benchmark)
    written = []
    report = ProblemReporter(lb)  # each warning once, before the skipped line that refers to it
    try:
        check_export_target(lb.root, out)  # before anything is written
        lb.check_metric(metric, benches)
        # everything goes into a folder next to OUT, moved into OUT at the end: a failure leaves OUT as it was
        with staged_dir(out) as stage:
            for b in benches:
                try:
                    if public or is_private(lb, b):
                        if with_entries:
                            report.fail(f"benchmark '{b}' is {'private' if is_private(lb, b) else 'exported --public'}: "
                                        "its entries (per-case tables) are not exported; leave out --with-entries")
                        written += [out / p.relative_to(stage) for p in export_public(lb, stage, b, metric=metric)]
                        continue
                    written += [out / p.relative_to(stage) for p in lb.export(
                        stage, b, metric=metric, with_entries=with_entries, strict=benchmark is not None)]
                except NoValidEntryError as e:
                    if benchmark is not None:
                        raise
                    report.print_new()  # the warning the skipped line refers to comes first
                    err.print(f"[yellow]skipped[/yellow] {escape(b)}: {escape(str(e))}", highlight=False,
                              soft_wrap=True)
    except (LeaderboardError, FileExistsError, ValueError) as e:
        report.fail(str(e), code=1 if isinstance(e, NoValidEntryError) and not lb.problems() else 2)
    report.print_new()
    con = Console()
    for p in written:
        con.print(f"wrote {escape(str(p))}")


@lb_app.command("create")
def create_cmd(
    folder_pos: Optional[Path] = typer.Argument(None, help=_POS_HELP, show_default=False, metavar="DIR"),
    folder_opt: Optional[Path] = typer.Option(None, "--leaderboard", "-L", help="Leaderboard folder (created "
                                              "when missing, not pre-filled).", show_default=False),
    reference: Path = typer.Option(..., "--reference", "-r", help="Reference folder (its card.yaml names the "
                                   "dataset and version)."),
    split: str = typer.Option("test", "--split", help="Split ('all': the whole reference)."),
    protocol: str = typer.Option("cardbench-v1", "--protocol", "-p", help="cardbench-v1 or ankenbrand2021."),
    private: bool = typer.Option(False, "--private", help="Per-case and per-subject values are never exported or "
                                 "shown publicly (docs/private.md)."),
) -> None:
    """Create an empty benchmark (dataset + split + protocol), e.g. a private one before its first entry."""
    from cardbench.benchmark.leaderboard import LeaderboardError
    from cardbench.benchmark.private import create_benchmark
    from cardbench.datasets.reference import ReferenceError

    folder = _folder(folder_pos, folder_opt, "create")
    if folder is None:
        _fail("give the leaderboard folder: cardbench leaderboard create --leaderboard DIR --reference REF")
    try:
        b = create_benchmark(folder, reference, None if split == "all" else split, protocol, private)
    except (ReferenceError, LeaderboardError, ValueError, KeyError) as e:
        _fail(str(e))
    Console().print(f"benchmark {b} in {folder}{' (per-case values private)' if private else ''}", highlight=False)


@lb_app.command("private")
def private_cmd(
    folder_pos: Optional[Path] = typer.Argument(None, help=_POS_HELP, show_default=False, metavar="DIR"),
    folder: Optional[Path] = LB_OPT,
    benchmark: str = typer.Option(..., "--benchmark", "-b", help="Benchmark id (or a unique prefix)."),
    off: bool = typer.Option(False, "--off", help="Make its per-case values publishable again."),
) -> None:
    """Mark a benchmark private: its per-case and per-subject values are never exported or shown publicly."""
    from cardbench.benchmark.private import set_private

    lb = _open(_folder(folder_pos, folder, "private"))
    for b in _resolve_benchmark(lb, benchmark):
        set_private(lb.root, b, not off)
        Console().print(f"{b}: per-case values {'publishable' if off else 'private'}", highlight=False)


@lb_app.command("prefill")
def prefill_cmd(
    folder_pos: Optional[Path] = typer.Argument(None, help=_POS_HELP, show_default=False, metavar="DIR"),
    folder: Optional[Path] = LB_OPT,
    force: bool = typer.Option(False, "--force", help="Re-add published entries that were removed."),
) -> None:
    """Add the published entries (computed now by cardbench from the embedded published tables)."""
    from cardbench.benchmark.leaderboard import PREFILL_SOURCES, Leaderboard

    lb = Leaderboard(_folder(folder_pos, folder, "prefill"))
    added = lb.prefill(force=force, progress=True)
    con = Console()
    for k, s in PREFILL_SOURCES.items():
        con.print(f"[bold]{k}[/bold]: {s.description}")
    con.print(f"{len(added)} entr{'y' if len(added) == 1 else 'ies'} added to {escape(str(lb.root))}")


@lb_app.command("path")
def path_cmd() -> None:
    """Print the default leaderboard folder ($CARDBENCH_LEADERBOARD, else the user data dir)."""
    from cardbench.benchmark.leaderboard import default_root

    typer.echo(str(default_root()))


def add_to_leaderboard(result, folder: Path, name: Optional[str] = None) -> None:
    """Add ``result`` to the leaderboard ``folder`` and print where it ranks (stderr); used by
    ``cardbench score --leaderboard DIR --name NAME``. Exits 2 with the reason when it cannot."""
    from cardbench.benchmark.leaderboard import LeaderboardError, add_entry

    try:
        entry = add_entry(result, folder, name)
    except LeaderboardError as e:
        _fail(str(e))
    from cardbench.benchmark.leaderboard import Leaderboard

    lb = Leaderboard(folder)
    where = ""
    try:
        df = lb.ranked(entry.benchmark, "dice")
        r = df.loc[df["entry"] == entry.name, "rank"].iloc[0]
        where = f", rank {r} of {len(df)} by {df.attrs['rank_column']}"
    except (LeaderboardError, IndexError):
        pass
    err.print(f"added to leaderboard [bold]{escape(str(lb.root))}[/bold] as [bold]{escape(entry.name)}[/bold] "
              f"(benchmark {escape(entry.benchmark)}{where}); view it with: cardbench dashboard --leaderboard "
              f"{escape(str(lb.root))}",
              highlight=False, soft_wrap=True)
