"""``cardbench score``, ``cardbench reproduce`` and ``cardbench demo``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cardbench.cli import app
from cardbench.cli.errors import fail as _fail

err = Console(stderr=True)


def _default_protocol() -> str:
    from cardbench.benchmark.protocols import DEFAULT_PROTOCOL

    return DEFAULT_PROTOCOL


def _protocol_help() -> str:
    from cardbench.benchmark.protocols import DEFAULT_PROTOCOL, protocol_names

    return (f"Scoring protocol: {', '.join(protocol_names())} (default {DEFAULT_PROTOCOL}), or a protocol file "
            "(.yaml, see `cardbench protocol show`).")


def parse_nsd_tolerance(text: str) -> "float | dict[str, float]":
    """``--nsd-tol`` value: ``MM`` (every class) or ``CLASS=MM,...`` (``default=MM`` for the rest).

    Raises:
        ValueError: not a number or a list of ``CLASS=MM``; the message shows both forms.
    """
    t = text.strip()
    try:
        if "=" not in t:
            return float(t)
        out: dict[str, float] = {}
        for part in t.split(","):
            k, v = part.split("=")
            k = k.strip()
            out[k if k.lower() == "default" else k.upper()] = float(v)
        return {("default" if k.lower() == "default" else k): v for k, v in out.items()}
    except ValueError:
        raise ValueError(f"--nsd-tol {text!r}: give a tolerance in mm (e.g. 2.0) or one per class "
                         "(e.g. LV=2,MY=1.5,default=2)") from None


def _load_protocol(protocol: str, nsd_tol: "str | None"):
    """The protocol of a CLI call (built-in name or YAML file, with --nsd-tol); exit 2 with one line if invalid."""
    from cardbench.benchmark.protocols import ProtocolError, _check_tolerance, get_protocol

    def bad(key, value, allowed):  # the flag the user typed, not the protocol's internal key
        cls = key.partition(".")[2]
        allowed = allowed.replace("a mapping class -> mm", "CLASS=MM,... per class")
        raise ValueError(f"--nsd-tol {nsd_tol}: " + (f"class {cls}: " if cls else "") + f"bad value {value!r}; "
                         f"allowed: {allowed}; e.g. --nsd-tol 2 or --nsd-tol LV=2,MY=1.5,default=2")

    try:
        proto = get_protocol(protocol)
        if nsd_tol is None:
            return proto
        tau = parse_nsd_tolerance(nsd_tol)
        _check_tolerance(tau, "--nsd-tol", bad)
        return proto.with_nsd_tolerance(tau)
    except (ProtocolError, ValueError) as e:
        fail(str(e))


def fail(problems_or_msg, code: int = 2) -> None:
    """Print problems (one line each, escaped, at most ``max_report_lines``) or a message to stderr and
    exit with ``code`` (see :func:`cardbench.cli.errors.fail`)."""
    _fail(problems_or_msg, code)


def _is_inside(path: Path, folder: Path) -> bool:
    from cardbench.cli.errors import is_inside

    return is_inside(path, folder)


def _check_workdir(workdir: Path, *, out: "Path | None", reference: "Path | None", predictions: Path) -> None:
    """Exit 2 with one line, before anything is created, when ``--workdir`` is a file, or is (inside)
    the result folder, the reference or the predictions folder (an archive would be extracted into
    data cardbench reads, or the result folder would not be cardbench's own)."""
    if workdir.exists() and not workdir.is_dir():
        fail(f"--workdir {workdir}: is a file; a folder is needed (where an archive is extracted). Fix: give a "
             "folder, or a path that does not exist yet")
    for what, folder in (("the result folder --out", out), ("the reference folder --reference", reference),
                         ("the predictions folder", predictions)):
        if folder is not None and (folder is out or folder.is_dir()) and _is_inside(workdir, folder):
            fail(f"--workdir {workdir}: inside {what} {folder}; an archive extracted there would mix with "
                 "it. Fix: choose a --workdir outside the reference, the predictions and --out")


def _default_out(name: str, protocol: str) -> Path:
    from cardbench.cli.errors import safe_name

    return Path("cardbench-results") / f"{safe_name(name)}__{protocol}"


#: ``cardbench score --help``: paragraphs without hard line breaks (typer keeps a docstring's single line
#: breaks after its first paragraph, and they break the text mid-sentence at any terminal width)
_SCORE_HELP = ("Validate a submission against a reference and score it: Dice, IoU, HD95, ASSD, EDV/ESV/EF per "
               "class.\n\nEvery problem (missing, extra or duplicate cases, shape/spacing/affine mismatch, label "
               "values outside the map, unreadable files) is printed on one line; then the command exits with "
               "code 2 and writes nothing.")


@app.command("score", help=_SCORE_HELP)
def score_cmd(
    predictions: Path = typer.Argument(..., help="Submission folder, .zip/.tar.gz of one, or a per-image "
                                                 "confusion table (.tsv, the seed's format)."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Reference folder (standard "
                                             "layout or any folder of masks). Not needed for a confusion table."),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Label map of the predictions: cardbench "
                                         "(default), acdc, mnms or FILE.yaml."),
    reference_labels: Optional[str] = typer.Option(None, "--reference-labels", help="Label map of the "
                                                   "reference (default: its card.yaml, else cardbench)."),
    protocol: str = typer.Option(_default_protocol(), "--protocol", "-p", help=_protocol_help()),
    nsd_tol: Optional[str] = typer.Option(None, "--nsd-tol", metavar="MM", help="NSD tolerance tau in mm, or "
                                          "one per class (LV=2,MY=1.5,default=2); default: the protocol's "
                                          "(2.0 for cardbench-v1). Recorded in summary.json and in the "
                                          "leaderboard benchmark id."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated classes to score, "
                                          "e.g. LV,MY, or regions of classes scored as one structure, e.g. "
                                          "LV,MY,LV+MY (default: those the reference annotates)."),
    split: Optional[str] = typer.Option(None, "--split", help="Score only reference subjects of this split."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Score a missing prediction as a miss "
                                       "(status missing, worst value) instead of failing."),
    affine_tol: float = typer.Option(1e-2, "--affine-tol", help="Tolerance (mm) on each affine element."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes (results do not depend on it)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Score on Dask distributed instead of "
                                            "--jobs: local:N (N worker processes, started for the run) or "
                                            "tcp://HOST:PORT of a running scheduler; inputs must be on storage "
                                            "every worker sees (needs the \\[distributed] extra)."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Folder where an archive is extracted "
                                           "(default: a temporary folder; shared storage with --scheduler)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Result folder (default: "
                                       "<submission>__<protocol> in cardbench-results)."),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write a result folder."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout instead of the table."),
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", help="Also add the result as an entry of "
                                               "this leaderboard folder (see `cardbench leaderboard`)."),
    name: Optional[str] = typer.Option(None, "--name", help="Leaderboard entry name (default: the submission's)."),
    label: Optional[str] = typer.Option(None, "--label", help="Readable label of the submission (overrides "
                                        "label in submission.yaml; shown on the leaderboard)."),
    team: Optional[str] = typer.Option(None, "--team", help="Team or authors (overrides submission.yaml)."),
    method: Optional[str] = typer.Option(None, "--method", help="One-line method description (overrides "
                                         "submission.yaml)."),
) -> None:
    """Validate a submission against a reference and score it: Dice, IoU, HD95, ASSD, EDV/ESV/EF per class.

    Every problem (missing, extra or duplicate cases, shape/spacing/affine mismatch, label values outside
    the map, unreadable files) is printed on one line; then the command exits with code 2 and writes
    nothing.
    """
    from cardbench.benchmark import SubmissionError, ValidationError, score, score_confusion_table
    from cardbench.benchmark.confusion_tables import is_confusion_table
    from cardbench.benchmark.report import print_summary
    from cardbench.benchmark.results import to_json
    from cardbench.datasets.reference import ReferenceError

    import math

    from cardbench.labelmaps import CLASSES

    if not math.isfinite(affine_tol) or affine_tol < 0:  # nan or inf would turn the affine check off
        fail(f"--affine-tol {affine_tol}: bad value; allowed: a finite number of mm >= 0 (e.g. --affine-tol 0.01)")
    cls = [c.strip() for c in classes.split(",") if c.strip()] if classes is not None else None
    if cls is not None and not cls:
        fail(f"--classes {classes!r}: no class given; give one or more of {', '.join(CLASSES)} (or a region such "
             "as LV+MY), comma-separated, e.g. --classes LV,MY; or leave --classes out to score those the "
             "reference annotates")
    if scheduler and jobs != 1:
        fail(f"--jobs {jobs} and --scheduler {scheduler}: give one of them (--scheduler local:N starts N worker "
             "processes; --jobs N uses a local process pool)")
    proto = _load_protocol(protocol, nsd_tol)
    if not predictions.exists():
        fail(f"{predictions}: predictions not found; pass a folder, a .zip/.tar.gz of one, or a confusion table")
    if leaderboard is not None and name is not None:  # a bad entry name fails before anything is written
        from cardbench.benchmark.leaderboard import LeaderboardError, check_name

        try:
            check_name(name)
        except LeaderboardError as e:
            fail(f"--name: {e}")
    if workdir is not None:
        _check_workdir(workdir, out=None if no_save else out, reference=reference, predictions=predictions)
    if out is not None and not no_save and predictions.is_dir() and _is_inside(out, predictions) \
            and out.resolve() != predictions.resolve():
        fail(f"--out {out}: inside the predictions folder {predictions}; results would become part of the "
             "submission. Fix: choose a folder outside it")
    try:
        if is_confusion_table(predictions):
            result = score_confusion_table(predictions, proto, split=split, classes=cls)
        else:
            if reference is None:
                fail("--reference is required to score mask files (give the reference folder)")
            import contextlib

            from cardbench.benchmark.distributed import dask_executor

            with (dask_executor(scheduler) if scheduler else contextlib.nullcontext()) as executor:
                result = score(predictions, reference, protocol=proto, labels=labels,
                               reference_labels=reference_labels, classes=cls, split=split,
                               allow_missing=allow_missing, affine_tol=affine_tol, jobs=jobs,
                               progress=True, executor=executor, workdir=workdir)
    except ValidationError as e:
        fail(e.problems)
    except (SubmissionError, ReferenceError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    with result:  # the stored per-case table is removed when the command ends, however it ends
        _report_result(result, out=out, no_save=no_save, proto=proto, leaderboard=leaderboard, name=name,
                       as_json=as_json, label=label, team=team, method=method)


def _report_result(result, *, out, no_save, proto, leaderboard, name, as_json, label, team, method) -> None:
    """Write, enter into a leaderboard and print a scored result (the rest of ``cardbench score``)."""
    from cardbench.benchmark.report import print_summary
    from cardbench.benchmark.results import to_json

    for key, value in (("label", label), ("team", team), ("method", method)):
        if value is not None:  # the command line wins over submission.yaml
            result.summary.setdefault("submission", {})[key] = value
    if leaderboard is not None and name is None:  # the entry name made from the submission's must be valid
        from cardbench.benchmark.leaderboard import LeaderboardError, check_name
        from cardbench.benchmark.leaderboard import safe_name as entry_safe_name

        try:
            check_name(entry_safe_name(str(result.summary["submission"].get("name") or "submission")))
        except LeaderboardError as e:
            fail(f"{e}; give a valid one with --name (nothing was written)")
    if not no_save:
        dest = out or _default_out(result.summary["submission"].get("name", "submission"), proto.name)
        try:
            result.write(dest)
        except (FileExistsError, ValueError) as e:
            fail(f"{e} (nothing was written)")
        except OSError as e:
            from cardbench.cli.errors import explain

            msg, code = explain(e)
            fail(f"{msg} (nothing was written)", code)
        result.summary["output"] = str(dest)
    if leaderboard is not None:
        from cardbench.cli.leaderboard import add_to_leaderboard
        add_to_leaderboard(result, leaderboard, name)
    if as_json:
        for w in result.summary.get("warnings", []):
            err.print(f"[bold yellow]warning:[/bold yellow] {w}", highlight=False, soft_wrap=True)
        typer.echo(to_json(result.summary))
        return
    con = Console()
    print_summary(result, con)
    if not no_save:
        written = sorted(f.name for f in Path(dest).iterdir() if f.is_file() and not f.name.startswith("."))
        con.print(f"results written to [bold]{escape(str(dest))}[/bold] ({escape(', '.join(written))})")


@app.command("reproduce")
def reproduce_cmd(
    paper: str = typer.Argument("ankenbrand2021", help="Which paper to reproduce (ankenbrand2021)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with the published files in the "
                                        "registry layout (default: copies embedded in cardbench)."),
    split: str = typer.Option("test", "--split", help="Split to score (the paper's table is test)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the table and every result "
                                       "folder here."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON to stdout."),
) -> None:
    """Recompute a paper's published Dice table from its published per-image confusion tables.

    ankenbrand2021: the 7T test-set table of Ankenbrand et al., MRM 2021;86:2179, under the paper's
    protocol and under cardbench-v1.
    """
    if paper != "ankenbrand2021":
        fail(f"unknown paper '{paper}'; available: ankenbrand2021")
    from cardbench.benchmark.report import print_reproduction
    from cardbench.reproductions.ankenbrand2021.seven_tesla import reproduce_ankenbrand2021
    from cardbench.benchmark.results import to_json

    try:
        table, results = reproduce_ankenbrand2021(data_dir=data, split=split)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(str(e), code=1)
    if out is not None:
        write_reproduction(out, table, results)
    if as_json:
        typer.echo(to_json(table.to_dict(orient="records")))
        return
    con = Console()
    print_reproduction(table, con)
    if split == "test":
        n = int(table["match"].sum())
        con.print(f"{n} of {len(table)} rows match the published values at 3 decimals.")
    if out is not None:
        con.print(f"written to [bold]{out}[/bold]")


def write_reproduction(out: Path, table, results) -> None:
    """Write reproduction.csv/json and one result folder per (protocol, model) under ``out``."""
    from cardbench._util import atomic_write_text
    from cardbench.benchmark.results import to_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "reproduction.csv", table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out / "reproduction.json", to_json(table.to_dict(orient="records")) + "\n")
    for (key, proto), res in results.items():
        res.write(out / proto / key)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("cardbench-demo"), "--out", "-o", help="Where to write the outputs."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run the baseline loop (needs "
                                  "torch: the \\[baselines] extra; a few minutes on 2 CPU cores)."),
) -> None:
    """Run cardbench's main job on the embedded real data, offline.

    1. Reproduce Ankenbrand et al. 2021's 7T test-set Dice table from the published confusion tables.
    2. Score the public Kaggle labels (ukbb_cardiac) against the seed's 816 manual masks.
    3. Baseline loop (when torch is installed): prepare the Sunnybrook sample, fine-tune a U-Net on its 3
       training patients, predict the 2 test patients, score them, add them to a leaderboard, print it.
    """
    from rich.markup import escape

    from cardbench.benchmark.report import print_reproduction, print_section, print_summary
    from cardbench.reproductions.ankenbrand2021.seven_tesla import reproduce_ankenbrand2021, score_label_quality

    con = Console()
    print_section(con, "[bold]1. Reproducing Ankenbrand et al. 2021 (7T test set) from the published confusion tables")
    table, results = reproduce_ankenbrand2021()
    write_reproduction(out / "reproduce-ankenbrand2021", table, results)
    print_reproduction(table, con)
    con.print(f"{int(table['match'].sum())} of {len(table)} rows match the published values at 3 decimals.")
    print_section(con, "[bold]2. Label quality: public Kaggle labels (ukbb_cardiac) vs 816 manual masks of 9 patients")
    for proto in ("ankenbrand2021", "cardbench-v1"):
        res = score_label_quality(proto)
        res.write(out / "label-quality" / proto)
        print_summary(res, con)
    baseline_done = False
    if baseline:
        print_section(con, "[bold]3. Baseline loop: U-Net on 3 Sunnybrook patients, predict 2, score, leaderboard")
        from cardbench.cli.baseline import torch_missing

        missing = torch_missing()
        if missing:
            con.print(f"[yellow]skipped:[/yellow] {escape(missing)}", highlight=False, soft_wrap=True)
        else:
            from cardbench.baselines.demo import run_demo_loop

            run_demo_loop(out / "baseline", console=con, progress=True)
            baseline_done = True
    print_section(con, "[bold]Outputs")
    con.print(f"written to [bold]{escape(str(out))}[/bold] (paths below are inside it):")
    con.print("  reproduce-ankenbrand2021/reproduction.csv: the table above", highlight=False)
    con.print("  reproduce-ankenbrand2021/<protocol>/<model>/: summary.json, per_case.csv, ...", highlight=False)
    con.print("  label-quality/<protocol>/: the Kaggle label-quality scores", highlight=False)
    if baseline_done:
        con.print("  baseline/: U-Net run, predictions, scores, leaderboard", highlight=False)
    con.print("Next: score your own predictions with\n"
              "  cardbench score PREDICTIONS/ --reference REFERENCE/\n"
              "  (add --protocol ankenbrand2021 for the paper's protocol)\n"
              "or a per-image confusion table with\n"
              "  cardbench score confusion.tsv", highlight=False)
