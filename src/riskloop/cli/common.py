"""What every command group shares: the consoles, Settings, option types, the summary table, model naming.

Nothing here catches errors: commands raise :class:`riskloop.errors.RiskloopError` and the one handler
in :mod:`riskloop.cli` turns it into a message and an exit code.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskloop.errors import ConfigError
from riskloop.settings import Settings, disable_telemetry

# rich drops colour by itself when the stream is not a terminal, and honours NO_COLOR
console = Console(stderr=True)  # progress, status and errors
out = Console()  # results a script may read

SpecOpt = Annotated[str, typer.Option("--spec", help="Dataset spec: a shipped name or a YAML path.")]
# commands about a registered version: the version carries the spec it was trained under; a --spec given
# names the model and must be that spec, byte for byte
VersionSpecOpt = Annotated[
    str | None,
    typer.Option(
        "--spec",
        help="Dataset spec (shipped name or YAML path) naming the model; it must be the spec the version "
        "was trained under (the version carries its own, so it can be left out).",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="Registered model name; default the --spec's model_name, else RISKLOOP_MLFLOW__MODEL_NAME."
    ),
]


def settings() -> Settings:
    """The one Settings of a command (entry points build it; the library is handed it)."""
    disable_telemetry()
    s = Settings()
    s.ensure_dirs()
    return s


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def summary(title: str, rows: dict[str, Any]) -> None:
    """The closing table of a command: what it did and where its outputs are."""
    t = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows.items():
        t.add_row(k, str(v))
    out.print(t)


def parse_day(text: str, option: str) -> date:
    """A ``YYYY-MM-DD`` option; anything else is bad input naming the option."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a date", where=option, fix="use YYYY-MM-DD, e.g. 2026-01-31"
        ) from None


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time option; anything else is bad input naming the option."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not an ISO 8601 time", where=option, fix="use e.g. 2026-01-30T12:00:00+00:00"
        ) from None


def model_name(s: Settings, spec: str | None, model: str | None = None) -> str:
    """The registered model a command acts on: --model, the pod's RISKLOOP_MODEL_NAME, the --spec's, the default."""
    from riskloop.data.spec import load_spec

    if model is not None:
        if spec is not None and load_spec(spec).registered_model(s.mlflow.model_name) != model:
            raise ConfigError(
                f"--model {model} is not the model of --spec {spec}",
                fix="give one of them, or the two that belong together",
            )
        return model
    if s.model_name:
        return s.model_name
    return s.mlflow.model_name if spec is None else load_spec(spec).registered_model(s.mlflow.model_name)


def version_spec(s: Settings, info: Any, given: str | None) -> Any:
    """The spec ``info`` was trained under (read from the version, checked against its hash and ``given``)."""
    from riskloop.registry.version_spec import check_given_spec
    from riskloop.registry.version_spec import version_spec as read

    source = read(s.tracking_uri, info)
    if given is not None:
        check_given_spec(given, source, info)
    return source
