"""Components of the feature pipeline.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from riskloop.components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def build_features(spec: str, valid: Input[Dataset], tables: Output[Dataset]) -> dict:
    """Compute both feature tiers' offline tables from validated data and `feast apply` them.

    The tables are also the ``tables`` artifact (a directory): the step that materializes them runs in
    another pod on a cluster.
    """
    import shutil
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import build_features as run

    written = run(spec, Path(valid.path), Settings())
    Path(tables.path).mkdir(parents=True, exist_ok=True)
    for path in written.values():
        shutil.copyfile(path, Path(tables.path) / path.name)
    return {name: str(path) for name, path in written.items()}


@component
def materialize(end_date: str, days_back: int, tables: Input[Dataset]) -> str:
    """Load offline rows stamped up to `end_date` 00:00 UTC into the online store."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import materialize as run

    return run(end_date, days_back, Settings(), tables_dir=Path(tables.path))


@component
def batch_score(spec: str, valid: Input[Dataset], day: str, model_alias: str, scores: Output[Dataset]) -> str:
    """Score a day of transactions from the offline store with the model an alias names."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import batch_score as run

    scored = run(spec, Path(valid.path), day, model_alias, Path(scores.path), Settings())
    scores.metadata.update(scored.model_dump())
    return scored.model_dump_json()
