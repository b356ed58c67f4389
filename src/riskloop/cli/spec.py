"""``riskloop spec ...``: write a dataset spec from a data file, and check one (optionally against a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from riskloop.cli.common import console, out
from riskloop.errors import ConfigError

spec_app = typer.Typer(
    help="Write a dataset spec from a CSV or parquet sample, and check a spec: the first steps with your own data.",
    no_args_is_help=True,
)

PARQUET_SUFFIXES = (".parquet", ".pq")


@spec_app.command("init")
def spec_init(
    data_file: Annotated[Path, typer.Argument(help="A CSV or parquet sample of the data (all rows are read).")],
    name: Annotated[str, typer.Option(help="Dataset name; also the registered model's name.")],
    label: Annotated[str, typer.Option(help="The label column (what the model predicts).")],
    positive: Annotated[str, typer.Option(help="The label value that means the positive class, e.g. bad.")],
    id_column: Annotated[
        str | None,
        typer.Option("--id", help="Column that identifies a row; default: `data land` adds row_id (row number)."),
    ] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="Timestamp column; default: none (one snapshot, stratified split).")
    ] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Spec file to write; default NAME.yaml.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the --out file if it exists.")] = False,
) -> None:
    """Write a complete, commented dataset spec inferred from a data file.

    Types, missing values and categories come from pandera's inference; observed ranges are comments. Edit
    the spec where the comments say, then check it with `riskloop spec check`.

    Examples:

        riskloop spec init credit.csv --name credit --label status --positive bad

        riskloop spec init loans.parquet --name loans --label default --positive 1 --id loan_id --time applied_at
    """
    from riskloop.data.infer import InitRequest, init_spec, read_data_file

    target = out_file or Path(f"{name}.yaml")
    if target.exists() and not force:
        raise ConfigError(f"{target} exists", where="--out", fix="pass another --out file, or --force to overwrite it")
    frame = read_data_file(data_file)
    kind = "parquet" if data_file.suffix.lower() in PARQUET_SUFFIXES else "csv"
    request = InitRequest(name, label, positive, id_column, time, source_file=str(data_file), source_kind=kind)
    text = init_spec(frame, request)
    target.write_text(text, encoding="utf-8")
    console.print(
        f"wrote {escape(str(target))} ({len(frame):,} rows, {len(frame.columns)} columns read)", soft_wrap=True
    )
    console.print(
        f"next: edit it, then [bold]riskloop spec check {escape(str(target))} --data {escape(str(data_file))}[/]",
        soft_wrap=True,
    )


@spec_app.command("check")
def spec_check(
    spec_file: Annotated[str, typer.Argument(help="A spec YAML file, or a shipped spec's name.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="A data file (CSV or parquet) to check the spec against.")
    ] = None,
) -> None:
    """Check a dataset spec: print ok and a summary, or each problem with its fix (exit 2).

    Warnings (the spec works, but probably not as meant: an unknown categorical column, YAML booleans
    where text was meant, columns the data has and the spec does not name, a feature that is entirely
    missing) are printed with their fix and do not change the exit code.

    Examples:

        riskloop spec check credit.yaml

        riskloop spec check credit.yaml --data credit.csv
    """
    from riskloop.data.infer import check_spec
    from riskloop.data.spec import read_spec_source

    source = read_spec_source(spec_file)
    report = check_spec(source.text, where=source.where, data=data, data_where=str(data))
    last_fix = None
    for kind, findings in (("problem", report.problems), ("warning", report.warnings)):
        for finding in findings:
            colour = "red" if kind == "problem" else "yellow"
            console.print(f"[bold {colour}]{kind}:[/] {escape(finding.what)}", highlight=False, soft_wrap=True)
            if finding.fix and finding.fix != last_fix:  # an invalid spec's problems share one fix: say it once
                console.print(f"  how to fix: {escape(finding.fix)}", highlight=False, soft_wrap=True)
            last_fix = finding.fix
    if report.problems or report.spec is None:
        console.print(f"{len(report.problems)} problem(s) in {escape(source.where)}", highlight=False)
        raise typer.Exit(code=2)
    spec = report.spec
    out.print(f"ok: {escape(source.where)}", highlight=False)
    label = spec.label
    if label.positive:
        positive = f"positive: {', '.join(map(str, label.positive))}"
    else:
        positive = f"mapping: {label.mapping}" if label.mapping else "already 0/1"
    features = (
        f"{len(spec.features.raw_columns)} raw features" if spec.features.source == "raw" else spec.features.service
    )
    out.print(
        f"  dataset {spec.name}, model {spec.model_name or '(the default)'}; label {spec.label.column} "
        f"({positive}); {len(spec.contract.columns)} columns, {features}; split {spec.split.kind}"
        + (f"; {len(report.warnings)} warning(s) above" if report.warnings else ""),
        highlight=False,
        soft_wrap=True,
    )
