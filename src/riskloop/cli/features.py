"""``riskloop features ...``: the offline tables and Feast registry, the online store, a lookup."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import typer

from riskloop.cli.common import SpecOpt, console, out, parse_day, parse_time, settings, summary
from riskloop.errors import ConfigError

features_app = typer.Typer(help="Build, register and serve features with Feast.", no_args_is_help=True)


@features_app.command("apply")
def features_apply(spec: SpecOpt = "synthetic-fraud") -> None:
    """Compute the offline feature tables from validated data and register the Feast objects.

    The same step the feature pipeline runs (riskloop.steps.build_features), on the rows
    `riskloop data validate` kept.

    Example:

        riskloop features apply && riskloop features materialize
    """
    from riskloop.data.io import read_validated
    from riskloop.data.spec import load_spec
    from riskloop.features.store import StoreConfig
    from riskloop.steps import build_features

    s = settings()
    ds = load_spec(spec)
    cfg = StoreConfig.from_settings(s)
    with console.status("computing feature tables and applying the Feast definitions"):
        tx = read_validated(ds, s.root)
        with tempfile.TemporaryDirectory(dir=s.root) as tmp:  # the step takes its input as one file
            valid = Path(tmp) / "valid.parquet"
            tx.to_parquet(valid, index=False)
            paths = build_features(spec, valid, s)
    summary("features applied", {"transactions": len(tx), **paths, "registry": cfg.repo_dir / "registry.db"})


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None, typer.Option(help="Load rows stamped up to this day (YYYY-MM-DD); default: the newest.")
    ] = None,
    days_back: Annotated[int, typer.Option(min=1, help="How far back to load.")] = 60,
) -> None:
    """Load the offline feature rows into the online store.

    Examples:

        riskloop features materialize

        riskloop features materialize --end 2026-01-21
    """
    import pandas as pd

    from riskloop.features.definitions import CARD_DAILY_FILE
    from riskloop.features.store import StoreConfig, materialize, open_store

    s = settings()
    cfg = StoreConfig.from_settings(s)
    if end is None:
        table = cfg.offline_dir / CARD_DAILY_FILE
        if not table.exists():
            raise ConfigError("no feature tables yet", where=str(table), fix="run `riskloop features apply` first")
        stamps = pd.read_parquet(table, columns=["feature_timestamp"])["feature_timestamp"]
        end_dt = stamps.max().to_pydatetime()
    else:
        end_dt = datetime.combine(parse_day(end, "--end"), datetime.min.time(), tzinfo=timezone.utc)
    start_dt = end_dt - timedelta(days=days_back)
    with console.status(f"materializing {start_dt:%Y-%m-%d} .. {end_dt:%Y-%m-%d}"):
        materialize(open_store(cfg), start_dt, end_dt)
    summary("materialized", {"from": start_dt, "to": end_dt, "online store": cfg.online_store})


@features_app.command("online")
def features_online(
    card_id: Annotated[str, typer.Option(help="Card to look up, e.g. C000042.")],
    merchant_id: Annotated[str, typer.Option(help="Merchant of the hypothetical transaction.")] = "M00001",
    amount: Annotated[float, typer.Option(help="Amount of the hypothetical transaction.")] = 50.0,
    country: Annotated[str, typer.Option(help="Country of the hypothetical transaction.")] = "DE",
    at: Annotated[
        str | None,
        typer.Option(
            help="Time of the hypothetical transaction, ISO 8601 with offset (default: now). Batch rows "
            "older than their view's TTL at this time count as missing, as in training."
        ),
    ] = None,
) -> None:
    """Show the online features the model would see for a card's transaction.

    Example:

        riskloop features online --card-id C000042 --at 2026-01-30T12:00:00+00:00
    """
    from riskloop.features.compute import epoch_us, hour_of_day
    from riskloop.features.definitions import FEATURE_SERVICE
    from riskloop.features.store import OnlineFeatures, StoreConfig, open_store

    s = settings()
    when = datetime.now(timezone.utc) if at is None else parse_time(at, "--at")
    if when.tzinfo is None:
        raise ConfigError(f"--at {at!r} has no UTC offset", where="--at", fix="add one, e.g. 2026-01-30T12:00:00+00:00")
    us = epoch_us(when)
    row = {
        "card_id": card_id,
        "merchant_id": merchant_id,
        "amount": amount,
        "country": country,
        "event_hour": hour_of_day(us),
        "event_us": us,
    }
    feats, states, known = OnlineFeatures(open_store(StoreConfig.from_settings(s)), FEATURE_SERVICE).lookup([row])
    out.print_json(
        json.dumps(
            {
                "card_id": card_id,
                "at": when.isoformat(),
                "known_card": known[0],
                "features": feats[0],
                "recent_transactions": len(states[0].event_us),
            },
            default=str,
        )
    )
