"""``cardbench compare`` (paired comparison of two results) and ``cardbench volumes ...`` (Kaggle volume track)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cardbench.cli import app
from cardbench.cli import errors as _errors

err = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    _errors.fail(msg, code)  # one escaped line; exit codes in cardbench.cli.errors


@app.command("compare")
def compare_cmd(
    result_a: Path = typer.Argument(..., help="Result folder A (written by `cardbench score`)."),
    result_b: Path = typer.Argument(..., help="Result folder B, scored against the same reference and protocol."),
    metric: str = typer.Option("dice", "--metric", "-m", help="A per-subject metric (dice, iou, hd95, ...) or a "
                               "clinical index (LVEDV, LVESV, LVSV, LVEF, LVM, RV...): then the absolute error "
                               "|prediction - reference| is compared."),
    cls: str = typer.Option("LV", "--class", "-c", help="Class for a per-subject metric (LV, MY, RV)."),
    split: Optional[str] = typer.Option(None, "--split", help="Compare only subjects of this split."),
    force: bool = typer.Option(False, "--force", help="Compare even if protocols or datasets differ."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Compare two submissions subject by subject: differences, win/tie/loss and the Wilcoxon signed-rank test.

    Values are per-subject (the mean over a subject's volumes or images at the protocol's level), so
    subjects, not images, are the independent units. The test is scipy.stats.wilcoxon (two-sided;
    subjects with a zero difference are left out of it).
    """
    from cardbench.benchmark.report_clinical import comparison_rich_table
    from cardbench.benchmark.results import to_json
    from cardbench.benchmark.stats import compare_results

    try:
        comp, info = compare_results(result_a, result_b, metric=metric, cls=cls, split=split, allow_mismatch=force)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(to_json({**info, **comp.to_dict()}))
        return
    con = Console()
    con.print(comparison_rich_table(comp, info))
    better = "higher" if comp.higher_is_better else "lower"
    con.print(f"{comp.n_subjects} subjects: A better in {comp.wins_a}, tie in {comp.ties}, B better in "
              f"{comp.wins_b} ({better} is better). Mean A - B = {comp.mean_diff:.4g}, median {comp.median_diff:.4g}.")
    if comp.n_nonzero:
        con.print(f"Wilcoxon signed-rank (two-sided, {comp.n_nonzero} non-zero differences): statistic "
                  f"{comp.statistic:g}, p = {comp.pvalue:.4g}")
    else:
        con.print("No non-zero difference: no test.")
    for w in info["warnings"]:
        con.print(f"[yellow]warning:[/yellow] {escape(str(w))}")
    if comp.excluded:
        con.print(f"[yellow]note:[/yellow] {len(comp.excluded)} subject(s) not in both results (or without a value) "
                  f"were left out: {', '.join(comp.excluded[:10])}")


volumes_app = typer.Typer(help="Kaggle volume track: LV volumes and EF from per-image pixel counts vs the released "
                               "volumes of the Second Annual Data Science Bowl.", no_args_is_help=True)
app.add_typer(volumes_app, name="volumes")


class Rule(str, Enum):
    cardbench = "cardbench"
    seed = "seed"


_DATA_HELP = ("Folder with the registry layout (the seed's Kaggle tables under cmr-seg-tl / analysis / kaggle); "
              "default: where `cardbench data fetch` keeps the seed's derived data ($CARDBENCH_DATA or the "
              "platform cache).")


def _check_data_folder(data: "Path | None") -> None:
    """Exit 2 with one line when ``--data`` is not a folder (the message names it and how to get the data)."""
    if data is not None and not data.is_dir():
        _fail(f"--data {data}: {'is a file, not a folder' if data.exists() else 'no such folder'}; give the folder "
              "of the seed's derived data in the registry layout, or leave --data out after "
              "`cardbench data fetch ankenbrand2021-derived` (it puts the data in the cache)")


