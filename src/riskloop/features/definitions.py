"""Feast object definitions for the fraud feature service.

Built by a function of where the offline parquet files live, so the same
definitions serve the library (``apply`` from Python), the ``feast`` CLI
(``feature_repo/features.py`` calls :func:`build_definitions`) and the cluster.

* ``card_daily`` / ``merchant_daily``: batch tier, one row per entity per day,
  stamped at the start of the day they serve (see ``compute.py``);
* ``card_recent``: the real-time tier's state (recent event times and amounts),
  fed by a PushSource that the predictor writes after scoring, and by daily
  snapshots for materialization;
* ``transaction_context``: an OnDemandFeatureView in python mode relating the
  transaction to the card's usual behaviour;
* ``fraud_detector_v1``: the FeatureService the model is trained and served on.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

from riskloop.features.compute import (
    CARD_BATCH_FEATURES,
    CONTEXT_FEATURES,
    FEATURE_TIMESTAMP,
    MERCHANT_BATCH_FEATURES,
    STATE_AMOUNTS,
    STATE_EVENT_US,
)

FEATURE_SERVICE = "fraud_detector_v1"
CARD_DAILY_FILE = "card_daily.parquet"
MERCHANT_DAILY_FILE = "merchant_daily.parquet"
CARD_RECENT_FILE = "card_recent.parquet"
PUSH_SOURCE = "card_recent_push"
# Rows are written daily for every known entity; a 2-day TTL tolerates one missed run.
BATCH_TTL = timedelta(days=2)


@dataclass(frozen=True)
class Definitions:
    card: Entity
    merchant: Entity
    card_daily: FeatureView
    merchant_daily: FeatureView
    card_recent: FeatureView
    push_source: PushSource
    transaction_context: OnDemandFeatureView
    service: FeatureService

    def objects(self) -> list[Any]:
        return [
            self.card,
            self.merchant,
            self.card_daily,
            self.merchant_daily,
            self.card_recent,
            self.push_source,
            self.transaction_context,
            self.service,
        ]


def _transaction_context(inputs: dict[str, Any]) -> dict[str, Any]:
    # Feast stores this function's source and re-imports it in the feature server:
    # keep the import inside so it is self-contained.
    from riskloop.features.compute import CONTEXT_FEATURES, context_features

    out: dict[str, list[float]] = {name: [] for name in CONTEXT_FEATURES}
    for i in range(len(inputs["amount"])):
        row = context_features(
            amount=inputs["amount"][i],
            country=inputs["country"][i],
            hour=inputs["event_hour"][i],
            card_mean_7d=inputs["card_amount_mean_7d"][i],
            card_max_30d=inputs["card_amount_max_30d"][i],
            card_usual_country=inputs["card_usual_country"][i],
            card_usual_hour=inputs["card_usual_hour"][i],
        )
        for name in CONTEXT_FEATURES:
            out[name].append(row[name])
    return out


def build_definitions(offline_dir: Path) -> Definitions:
    """All Feast objects, reading offline data from ``offline_dir``."""
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.STRING, description="A payment card")
    merchant = Entity(
        name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING, description="An acquiring merchant"
    )

    card_daily = FeatureView(
        name="card_daily",
        entities=[card],
        ttl=BATCH_TTL,
        schema=[Field(name=f, dtype=Float64) for f in CARD_BATCH_FEATURES]
        + [Field(name="card_usual_country", dtype=String)],
        source=FileSource(
            name="card_daily_source", path=str(offline_dir / CARD_DAILY_FILE), timestamp_field=FEATURE_TIMESTAMP
        ),
        online=True,
        description="Card behaviour up to the end of the previous day",
    )
    merchant_daily = FeatureView(
        name="merchant_daily",
        entities=[merchant],
        ttl=BATCH_TTL,
        schema=[Field(name=f, dtype=Float64) for f in MERCHANT_BATCH_FEATURES],
        source=FileSource(
            name="merchant_daily_source", path=str(offline_dir / MERCHANT_DAILY_FILE), timestamp_field=FEATURE_TIMESTAMP
        ),
        online=True,
        description="Merchant activity up to the end of the previous day",
    )
    push_source = PushSource(
        name=PUSH_SOURCE,
        batch_source=FileSource(
            name="card_recent_source", path=str(offline_dir / CARD_RECENT_FILE), timestamp_field=FEATURE_TIMESTAMP
        ),
    )
    card_recent = FeatureView(
        name="card_recent",
        entities=[card],
        ttl=timedelta(days=2),
        schema=[Field(name=STATE_EVENT_US, dtype=Array(Int64)), Field(name=STATE_AMOUNTS, dtype=Array(Float64))],
        source=push_source,
        online=True,
        description="The card's transactions of the last 24 h (state of the real-time tier)",
    )
    request = RequestSource(
        name="transaction",
        schema=[
            Field(name="amount", dtype=Float64),
            Field(name="country", dtype=String),
            Field(name="event_hour", dtype=Float64),
        ],
    )
    # Built directly rather than with Feast's decorator, which rewrites the function's
    # module to __main__ and then cannot find its source a second time in one process.
    # Pickled by reference: the feature server runs on our image, where riskloop is installed.
    transaction_context = OnDemandFeatureView(
        name="transaction_context",
        sources=[card_daily, request],
        mode="python",
        schema=[Field(name=f, dtype=Float64) for f in CONTEXT_FEATURES],
        udf=_transaction_context,  # type: ignore[arg-type]
        udf_string=inspect.getsource(_transaction_context),
        description="The transaction relative to the card's usual amount, country and hour",
    )
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[card_daily, merchant_daily, card_recent, transaction_context],
        description="Fraud detector v1: batch, real-time and on-demand card/merchant features",
    )
    return Definitions(
        card, merchant, card_daily, merchant_daily, card_recent, push_source, transaction_context, service
    )
