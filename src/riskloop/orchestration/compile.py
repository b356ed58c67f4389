"""Compile the pipelines to KFP IR YAML."""

from __future__ import annotations

from pathlib import Path


def compile_all(out_dir: Path) -> list[Path]:
    from kfp import compiler

    from riskloop.pipelines.batch_scoring import batch_scoring_pipeline
    from riskloop.pipelines.delivery import delivery_pipeline
    from riskloop.pipelines.features import features_pipeline
    from riskloop.pipelines.monitoring import monitoring_pipeline
    from riskloop.pipelines.retrain import retrain_pipeline
    from riskloop.pipelines.training import training_pipeline

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("training", training_pipeline),
        ("features", features_pipeline),
        ("batch_scoring", batch_scoring_pipeline),
        ("delivery", delivery_pipeline),
        ("monitoring", monitoring_pipeline),
        ("retrain", retrain_pipeline),
    ):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(fn, str(path))
        written.append(path)
    return written