@volumes_app.command("reproduce")
def volumes_reproduce_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the table and one result folder per "
                                       "(rule, model) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Score the seed's ten published U-Nets and ukbb_cardiac on the volume track; compare with the seed's README table.

    Rule seed: the seed's rows (rotated series where present, repeated acquisitions _a/_b as separate
    rows, 1149 rows). Rule cardbench: one row per patient (1140), repeated acquisitions averaged.
    """
    from cardbench.benchmark.report_clinical import print_volume_track
    from cardbench.benchmark.results import to_json
    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import VolumeTrackError, reproduce_kaggle_volumes
    from cardbench.datasets.embedded import IntegrityError

    _check_data_folder(data)
    try:
        table, results = reproduce_kaggle_volumes(data, progress=True)  # a bar in a terminal, lines in a log
    except (FileNotFoundError, IntegrityError, VolumeTrackError) as e:
        _fail(str(e), code=1)
    if out is not None:
        from cardbench._util import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "kaggle_volumes.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_text(out / "kaggle_volumes.json", to_json(table.to_dict(orient="records")) + "\n")
        for (label, rule), res in results.items():
            res.write(out / rule / label)
    if as_json:
        typer.echo(to_json(table.to_dict(orient="records")))
        return
    con = Console()
    print_volume_track(table, con)  # narrow tables where the wide one does not fit
    pub = table[table["match"].notna()]
    con.print(f"{int(pub['match'].astype(bool).sum())} of {len(pub)} published rows reproduced at 2 decimals (rule seed).")
    if out is not None:
        con.print(f"written to [bold]{escape(str(out))}[/bold]")


@volumes_app.command("score")
def volumes_score_cmd(
    table: Path = typer.Argument(..., help="Per-image pixel counts: TSV (or .tsv.xz/.gz) with columns file, "
                                           "lv_pixels, my_pixels; file ends in <series>/<series>-frameFFF-sliceSSS.png."),
    grid: int = typer.Option(256, "--grid", min=1, max=4096, help="Side of the square grid the counts were "
                             "predicted on (the image's longer side resized to it, the shorter padded); at most "
                             "4096 px (the seed's grids: 128 and 256)."),
    rule: Rule = typer.Option(Rule.cardbench, "--rule", help="How series map to patients."),
    name: Optional[str] = typer.Option(None, "--name", help="Submission name (default: the file name)."),
    cutoff: Optional[int] = typer.Option(None, "--training-confidence", min=1, max=100, metavar="PERCENT",
                                         help="If the model was trained on the seed's confidence set of this "
                                         "percentage (1 to 100: the series whose ukbb_cardiac confidence is at "
                                         "most PERCENT/100; the seed's models used 5, 10 or 15), also report "
                                         "patients not in it."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Score patients without any predicted series "
                                       "as missing (EF error 100) instead of failing."),
    data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write summary.json, per_subject.csv, agreement.csv."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json instead of tables."),
) -> None:
    """Score your own per-image pixel-count table on the Kaggle volume track (EDV, ESV, EF vs released volumes)."""
    from cardbench.benchmark.report_clinical import print_volume_result
    from cardbench.benchmark.results import to_json
    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import (VolumeTrackError, check_pixel_grid,
                                                                 load_kaggle_data, read_pixel_counts,
                                                                 score_pixel_table)
    from cardbench.datasets.embedded import IntegrityError

    if not table.exists():
        _fail(f"{table}: no such file")
    try:  # the table first: a bad table is exit 2 even without the Kaggle data
        counts = read_pixel_counts(table, str(table))
        check_pixel_grid(counts, grid, str(table))
    except (VolumeTrackError, ValueError) as e:
        _fail(str(e))
    _check_data_folder(data)
    try:
        kaggle = load_kaggle_data(data)
        res = score_pixel_table(table, kaggle, grid=grid, name=name, rule=rule.value, cutoff=cutoff,
                                allow_missing=allow_missing, counts=counts)
    except FileNotFoundError as e:
        _fail(str(e), code=1)
    except (IntegrityError, VolumeTrackError, ValueError) as e:
        _fail(str(e))
    if out is not None:
        res.write(out)
    if as_json:
        typer.echo(to_json(res.summary))
        return
    con = Console()
    print_volume_result(res.summary, con, groupings=("all", "split"))  # narrow tables where the wide ones do not fit
    if out is not None:
        con.print(f"written to [bold]{escape(str(out))}[/bold] (summary.json, per_subject.csv, agreement.csv)")


@volumes_app.command("choices")
def volumes_choices_cmd(
    model: str = typer.Option("resnet34_5percent_size256_normalTfms_ceLoss", "--model", help="Published model "
                              "(file stem under analysis/kaggle/predictions)."),
    data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Show how each choice of the volume computation (series resolution, rotation, scale factors) changes the scores."""
    from rich.table import Table

    from cardbench.benchmark.results import to_json
    from cardbench.reproductions.ankenbrand2021.kaggle_volumes import VolumeTrackError, choice_sensitivity
    from cardbench.datasets.embedded import IntegrityError

    _check_data_folder(data)
    try:
        table = choice_sensitivity(model, data)
    except FileNotFoundError as e:
        _fail(str(e), code=1)
    except (IntegrityError, VolumeTrackError, ValueError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(to_json(table.to_dict(orient="records")))
        return
    t = Table(title=f"{model}: one choice changed at a time", title_justify="left")
    for c in ("variant", "n", "|EF diff| mean", "SD", "median", "IQR", "EDV bias (mL)", "EDV MAE (mL)"):
        t.add_column(c, justify="left" if c == "variant" else "right")
    for _, r in table.iterrows():
        t.add_row(r["variant"], str(r["n"]), *(f"{r[c]:.2f}" for c in ("ef_mean", "ef_sd", "ef_median", "ef_iqr",
                                                                       "edv_bias", "edv_mae")))
    Console().print(t)
