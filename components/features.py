"""Components of the feature pipeline.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def build_features(spec: str, valid: Input[Dataset]) -> str:
    """Compute both feature tiers' offline tables from validated data and `feast apply` them."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import build_features as run

    return json.dumps(run(spec, Path(valid.path), Settings()))


@component
def materialize(end_date: str, days_back: int) -> str:
    """Load offline rows stamped up to `end_date` 00:00 UTC into the online store."""
    from riskloop.settings import Settings
    from riskloop.steps import materialize as run

    return run(end_date, days_back, Settings())


@component
def batch_score(spec: str, valid: Input[Dataset], day: str, model_alias: str, scores: Output[Dataset]) -> str:
    """Score a day of transactions from the offline store with the model an alias names."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import batch_score as run

    out = run(spec, Path(valid.path), day, model_alias, Path(scores.path), Settings())
    scores.metadata.update(out)
    return json.dumps(out)
