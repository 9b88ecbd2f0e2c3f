"""``cardbench evaluate-model`` and ``cardbench baseline export-onnx``: thin layers over
:mod:`cardbench.evaluate` and :mod:`cardbench.baselines.export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cardbench.cli import app
from cardbench.cli.baseline import baseline_app

err = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(str(msg))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def resolve_reference(dataset: Optional[str], reference: Optional[Path]) -> Path:
    """The reference folder from ``--dataset NAME`` (a prepared registered dataset) or ``--reference DIR``."""
    if (dataset is None) == (reference is None):
        _fail("give exactly one of --dataset NAME (a prepared dataset) or --reference DIR")
    if reference is not None:
        if reference.exists() and not reference.is_dir():
            from cardbench.datasets.reference import REFERENCE_FILES

            _fail(f"{reference}: is a file, not a folder; pass --reference a folder: a prepared dataset "
                  f"(card.yaml, subjects.csv, images/, labels/) or a folder of reference masks ({REFERENCE_FILES})")
        if not reference.is_dir():
            _fail(f"{reference}: reference folder not found")
        return reference
    from cardbench.datasets.prepare import preparable, prepared_path

    if dataset not in preparable():
        _fail(f"unknown dataset '{dataset}'; preparable: {', '.join(preparable())} (or give --reference DIR)")
    p = Path(prepared_path(dataset))
    if not p.is_dir():
        _fail(f"dataset '{dataset}' is not prepared yet; run: cardbench data prepare {dataset}")
    return p


@app.command("evaluate-model")
def evaluate_model_cmd(
    model: Path = typer.Argument(..., help="The submitted model: a .onnx file (with --model-card) or a cardbench "
                                 "baseline model.safetensors."),
    model_card: Optional[Path] = typer.Option(None, "--model-card", "-c", help="model.yaml: input, output and "
                                              "postprocessing of the model (docs/private.md)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="A prepared registered dataset, e.g. "
                                          "sunnybrook-sample."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Reference folder in the standard "
                                             "layout (images/ and labels/)."),
    split: str = typer.Option("test", "--split", help="Split to run the model on ('all': every labelled volume)."),
    protocol: str = typer.Option("cardbench-v1", "--protocol", "-p", help="Scoring protocol: cardbench-v1 or "
                                 "ankenbrand2021."),
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", help="Add the result to this leaderboard."),
    name: Optional[str] = typer.Option(None, "--name", help="Submission / entry name (default: the card's name)."),
    private: bool = typer.Option(False, "--private", help="Mark the leaderboard benchmark private: per-case and "
                                 "per-subject values are never exported or shown publicly."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the result folder here."),
    predictions_out: Optional[Path] = typer.Option(None, "--predictions-out", help="Keep the model's predictions "
                                                   "in this (new) folder."),
    max_model_mb: float = typer.Option(256.0, "--max-model-mb", min=0.001, help="Largest model file accepted (MiB)."),
    max_seconds_per_image: float = typer.Option(10.0, "--max-seconds-per-image", min=0.001,
                                                help="Wall time allowed per 2D image (s)."),
    max_total_seconds: float = typer.Option(3600.0, "--max-total-seconds", min=0.001,
                                            help="Wall time allowed for all images (s)."),
    device: str = typer.Option("auto", "--device", help="Checkpoints only: auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json instead of the table."),
) -> None:
    """Run a submitted model on the reference images and score its predictions (the same path as `score`).

    The model card and the model's declared input and output shapes are checked before any image is read;
    anything invalid is one line and exit code 2. A model returning NaN or a wrong shape, or running over a
    time limit, stops the run (exit 2) and nothing is scored or published.
    """
    from cardbench.benchmark import SubmissionError, ValidationError
    from cardbench.evaluate import EvaluationError, Limits, ModelCardError, evaluate_model, load_model_card
    from cardbench.evaluate.runners import ModelRunError, open_runner

    limits = Limits(int(max_model_mb * 2**20), max_seconds_per_image, max_total_seconds)
    try:
        card = load_model_card(model_card) if model_card is not None else None
        runner = open_runner(model, card, limits, device)
    except ModelCardError as e:
        _fail(str(e))
    ref = resolve_reference(dataset, reference)
    if leaderboard is not None and not Path(leaderboard).is_dir():
        _fail(f"{leaderboard}: leaderboard folder not found; create it first (cardbench leaderboard prefill DIR)")
    try:
        ev = evaluate_model(model, ref, card, split=None if split == "all" else split, protocol=protocol,
                            limits=limits, name=name, predictions_out=predictions_out, progress=sys.stderr.isatty(),
                            runner=runner)
    except (ModelCardError, ModelRunError, EvaluationError) as e:
        _fail(str(e))
    except ValidationError as e:
        _fail("; ".join(str(p) for p in e.problems))
    except (SubmissionError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    result = ev.result
    err.print(f"ran {model.name} ({ev.provider}) on {ev.n_volumes} volumes, {ev.n_images} images in "
              f"{ev.seconds:.1f} s", highlight=False)
    if out is not None:
        try:
            result.write(out)
        except (FileExistsError, ValueError) as e:
            _fail(f"{e} (nothing was written)")
    if leaderboard is not None:
        from cardbench.benchmark.leaderboard import LeaderboardError, add_entry, benchmark_id
        from cardbench.benchmark.private import set_private

        try:
            entry = add_entry(result, leaderboard, name or result.summary["submission"].get("name"),
                              source="cardbench evaluate-model")
            if private:
                set_private(leaderboard, benchmark_id(result.summary), True)
        except LeaderboardError as e:
            _fail(str(e))
        err.print(f"added to leaderboard {leaderboard} as {entry.name} (benchmark {entry.benchmark}"
                  f"{', per-case values private' if private else ''})", highlight=False)
    if as_json:
        from cardbench.benchmark.results import to_json

        typer.echo(to_json(result.summary))
        return
    from cardbench.benchmark.report import print_summary

    print_summary(result, Console())


@baseline_app.command("export-onnx")
def export_onnx_cmd(
    checkpoint: Path = typer.Argument(..., help="A cardbench model.safetensors."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="The ONNX file to write."),
    card: Optional[Path] = typer.Option(None, "--model-card", help="Where to write model.yaml (default: next to "
                                        "--out)."),
) -> None:
    """Export a baseline checkpoint to ONNX with its model.yaml (runs with `cardbench evaluate-model`)."""
    from cardbench.cli.baseline import _require_torch

    _require_torch()
    from cardbench.baselines.export import export_onnx
    from cardbench.baselines.weights import WeightsError

    try:
        o, c = export_onnx(checkpoint, out, card)
    except WeightsError as e:
        _fail(str(e))
    Console().print(f"wrote {o} and {c}; run it with: cardbench evaluate-model {o} --model-card {c} "
                    "--reference REF", highlight=False)
