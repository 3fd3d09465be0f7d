"""`sr-search`: a thin typer layer over the library. Parses, calls, prints; `SrSearchError` -> exit 1,
any other failure -> exit 2 (DESIGN 4.1)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from .errors import SrSearchError

app = typer.Typer(
    help="Architecture search and ablations for efficient super-resolution.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_BAD_INPUT = 1
EXIT_RUNTIME = 2


def _guarded(fn: Callable) -> Callable:
    """Turn library errors into a one-screen message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SrSearchError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            typer.echo(f"runtime failure: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(EXIT_RUNTIME) from None

    return wrapper


@app.command()
@_guarded
def inspect(
    models: list[str] = typer.Argument(..., help="preset names (see `sr-search presets`) or ArchSpec JSON objects"),
    scale: Optional[int] = typer.Option(None, help="override the scale (x2/x3 variants of the same model)"),
    protocol: str = typer.Option("cpu", help="timing protocol whose input size the MACs are counted at"),
) -> None:
    """Parameters (training and deployed form), MACs of the deployed form and the deploy error."""
    from .inspect import inspect_table

    specs = {name: _resolve(name, scale) for name in models}
    typer.echo(inspect_table(specs, protocol))


@app.command()
@_guarded
def presets() -> None:
    """List the paper baselines by name with their deployed parameter counts."""
    from .presets import PRESETS, RELEASED_PARAMS

    for name, spec in PRESETS.items():
        released = RELEASED_PARAMS.get(name)
        note = f"  (released: {released:,})" if released else ""
        typer.echo(f"{name:20s} {spec.block:10s} C={spec.channels:<3d} depth={spec.depth:<3d}{note}")


def _resolve(name: str, scale: Optional[int]):
    from .presets import resolve

    return resolve(name, scale)


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
