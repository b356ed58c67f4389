"""``riskloop serve``, ``score`` and ``replay``: the model server and the traffic sent to it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from riskloop.cli.common import SpecOpt, VersionSpecOpt, model_name, out, parse_day, settings, summary, version_spec
from riskloop.errors import ConfigError, RiskloopError, ServiceUnavailable
from riskloop.settings import Settings

if TYPE_CHECKING:
    from riskloop.data.spec import DatasetSpec


def serve_cmd(
    model_alias: Annotated[
        str | None, typer.Option(help="Serve only the version this alias points at (pinned: no deployment record).")
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="Serve only this registry version (pinned).")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Serve a model directory (the cluster: /mnt/models).")] = None,
    challenger_alias: Annotated[
        str | None, typer.Option(help="Deploy this alias's version as challenger beside the champion before serving.")
    ] = None,
    challenger_version: Annotated[str | None, typer.Option(help="Deploy this version as challenger.")] = None,
    canary_percent: Annotated[int, typer.Option(min=0, max=100, help="Challenger's share of requests.")] = 10,
    shadow: Annotated[bool, typer.Option(help="Challenger scores a copy of every request; champion answers.")] = False,
    sticky: Annotated[
        bool,
        typer.Option(
            help="Route by a hash of card_id (a card stays on one model; biases "
            "the comparison, see `riskloop canary deploy --help`)."
        ),
    ] = False,
    host: Annotated[str | None, typer.Option(help="Bind address; default 127.0.0.1 (settings).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="HTTP port; default 8080 (settings).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=32, help="Worker processes.")] = None,
    max_instances: Annotated[int, typer.Option(min=1, max=10_000, help="Instances per request.")] = 256,
    features: Annotated[
        str, typer.Option(help="feast (default) | none: no feature store, for overhead benchmarks.")
    ] = "feast",
    spec: VersionSpecOpt = None,
) -> None:
    """Serve KServe's V1 and the Open Inference Protocol (V2 REST): any dataset spec.

    A Feast-backed spec (synthetic-fraud) is scored with online features from Feast; a raw-column
    spec (features.source: raw, e.g. a credit spec) from each request's own columns, with the request
    schema built from the spec's contract. Every answer can carry the top reasons of each decision
    (`"reasons": N` in a V1 body); see `riskloop score --help`.

    By default the server follows the deployment record (.riskloop/deployments/<model>.json,
    created from the `champion` alias on first use): champion, challenger, canary share
    or shadow mode, switched live when `riskloop canary ...` or the delivery pipeline
    changes it. The dataset spec (features, request contract) is the one the served champion
    (or pinned version, or model directory) was trained under. A predictor pod runs
    `python -m riskloop.serving --model-dir /mnt/models` (the same server, without the record).

    Examples:

        riskloop serve

        riskloop serve --challenger-alias challenger --canary-percent 20

        riskloop serve --challenger-alias challenger --shadow

        riskloop serve --model-alias champion          # pinned, no record

        riskloop serve --spec credit.yaml              # the credit model's champion

        riskloop serve --model-dir /mnt/models --host 0.0.0.0 --port 8080
    """
    from riskloop.serving.__main__ import build_server, model_dir_spec, run_server

    s = settings()
    pinned = bool(model_alias or model_version or model_dir)
    if pinned and (challenger_alias or challenger_version or shadow):
        raise ConfigError(
            "a pinned model (--model-alias/--model-version/--model-dir) has no challenger",
            fix="drop the pin to serve from the deployment record",
        )
    if shadow and not (challenger_alias or challenger_version):
        raise ConfigError("--shadow needs a challenger", fix="add --challenger-alias challenger")
    name = model_name(s, spec)
    if challenger_alias or challenger_version:
        from riskloop.delivery import rollout

        rollout.deploy_challenger(
            s,
            name,
            alias=challenger_alias,
            version=challenger_version,
            canary_percent=0 if shadow else canary_percent,
            mode="shadow" if shadow else "canary",
            sticky=sticky,
            reason="riskloop serve --challenger-...",
        )
    if model_dir is not None:
        ds = model_dir_spec(s, model_dir, spec)
    else:
        ds = _registered_spec(s, name, spec, alias=model_alias, version=model_version, pinned=pinned)
    server, model = build_server(
        s,
        name,
        ds,
        follow_record=not pinned,
        alias=model_alias,
        version=model_version,
        model_dir=model_dir,
        host=host,
        port=port,
        workers=workers,
        max_instances=max_instances,
        features=features,
    )
    run_server(server, model)


def _registered_spec(
    s: Settings, name: str, given: str | None, *, alias: str | None, version: str | None, pinned: bool
) -> Any:
    """The spec of the registered version served: the record's champion (the record is created on first use),
    or the pinned alias/version; a --spec given must be that spec.

    A pinned version serves alone, as a champion would: it must be approved where its spec requires it.
    """
    from riskloop.audit.approval import check_approved
    from riskloop.delivery import rollout
    from riskloop.registry.mlflow_registry import resolve_version

    champion = None if pinned else rollout.ensure_deployment(s, name).champion_version
    info = resolve_version(s.tracking_uri, name, alias=alias, version=version or champion)
    source = version_spec(s, info, given)
    if pinned:
        check_approved(s, name, info.version, action="serving")
    return source.parse()


def score_cmd(
    card_id: Annotated[str | None, typer.Option(help="Card id, e.g. C000042 (the fraud spec).")] = None,
    amount: Annotated[float | None, typer.Option(help="Amount in the transaction's currency (the fraud spec).")] = None,
    merchant_id: Annotated[str, typer.Option(help="Merchant id.")] = "M00001",
    merchant_category: Annotated[str, typer.Option()] = "grocery",
    channel: Annotated[str, typer.Option(help="pos | contactless | online")] = "pos",
    country: Annotated[str, typer.Option()] = "DE",
    currency: Annotated[str, typer.Option()] = "EUR",
    device_type: Annotated[str, typer.Option(help="terminal | mobile | desktop")] = "terminal",
    distance_from_home_km: Annotated[float, typer.Option()] = 5.0,
    card_age_days: Annotated[int, typer.Option()] = 365,
    transaction_id: Annotated[str | None, typer.Option(help="Default: a fresh id.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="COLUMN=VALUE, repeatable: one column of the instance, typed by the spec's contract "
            "(COLUMN= leaves it missing). Any spec; for the fraud spec it overrides the options above.",
        ),
    ] = None,
    explain: Annotated[bool, typer.Option(help="Include the top feature contributions.")] = True,
    reasons: Annotated[
        int, typer.Option(min=0, max=10, help="Include the top N reasons: the features that raised the score most.")
    ] = 3,
    spec: SpecOpt = "synthetic-fraud",
    url: Annotated[str | None, typer.Option(help="Server URL; default http://127.0.0.1:<settings port>.")] = None,
) -> None:
    """Score one instance on a running `riskloop serve`, for a quick check.

    The fraud spec takes its transaction from the options; any other spec (raw columns, e.g. a credit
    application) from `--set COLUMN=VALUE`, one per column the model reads (nullable ones may be left
    out). The answer carries the score, the decision and the top reasons: for a credit decision, the
    principal reasons an applicant is entitled to when turned down (an adverse-action notice), worded by
    the spec's `reasons:` texts.

    Examples:

        riskloop score --card-id C000042 --amount 950 --channel online --country NG

        riskloop score --spec credit.yaml --set duration_in_month=24 --set housing=rent --set savings=
    """
    import uuid

    import httpx

    from riskloop.data.spec import load_spec

    s = settings()
    base = url or f"http://127.0.0.1:{s.serving.http_port}"
    ds = load_spec(spec)
    given = _parse_sets(ds, sets or [])
    instance: dict[str, Any]
    if ds.features.source == "feast":
        card_id = given.pop("card_id", card_id)
        amount = given.pop("amount", amount)
        if card_id is None or amount is None:
            raise ConfigError(
                f"spec {ds.name} scores a transaction: --card-id and --amount are required",
                where="riskloop score",
                fix="e.g. riskloop score --card-id C000042 --amount 950",
            )
        instance = {
            "transaction_id": transaction_id or f"cli-{uuid.uuid4().hex[:12]}",
            "card_id": card_id,
            "merchant_id": merchant_id,
            "amount": amount,
            "currency": currency,
            "merchant_category": merchant_category,
            "channel": channel,
            "country": country,
            "device_type": device_type,
            "distance_from_home_km": distance_from_home_km,
            "card_age_days": card_age_days,
        }
    else:
        if card_id is not None or amount is not None:
            raise ConfigError(
                f"--card-id and --amount are the fraud spec's; spec {ds.name} takes its columns from --set",
                where="riskloop score",
                fix=f"e.g. --set {next(iter(ds.features.raw_columns), 'column')}=VALUE",
            )
        instance = {ds.id_column: transaction_id or f"cli-{uuid.uuid4().hex[:12]}"}
    instance.update(given)
    name = ds.registered_model(s.mlflow.model_name)
    body = {"instances": [instance], "explain": explain, "reasons": reasons}
    try:
        r = httpx.post(f"{base}/v1/models/{name}:predict", json=body, timeout=10)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot reach the model server at {base}: {exc}",
            fix=f"start it with `riskloop serve --spec {spec}`",
        ) from None
    if r.status_code != 200:
        raise RiskloopError(f"the server answered {r.status_code}: {r.text}")
    out.print_json(json.dumps(r.json()["predictions"][0]))


def _parse_sets(ds: DatasetSpec, sets: list[str]) -> dict[str, Any]:
    """``--set COLUMN=VALUE`` pairs as request fields, typed by the spec's contract; ``COLUMN=`` is missing (None)."""
    import math

    from riskloop.data.spec import ColumnType

    columns = ds.contract.columns
    labels = {c for c in (ds.label.column, ds.label.available_at) if c}
    accepted = ", ".join(c for c in columns if c not in labels and c != ds.timestamp_column)
    out: dict[str, Any] = {}
    for item in sets:
        column, sep, text = item.partition("=")
        column = column.strip()
        where = f"--set {item}"
        if not sep or not column:
            raise ConfigError("--set needs COLUMN=VALUE", where=where, fix="e.g. --set duration_in_month=24")
        if column in labels:
            raise ConfigError(
                f"{column} is the label (the outcome the model predicts), never an input",
                where=where,
                fix="leave it out",
            )
        if column not in columns:
            raise ConfigError(f"spec {ds.name} has no column {column!r}", where=where, fix=f"use one of: {accepted}")
        if column in out:
            raise ConfigError(f"{column} is given twice", where=where, fix="give each column once")
        rule = columns[column]
        value: Any = text
        if text == "":
            value = None
        elif rule.type is ColumnType.integer:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{column} takes an integer, not {text!r}", where=where) from None
        elif rule.type is ColumnType.float:
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{column} takes a number, not {text!r}", where=where) from None
            if not math.isfinite(value):
                raise ConfigError(f"{column} takes a finite number, not {text!r}", where=where)
        out[column] = value
    return out


