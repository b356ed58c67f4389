"""The first step of a scheduled pipeline: the day the run works on (see riskloop.schedule).

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""

from kfp import dsl

from riskloop.components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def run_day(day: str, scheduled_time: str) -> str:
    """``day`` if set, else the last complete UTC day before the run's scheduled time, as YYYY-MM-DD."""
    from riskloop.steps.common import run_day as run

    return run(day, scheduled_time)
