"""``cardbench data prepare``: converters into the standard layout (registered on ``data_app``).

A thin layer over :func:`cardbench.datasets.prepare.prepare_dataset`,
:func:`~cardbench.datasets.prepare.prepared_path` and :func:`~cardbench.datasets.prepare.prepare_dicom`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cardbench.cli import errors as _errors

out = Console()
err = Console(stderr=True)


def _fail(msg: str, code: int = 1) -> None:
    _errors.fail(msg, code)  # one escaped line; exit codes in cardbench.cli.errors


def volume_rows(folder: Path) -> list[dict]:
    """Per-subject ED/ES frames and volumes of a prepared folder (subjects.csv + volumes.csv)."""
    import pandas as pd

    from cardbench.datasets.phases import ejection_fraction
    from cardbench.formulas import MYOCARDIAL_DENSITY_G_PER_ML

    subj = pd.read_csv(folder / "subjects.csv", dtype={"subject": str}).set_index("subject")
    vol = pd.read_csv(folder / "volumes.csv", dtype={"subject": str})
    rows = []
    for s, r in subj.iterrows():
        v = vol[vol["subject"] == s].set_index("phase")
        edv, esv = float(v.at["ED", "LV_mL"]), float(v.at["ES", "LV_mL"])
        my = v.at["ED", "MY_mL"]
        rows.append({"subject": s, "split": r.get("split", ""), "ed_frame": int(r["ed_frame"]),
                     "es_frame": int(r["es_frame"]), "n_slices": int(r.get("n_slices", 0)),
                     "pixel_spacing_mm": float(r.get("pixel_spacing_mm", math.nan)),
                     "slice_spacing_mm": float(r.get("slice_spacing_mm", math.nan)),
                     "EDV_mL": edv, "ESV_mL": esv, "EF_pct": ejection_fraction(edv, esv),
                     "LV_mass_ED_g": None if pd.isna(my) else float(my) * MYOCARDIAL_DENSITY_G_PER_ML})
    return rows


def contour_agreement(folder: Path) -> str:
    """One line: how far the label-map volumes are from the polygon (shoelace) volumes in volumes.csv."""
    import pandas as pd

    vol = pd.read_csv(folder / "volumes.csv")
    parts = []
    for c in ("LV", "MY"):
        if f"{c}_contour_mL" not in vol.columns:
            continue
        v = vol[[f"{c}_mL", f"{c}_contour_mL"]].dropna()
        if len(v):
            rel = (v[f"{c}_mL"] - v[f"{c}_contour_mL"]).abs() / v[f"{c}_contour_mL"] * 100
            parts.append(f"{c} max {rel.max():.2f} % (mean {rel.mean():.2f} %, n={len(v)})")
    return ("label-map vs contour (shoelace) volumes, |difference|: " + "; ".join(parts)) if parts else ""


def volume_table(folder: Path) -> Table:
    """A rich table of per-subject ED/ES frames, EDV, ESV, EF and LV mass of a prepared folder."""
    from rich import box

    t = Table(title=f"{folder.name}: LV volumes from the label maps", caption="volume = voxel count x voxel "
              "volume; LV mass = MY volume x 1.05 g/mL; EF = (EDV - ESV) / EDV", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True)
    for c in ("subject", "split", "ED", "ES", "slices", "voxel mm", "EDV mL", "ESV mL", "EF %", "mass g"):
        t.add_column(c, justify="left" if c in ("subject", "split") else "right", no_wrap=True)
    for r in volume_rows(folder):
        t.add_row(r["subject"], str(r["split"]), str(r["ed_frame"]), str(r["es_frame"]), str(r["n_slices"]),
                  f"{r['pixel_spacing_mm']:.2f}x{r['pixel_spacing_mm']:.2f}x{r['slice_spacing_mm']:.0f}",
                  f"{r['EDV_mL']:.1f}", f"{r['ESV_mL']:.1f}", f"{r['EF_pct']:.1f}",
                  "-" if r["LV_mass_ED_g"] is None else f"{r['LV_mass_ED_g']:.1f}")
    return t


def prepare_cmd(
    name: str = typer.Argument(..., help="Dataset to prepare: sunnybrook-sample; `dicom` for your own DICOM "
                                         "folder (with --dicom); `kaggle` to curate the Kaggle Data Science Bowl "
                                         "DICOM studies (with --source RAW)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Destination folder (replaced atomically). "
                                           "Default: the prepared-data cache (<cache>/prepared/<name>-<version>)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Folder with the registry layout holding the raw "
                                          "files (e.g. a `cardbench data fetch` cache or a mirror); default: the copy embedded in cardbench."),
    refresh: bool = typer.Option(False, "--refresh", help="Rebuild the cached copy even when it exists."),
    print_path: bool = typer.Option(False, "--print-path", help="Print only the prepared folder's path (for "
                                    "`--reference \"$(cardbench data prepare sunnybrook-sample --print-path)\"`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the per-subject results as JSON."),
    dicom: Optional[Path] = typer.Option(None, "--dicom", help="[dicom] Folder of one subject's cine DICOM files."),
    contours: Optional[Path] = typer.Option(None, "--contours", help="[dicom] Folder of Sunnybrook-style contour "
                                            "files (IM-0001-NNNN-icontour-manual.txt; NNNN = InstanceNumber)."),
    subject: Optional[str] = typer.Option(None, "--subject", help="[dicom] Subject id (default: PatientID)."),
    frames: Optional[str] = typer.Option(None, "--frames", help="[dicom] Comma-separated frames to stack "
                                         "(default: every frame present at every slice)."),
    cine: bool = typer.Option(False, "--cine", help="[dicom] Also write the 4D cine <s>_cine.nii.gz."),
    ed: Optional[int] = typer.Option(None, "--ed", help="[dicom] ED frame (default: from the LV volume curve when "
                                     "every frame is labelled)."),
    es: Optional[int] = typer.Option(None, "--es", help="[dicom] ES frame."),
) -> None:
    """Convert a dataset's raw files (DICOM + contours) into the standard layout.

    `cardbench data prepare sunnybrook-sample --out DIR` builds images and ED/ES label volumes, subjects.csv
    (split, ed_frame, es_frame), annotations.csv, sources.csv, volumes.csv and card.yaml from the raw
    Sunnybrook files shipped in cardbench (sha256-checked), and prints the LV volumes. Without --out it
    prepares once into the cache and reuses it. `cardbench data prepare dicom --dicom DIR [--contours DIR]
    --out OUT` converts your own cine DICOM folder. `cardbench data prepare kaggle --source RAW --out OUT` curates
    the Kaggle studies as the seed did and writes conversion.log.
    """
    from cardbench.datasets.contours import ContourError
    from cardbench.datasets.dicom import DicomError
    from cardbench.datasets.embedded import IntegrityError
    from cardbench.datasets.prepare import prepare_dataset, prepare_dicom, prepared_path
    from cardbench.datasets.sunnybrook import SunnybrookError

    progress = True  # a bar in a terminal, a line per 10 % in a log (cardbench._progress)
    try:
        if name == "kaggle":
            if source is None or out_dir is None:
                _fail("`prepare kaggle` needs --source (the Kaggle download holding */<id>/study folders) and --out", 2)
            from cardbench.datasets.kaggle import curate_kaggle

            log, dims = curate_kaggle(source, out_dir, progress=progress)
            counts: dict[str, int] = {}
            for e in log.entries:
                counts[e.problem] = counts.get(e.problem, 0) + 1
            t = Table(title=f"Kaggle curation: {len(dims)} stacks written to {out_dir}")
            t.add_column("problem")
            t.add_column("lines", justify="right")
            for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
                t.add_row(k, str(v))
            out.print(t)
            err.print(f"log: {Path(out_dir) / 'conversion.log'}; sizes: {Path(out_dir) / 'patient_dimensions.tsv'}",
                      highlight=False, markup=False)
            return
        if name == "dicom":
            if dicom is None or out_dir is None:
                _fail("`prepare dicom` needs --dicom DIR and --out DIR", 2)
            fr = [int(x) for x in frames.split(",") if x.strip()] if frames else None
            res = prepare_dicom(dicom, out_dir, subject=subject, contours=contours, frames=fr, cine=cine,
                                ed_frame=ed, es_frame=es, progress=progress)
            if as_json:
                typer.echo(json.dumps(res, indent=2, default=str))
            elif not print_path:
                err.print(f"{res['subject']}: frames {res['frames']} stacked, labels at {res['labelled_frames']}, "
                          f"ED {res['ed_frame']} ES {res['es_frame']} ({res['ed_es_source']})", highlight=False,
                          markup=False)
            typer.echo(str(out_dir))
            return
        if out_dir is None:
            dest = prepared_path(name, source=source, refresh=refresh, progress=progress)
        else:
            dest = out_dir
            prepare_dataset(name, dest, source=source, progress=progress)
    except KeyError as e:
        _fail(str(e.args[0]) if e.args else str(e), 2)
    except (IntegrityError, SunnybrookError, DicomError, ContourError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except FileExistsError as e:
        _fail(str(e), 2)
    if print_path:
        typer.echo(str(dest))
        return
    if as_json:
        typer.echo(json.dumps({"path": str(dest), "subjects": volume_rows(Path(dest))}, indent=2))
        return
    out.print(volume_table(Path(dest)))
    out.print(contour_agreement(Path(dest)), highlight=False)
    err.print(f"prepared {name} in {dest} (score against it: cardbench score PREDICTIONS --reference {dest})",
              highlight=False, markup=False)


def register(data_app: typer.Typer) -> None:
    """Add ``prepare`` to the ``cardbench data`` sub-app."""
    data_app.command("prepare")(prepare_cmd)


try:  # registered when cardbench.cli.data imports this module (at its end)
    from cardbench.cli.data import data_app as _data_app
except ImportError:  # pragma: no cover - data sub-app not available
    _data_app = None
if _data_app is not None and not any(getattr(c, "name", None) == "prepare" for c in _data_app.registered_commands):
    register(_data_app)
