"""Batch scoring: a day of transactions, features from the offline store, scored by the champion."""

from kfp import dsl

from riskloop.components.features import batch_score
from riskloop.components.training import ingest, validate
from riskloop.pipelines.cluster import on_cluster


@dsl.pipeline(name="riskloop-batch-scoring", description="Score one day with the champion; scores as a Dataset.")
def batch_scoring_pipeline(
    spec: str = "synthetic-fraud",
    previous_day: str = "2026-01-29",
    day: str = "2026-01-30",
    model_alias: str = "champion",
) -> dsl.Dataset:
    pipeline_run_id = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    # the day before is ingested too: real-time features look back 24 hours
    batch = on_cluster(ingest(spec=spec, start_date=previous_day, end_date=day))
    checked = on_cluster(
        validate(spec=spec, batch=batch.outputs["batch"], max_bad_fraction=-1.0, pipeline_run_id=pipeline_run_id)
    )
    scored = on_cluster(
        batch_score(spec=spec, valid=checked.outputs["valid"], day=day, model_alias=model_alias), memory="2G"
    )
    for t in (batch, checked, scored):
        t.set_caching_options(False)
    return scored.outputs["scores"]