def replay_cmd(
    day: Annotated[str, typer.Option(help="Landed day to send, YYYY-MM-DD (UTC).")],
    url: Annotated[
        str, typer.Option(help="Model server base URL (on a cluster: Kourier, port-forwarded).")
    ] = "http://127.0.0.1:8080",
    host_header: Annotated[
        str | None,
        typer.Option(
            help="Host header, for Knative's routing: <service>.<namespace>.<domain>, e.g. "
            "fraud-detector.riskloop-models.example.com"
        ),
    ] = None,
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
    from riskloop.data.spec import load_spec
    from riskloop.serving.replay import Replay, day_instances

    s = settings()
    when = parse_day(day, "--day")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url {url!r} is not an http(s) URL", where="--url", fix="e.g. --url http://127.0.0.1:8080")
    ds = load_spec(spec)
    rows = day_instances(s, ds, when)[:limit]
    if not rows:
        raise ConfigError(
            f"day {when} has no valid transactions to send",
            where=str(ds.source_path(s.shared)),
            fix="pick a day with landed data (`riskloop data validate` shows the quarantine)",
        )
    name = ds.registered_model(s.mlflow.model_name)
    headers = {"host": host_header} if host_header else {}
    replay = Replay(
        url.rstrip("/"), name, rows, connections=connections, batch_size=batch_size, once=True, headers=headers
    ).start()
    replay.wait()
    answers = replay.answers()
    statuses = Counter(a.status for a in answers)
    summary(
        f"replayed {when} to {url}",
        {
            "model": name,
            "transactions": len(rows),
            "requests": len(answers),
            "answers": ", ".join(f"{'no answer' if k == 0 else k}: {n}" for k, n in sorted(statuses.items())),
            "model versions": ", ".join(sorted({a.model_version for a in answers if a.model_version})) or "-",
        },
    )
    if set(statuses) != {200}:
        raise typer.Exit(code=1)
