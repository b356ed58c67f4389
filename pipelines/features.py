"""The feature pipeline: ingest → validate → build features → materialize (a daily recurring run)."""

from kfp import dsl

from components.features import build_features, materialize
from components.training import ingest, validate
from pipelines.cluster import on_cluster


@dsl.pipeline(name="riskloop-features", description="Refresh Feast's offline tables and online store.")
def features_pipeline(
    spec: str = "synthetic-fraud",
    start_date: str = "2026-01-01",
    end_date: str = "2026-01-30",
    materialize_until: str = "2026-01-31",
    days_back: int = 3,
    max_bad_fraction: float = -1.0,
) -> None:
    run_id = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    batch = on_cluster(ingest(spec=spec, start_date=start_date, end_date=end_date))
    checked = on_cluster(validate(spec=spec, batch=batch.outputs["batch"], max_bad_fraction=max_bad_fraction,
                                  pipeline_run_id=run_id))
    built = on_cluster(build_features(spec=spec, valid=checked.outputs["valid"]), memory="2G")
    loaded = on_cluster(materialize(end_date=materialize_until, days_back=days_back))
    loaded.after(built)
    for t in (batch, checked, built, loaded):
        t.set_caching_options(False)
    loaded.set_retry(num_retries=2)
