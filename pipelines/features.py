"""The feature pipeline: ingest → validate → build features → materialize (a daily recurring run).

``day`` empty (the recurring run): the day before the scheduled time. The window ingests ``history_days``
days up to that day (the longest feature window, 30 days, needs 30 days of history) and materializes the
online store up to the next midnight.
"""

from kfp import dsl

from riskloop.components.features import build_features, materialize
from riskloop.components.monitoring import retrain_window
from riskloop.components.schedule import run_day
from riskloop.components.training import ingest, validate
from riskloop.pipelines.cluster import on_cluster


@dsl.pipeline(name="riskloop-features", description="Refresh Feast's offline tables and online store.")
def features_pipeline(
    spec: str = "synthetic-fraud",
    day: str = "",
    history_days: int = 31,
    days_back: int = 3,
    max_bad_fraction: float = -1.0,
) -> None:
    pipeline_run_id = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    resolved = on_cluster(run_day(day=day, scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER))
    window = on_cluster(retrain_window(day=resolved.output, days=history_days))
    batch = on_cluster(ingest(spec=spec, start_date=window.outputs["start_date"], end_date=window.outputs["end_date"]))
    checked = on_cluster(
        validate(
            spec=spec, batch=batch.outputs["batch"], max_bad_fraction=max_bad_fraction, pipeline_run_id=pipeline_run_id
        )
    )
    built = on_cluster(build_features(spec=spec, valid=checked.outputs["valid"]), memory="2G")
    loaded = on_cluster(
        materialize(end_date=window.outputs["cutoff_date"], days_back=days_back, tables=built.outputs["tables"])
    )
    for t in (resolved, window, batch, checked, built, loaded):
        t.set_caching_options(False)
    loaded.set_retry(num_retries=2)
