"""The batch-scoring pipeline's step: one day's transactions scored by the model an alias points at."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from riskloop.data.spec import load_spec
from riskloop.errors import ConfigError, DataContractError
from riskloop.settings import Settings
from riskloop.steps.common import parse_day, valid_frame


class Scored(BaseModel):
    """How many rows were scored and flagged, by which registered version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    flagged: int
    model_version: str


def batch_score(
    spec_name: str, valid_path: Path, day: str, model_alias: str, out_path: Path, settings: Settings
) -> Scored:
    """Score one day's transactions with the model an alias points at, features from the offline store.

    ``valid_path`` holds validated rows of the day *and* the day before it: the
    real-time tier needs the previous 24 hours of each card's stream.
    """
    from riskloop.features.store import StoreConfig, historical_features, open_store
    from riskloop.model import load_model
    from riskloop.registry.mlflow_registry import download_model_dir, version_by_alias

    spec = load_spec(spec_name)
    name = spec.registered_model(settings.mlflow.model_name)
    info = version_by_alias(settings.tracking_uri, name, model_alias)
    if info is None:
        raise ConfigError(f"model {name!r} has no alias {model_alias!r}", fix="train and register a model first")
    bundle = load_model(
        download_model_dir(settings.tracking_uri, info.run_id), expected_sha256=info.tags["model_sha256"]
    )
    tx = valid_frame(spec, valid_path)
    d = parse_day(day, "day")
    start = pd.Timestamp(d.isoformat(), tz="UTC")
    day_rows = tx[(tx["event_timestamp"] >= start) & (tx["event_timestamp"] < start + pd.Timedelta(days=1))]
    if day_rows.empty:
        raise DataContractError(f"no transactions on {d}", where=str(valid_path), fix="ingest that day first")
    frame = day_rows.copy()
    if spec.features.source == "feast" and spec.features.service:
        store = open_store(StoreConfig.from_settings(settings))
        feats = historical_features(store, tx, spec.features.service).set_index("transaction_id")
        frame = frame.join(feats.drop(columns=[c for c in feats.columns if c in frame.columns]), on="transaction_id")
    from riskloop.features.compute import event_hour

    frame["event_hour"] = event_hour(frame["event_timestamp"])
    scores = bundle.predict_frame(frame)
    out = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"].to_numpy(),
            "event_timestamp": frame["event_timestamp"].to_numpy(),
            "score": scores,
            "fraud": scores >= bundle.threshold,
            "model_version": info.version,
        }
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(out_path, index=False)
    return Scored(rows=len(out), flagged=int(out["fraud"].sum()), model_version=info.version)
