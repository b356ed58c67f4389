"""The ``riskloop`` command line: parses arguments, builds Settings, calls the library.

One module per command group (data, features, pipelines, models, serving, delivery, monitoring, audit,
cluster); this module assembles them into one Typer app. Commands raise :mod:`riskloop.errors`
exceptions and never catch them: the one handler here, around every command, prints what went wrong,
where and how to fix it, and exits with the code the error maps to. Never a traceback.

Exit codes: 0 done; 1 the command ran and its answer is "no" (an audit log broken, a rebuild that
differs, a failed pipeline step, a lineage hop missing); 2 it could not do what was asked (bad input or
configuration, missing state, an unreachable service: every :class:`~riskloop.errors.RiskloopError`).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from riskloop.cli import audit, cluster, data, delivery, features, models, monitoring, pipelines, serving, spec
from riskloop.cli.common import console, out
from riskloop.errors import ConfigError, RiskloopError

EXIT_BAD_INPUT = 2
# the exit code of each error family, most specific first; bad input and configuration are 2, and so is every
# other error a user can cause (missing state, an unreachable service): the code scripts already rely on
EXIT_CODES: tuple[tuple[type[RiskloopError], int], ...] = ((ConfigError, EXIT_BAD_INPUT), (RiskloopError, 2))


def exit_code(exc: RiskloopError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


def report(exc: RiskloopError) -> None:
    """What went wrong, where, how to fix it (the error's own fields), on stderr."""
    console.print(f"[bold red]error:[/] {escape(exc.what)}", highlight=False, soft_wrap=True)
    if exc.where:
        console.print(f"  where: {escape(exc.where)}", highlight=False, soft_wrap=True)
    if exc.fix:
        console.print(f"  how to fix: {escape(exc.fix)}", highlight=False, soft_wrap=True)


def _follow_columns() -> None:
    """Rich fixes a console's width from ``COLUMNS`` when the console is made (at import); a command run
    later in the same process (a test, an embedding program) with another ``COLUMNS`` gets its own."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        console.width = out.width = int(columns)


class _Riskloop(TyperGroup):
    """The top-level group: every command, at any depth, runs inside its ``invoke``."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors click: its Context type is private (typer._click)
        _follow_columns()
        try:
            return super().invoke(ctx)
        except RiskloopError as exc:
            report(exc)
            raise typer.Exit(code=exit_code(exc)) from None


# rich markup, not markdown: markdown drops <DAY>-style placeholders from help texts
app = typer.Typer(
    cls=_Riskloop,
    help="riskloop: production MLOps for tabular risk models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(spec.spec_app, name="spec")
app.add_typer(data.data_app, name="data")
app.add_typer(features.features_app, name="features")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(delivery.canary_app, name="canary")
app.add_typer(cluster.cluster_app, name="cluster")
app.add_typer(pipelines.run_app, name="run")
for name, command in (
    ("version", cluster.version_cmd),
    ("compile", pipelines.compile_cmd),
    ("serve", serving.serve_cmd),
    ("score", serving.score_cmd),
    ("replay", serving.replay_cmd),
    ("monitor", monitoring.monitor_cmd),
    ("card", models.card_cmd),
    ("reproduce", models.reproduce_cmd),
    ("approve", models.approve_cmd),
    ("lineage", models.lineage_cmd),
    ("history", models.history_cmd),
):
    app.command(name)(command)


def _reflow(doc: str) -> str:
    """A docstring as help: prose paragraphs on one line (rich mode keeps single line breaks, and the
    terminal wraps), indented blocks (the examples) line by line."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.splitlines()) for p in paragraphs
    )


for info in [
    *app.registered_commands,
    *(c for g in app.registered_groups if g.typer_instance is not None for c in g.typer_instance.registered_commands),
]:
    if info.help is None and info.callback is not None and info.callback.__doc__:
        info.help = _reflow(info.callback.__doc__)


def main() -> None:
    app()


__all__ = ["EXIT_CODES", "app", "exit_code", "main"]
