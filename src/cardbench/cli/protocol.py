"""``cardbench protocol list`` and ``cardbench protocol show``: the built-in scoring protocols as data."""

from __future__ import annotations

import typer

from cardbench.cli import app
from cardbench.cli.score import fail

protocol_app = typer.Typer(help="Scoring protocols: list them, print one as YAML (a file `score --protocol` reads).",
                           no_args_is_help=True)
app.add_typer(protocol_app, name="protocol")


@protocol_app.command("list")
def protocol_list() -> None:
    """List the built-in protocols: name, version, level, aggregation, metrics, NSD tolerance."""
    from cardbench.benchmark.protocols import DEFAULT_PROTOCOL, PROTOCOLS

    for name, p in PROTOCOLS.items():
        tol = p.nsd_tolerance()
        typer.echo(f"{name} v{p.version}{' (default)' if name == DEFAULT_PROTOCOL else ''}: per {p.level}, "
                   f"{p.aggregation} mean; {', '.join(p.all_metrics)}"
                   + (f"; NSD tolerance {tol} mm" if tol is not None else ""))
    typer.echo("`cardbench protocol show NAME` prints one as YAML; `cardbench score --protocol FILE.yaml` scores "
               "with yours.")


@protocol_app.command("show")
def protocol_show(name: str = typer.Argument(..., help="A built-in protocol name or a protocol file (.yaml).")) -> None:
    """Print a protocol as YAML; save it, edit it and score with `cardbench score --protocol FILE.yaml`."""
    from cardbench.benchmark.protocols import ProtocolError, get_protocol

    try:
        proto = get_protocol(name)
    except ProtocolError as e:
        fail(str(e))
    typer.echo(proto.to_yaml(), nl=False)
