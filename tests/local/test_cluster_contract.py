"""The chart's schedules are what `riskloop cluster publish` accepts for the pipelines the image carries."""

from __future__ import annotations

from pathlib import Path

import yaml

from riskloop.orchestration.publish import ClusterState, plan_publish, read_compiled
from riskloop.orchestration.schedules import parse_schedules

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm/riskloop"


def test_every_values_file_schedules_plan_against_the_compiled_pipelines(compiled: dict[str, Path]) -> None:
    pipelines = read_compiled(next(iter(compiled.values())).parent)
    files = [CHART / "values.yaml", *sorted((CHART / "envs").glob("*.yaml")), *sorted((CHART / "ci").glob("*.yaml"))]
    checked = 0
    for f in files:
        values = yaml.safe_load(f.read_text()) or {}
        if "schedules" not in values:
            continue
        schedules = parse_schedules(yaml.safe_dump(values["schedules"]), source=str(f))
        plan = plan_publish(pipelines, "0.1.0-test", schedules, ClusterState())
        created = {a.target for a in plan if a.kind == "create_run"}
        assert created == {s.name for s in schedules if s.enabled}, f
        checked += 1
    assert checked >= 1, "values.yaml has no schedules"
