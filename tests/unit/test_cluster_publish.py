"""`riskloop cluster publish`: the schedules file, its checks against the compiled pipelines, the plan.

The plan is pure; apply_plan and read_state are driven here through a recording stand-in
for kfp.Client that returns kfp_server_api's own model objects. The real KFP API is
exercised by tests/e2e.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kfp_server_api import models as m

from riskloop.errors import ConfigError, DeploymentError
from riskloop.orchestration.publish import (
    MANAGED_MARK,
    ClusterState,
    CompiledPipeline,
    ExistingRun,
    PlanStep,
    apply_plan,
    plan_publish,
    read_compiled,
    read_state,
)
from riskloop.orchestration.schedules import check_cron, parse_schedules

TAG = "0.1.0-abc1234"
MONITORING_PARAMS = {"day": "STRING", "training_days": "NUMBER_INTEGER", "deliver": "BOOLEAN", "policy": "STRUCT"}
PIPELINES = [
    CompiledPipeline("monitoring", Path("monitoring.yaml"), MONITORING_PARAMS),
    CompiledPipeline("features", Path("features.yaml"), {"days_back": "NUMBER_INTEGER"}),
]
GOOD = """
- name: riskloop-monitoring-daily
  pipeline: monitoring
  cron: "0 30 2 * * *"
  parameters: {training_days: 30, deliver: true}
- name: riskloop-features-hourly
  pipeline: riskloop-features
  cron: "0 0 */1 * * *"
  enabled: false
"""


def kinds(steps: list[PlanStep]) -> list[tuple[str, str]]:
    return [(a.kind, a.target) for a in steps]


# ------------------------------------------------------------------------------ parsing
def test_a_good_file_parses_with_defaults() -> None:
    monitoring, features = parse_schedules(GOOD)
    assert monitoring.parameters == {"training_days": 30, "deliver": True} and monitoring.enabled
    assert features.pipeline_stem == "features" and features.parameters == {} and not features.enabled
    assert parse_schedules("") == []


@pytest.mark.parametrize("expr", ["0 30 2 * * *", "0 */15 * * * ?", "30 0 9-17 1,15 jan-jun mon-fri", "0 0 0 * * 0"])
def test_six_field_cron_is_accepted(expr: str) -> None:
    assert check_cron(expr) == expr


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("30 2 * * *", "prepend the seconds, '0 30 2 * * *'"),
        ("0 0 0 * * * *", "has 7 fields"),
        ("0 60 * * * *", "minute field '60'"),
        ("0 0 24 * * *", "hour field '24'"),
        ("0 0 0 0 * *", "day-of-month field '0'"),
        ("0 */0 * * * *", "step '0'"),
        ("0 0 0 * foo *", "month field 'foo'"),
    ],
)
def test_bad_cron_says_which_field_and_how(expr: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        check_cron(expr)
    assert says in str(info.value)


def test_errors_name_the_entry_and_the_field() -> None:
    text = """
- name: ok-one
  pipeline: monitoring
  cron: "0 0 2 * * *"
- name: nightly
  pipeline: monitoring
  cron: "0 2 * * *"
  params: {day: "2026-01-01"}
"""
    with pytest.raises(ConfigError) as info:
        parse_schedules(text, source="values.yaml")
    msg = str(info.value)
    assert "entry 2 ('nightly'), field cron: '0 2 * * *' has 5 fields" in msg
    assert "entry 2 ('nightly'), field params: unknown field" in msg
    assert "where: values.yaml" in msg and "pipeline parameters go under `parameters`" in msg
    assert "entry 1" not in msg


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: x\npipeline: y\n", "must be a YAML list"),
        ("- {name: a, pipeline: monitoring}", "entry 1 ('a'), field cron: Field required"),
        ("- {name: Nightly_Run, pipeline: monitoring, cron: '0 0 0 * * *'}", "field name: 'Nightly_Run' must be"),
        ("- {name: a, pipeline: monitoring, cron: '0 0 0 * * *', enabled: maybe}", "field enabled"),
        ("- {name: a, pipeline: monitoring, cron: '0 0 0 * * *', parameters: [1]}", "field parameters"),
        (
            "- {name: a, pipeline: monitoring, cron: '0 0 0 * * *'}\n"
            "- {name: a, pipeline: features, cron: '0 0 1 * * *'}",
            "'a' appears twice",
        ),
        ("- [unclosed", "not valid YAML"),
    ],
)
def test_invalid_files_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_schedules(text)
    assert says in str(info.value)


def test_schedules_are_checked_against_the_compiled_pipelines() -> None:
    bad = parse_schedules("""
- {name: a, pipeline: trainig, cron: "0 0 0 * * *"}
- {name: b, pipeline: monitoring, cron: "0 0 0 * * *", parameters: {days: 3, training_days: "30", deliver: 1}}
""")
    with pytest.raises(ConfigError) as info:
        plan_publish(PIPELINES, TAG, bad, ClusterState())
    msg = str(info.value)
    assert "schedule 'a', field pipeline: 'trainig' is not a compiled pipeline (have: features, monitoring)" in msg
    assert "schedule 'b', field parameters.days: pipeline monitoring has no such parameter" in msg
    assert "parameters.training_days: '30' is not a NUMBER_INTEGER" in msg
    assert "parameters.deliver: 1 is not a BOOLEAN" in msg


def test_read_compiled_takes_the_root_parameters(tmp_path: Path) -> None:
    (tmp_path / "training.yaml").write_text(
        "pipelineInfo: {name: riskloop-training}\nroot:\n  inputDefinitions:\n    parameters:\n"
        "      seed: {parameterType: NUMBER_INTEGER, defaultValue: 0}\n---\nplatforms: {}\n"
    )
    (p,) = read_compiled(tmp_path)
    assert (p.stem, p.name, p.parameters) == ("training", "riskloop-training", {"seed": "NUMBER_INTEGER"})
    (tmp_path / "notes.yaml").write_text("just: text\n")
    with pytest.raises(ConfigError, match=r"notes\.yaml is not a compiled KFP pipeline"):
        read_compiled(tmp_path)
    with pytest.raises(ConfigError, match="riskloop compile"):
        read_compiled(tmp_path / "missing")


# ---------------------------------------------------------------------------------- plan
def run(
    name: str,
    *,
    version_id: str = "v-old",
    cron: str = "0 30 2 * * *",
    params: Any = None,
    enabled: bool = True,
    managed: bool = True,
    rid: str | None = None,
) -> ExistingRun:
    return ExistingRun(
        id=rid or f"r-{name}",
        name=name,
        version_id=version_id,
        cron=cron,
        parameters={"training_days": 30, "deliver": True} if params is None else params,
        enabled=enabled,
        managed=managed,
    )


def test_first_publish_creates_everything() -> None:
    plan = plan_publish(PIPELINES, TAG, parse_schedules(GOOD), ClusterState())
    assert kinds(plan) == [
        ("create_pipeline", "riskloop-monitoring"),
        ("upload_version", TAG),
        ("create_pipeline", "riskloop-features"),
        ("upload_version", TAG),
        ("create_experiment", "riskloop"),
        ("create_run", "riskloop-monitoring-daily"),
    ]


def test_republishing_the_same_tag_changes_nothing() -> None:
    state = ClusterState(
        pipeline_ids={"riskloop-monitoring": "p1", "riskloop-features": "p2"},
        version_ids={"riskloop-monitoring": {TAG: "v1"}, "riskloop-features": {TAG: "v2"}},
        experiment_id="e1",
        runs=(run("riskloop-monitoring-daily", version_id="v1"),),
    )
    plan = plan_publish(PIPELINES, TAG, parse_schedules(GOOD), state)
    assert {a.kind for a in plan} == {"reuse_version", "reuse_experiment", "keep_run"}


def test_a_new_tag_uploads_versions_and_moves_the_runs() -> None:
    state = ClusterState(
        pipeline_ids={"riskloop-monitoring": "p1", "riskloop-features": "p2"},
        version_ids={"riskloop-monitoring": {"0.0.9-old": "v0"}},
        experiment_id="e1",
        runs=(
            run("riskloop-monitoring-daily", version_id="v0"),
            run("riskloop-features-hourly", rid="r-f"),
            run("riskloop-retired", rid="r-x"),
            run("made-in-the-ui", managed=False),
        ),
    )
    plan = plan_publish(PIPELINES, TAG, parse_schedules(GOOD), state)
    assert kinds(plan) == [
        ("upload_version", TAG),
        ("upload_version", TAG),
        ("reuse_experiment", "riskloop"),
        ("replace_run", "riskloop-monitoring-daily"),
        ("delete_run", "riskloop-features-hourly"),  # disabled in the file
        ("delete_run", "riskloop-retired"),
    ]  # gone from the file; the UI's run is untouched
    assert plan[3].reason == "pipeline version changed" and plan[3].run_id == "r-riskloop-monitoring-daily"


@pytest.mark.parametrize(
    ("existing", "reason"),
    [
        (run("riskloop-monitoring-daily", version_id="v1", cron="0 0 3 * * *"), "cron changed"),
        (run("riskloop-monitoring-daily", version_id="v1", params={"training_days": 14}), "parameters changed"),
        (run("riskloop-monitoring-daily", version_id="v1", enabled=False), "enabled changed"),
    ],
)
def test_a_changed_schedule_is_replaced(existing: ExistingRun, reason: str) -> None:
    state = ClusterState(
        pipeline_ids={"riskloop-monitoring": "p1", "riskloop-features": "p2"},
        version_ids={"riskloop-monitoring": {TAG: "v1"}, "riskloop-features": {TAG: "v2"}},
        experiment_id="e1",
        runs=(existing,),
    )
    (step,) = [a for a in plan_publish(PIPELINES, TAG, parse_schedules(GOOD), state) if a.target == existing.name]
    assert (step.kind, step.reason) == ("replace_run", reason)


def test_duplicates_of_a_managed_run_are_removed() -> None:
    state = ClusterState(
        experiment_id="e1", runs=(run("riskloop-monitoring-daily", rid="a"), run("riskloop-monitoring-daily", rid="b"))
    )
    plan = [a for a in plan_publish(PIPELINES, TAG, parse_schedules(GOOD), state) if a.run_id]
    assert [(a.kind, a.run_id) for a in plan] == [("delete_run", "b"), ("replace_run", "a")]


def test_a_run_someone_else_made_with_our_name_is_not_overwritten() -> None:
    state = ClusterState(experiment_id="e1", runs=(run("riskloop-monitoring-daily", managed=False, rid="ui-1"),))
    with pytest.raises(DeploymentError, match="not created by `riskloop cluster publish`") as info:
        plan_publish(PIPELINES, TAG, parse_schedules(GOOD), state)
    assert "KFP recurring run ui-1" in str(info.value)


# ------------------------------------------------------------------ KFP adapter, stand-in client
class FakeKfp:
    """Records calls; answers with kfp_server_api models like kfp.Client does."""

    def __init__(self, runs: list[m.V2beta1RecurringRun] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.runs = runs or []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, {**kwargs, "args": args}))
            return self.answer(name, args, kwargs)

        return call

    def answer(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == "get_pipeline_id":
            return "p1" if args[0] == "riskloop-monitoring" else None
        if name == "list_pipeline_versions":
            return m.V2beta1ListPipelineVersionsResponse(
                pipeline_versions=[m.V2beta1PipelineVersion(display_name="0.0.9-old", pipeline_version_id="v0")],
                next_page_token="",
            )
        if name == "get_experiment":
            return m.V2beta1Experiment(experiment_id="e1", display_name="riskloop")
        if name == "list_recurring_runs":
            page = kwargs["page_token"]
            runs = self.runs[:1] if not page else self.runs[1:]
            return m.V2beta1ListRecurringRunsResponse(recurring_runs=runs, next_page_token="" if page else "t2")
        if name == "upload_pipeline":
            return m.V2beta1Pipeline(pipeline_id="p-new")
        if name == "upload_pipeline_version":
            return m.V2beta1PipelineVersion(pipeline_version_id=f"v-{kwargs['pipeline_id']}")
        return {}


def recurring(name: str, *, mode: str, description: str = MANAGED_MARK) -> m.V2beta1RecurringRun:
    return m.V2beta1RecurringRun(
        recurring_run_id=f"r-{name}",
        display_name=name,
        description=description,
        mode=mode,
        pipeline_version_reference=m.V2beta1PipelineVersionReference(pipeline_id="p1", pipeline_version_id="v0"),
        trigger=m.V2beta1Trigger(cron_schedule=m.V2beta1CronSchedule(cron="0 30 2 * * *")),
        runtime_config=m.V2beta1RuntimeConfig(parameters={"training_days": 30}),
    )


def test_read_state_pages_through_kfp_and_reads_mode_and_ownership() -> None:
    client = FakeKfp(
        [
            recurring("riskloop-monitoring-daily", mode="ENABLE"),
            recurring("by-hand", mode="DISABLE", description="made in the UI"),
        ]
    )
    state = read_state(client, PIPELINES)
    assert state.pipeline_ids == {"riskloop-monitoring": "p1"}
    assert state.version_ids == {"riskloop-monitoring": {"0.0.9-old": "v0"}} and state.experiment_id == "e1"
    daily, by_hand = state.runs
    assert (daily.version_id, daily.cron, daily.parameters, daily.enabled, daily.managed) == (
        "v0",
        "0 30 2 * * *",
        {"training_days": 30},
        True,
        True,
    )
    assert (by_hand.enabled, by_hand.managed) == (False, False)


def test_apply_plan_uploads_then_replaces_runs_on_the_new_version() -> None:
    client = FakeKfp([recurring("riskloop-monitoring-daily", mode="ENABLE")])
    state = read_state(client, PIPELINES)
    schedules = parse_schedules(GOOD)
    plan = plan_publish(PIPELINES, TAG, schedules, state)
    client.calls.clear()
    published = apply_plan(client, plan, PIPELINES, TAG, state)
    assert published == {"riskloop-monitoring": "v-p1", "riskloop-features": "v-p-new"}
    names = [c[0] for c in client.calls]
    assert names == [
        "upload_pipeline_version",
        "upload_pipeline",
        "upload_pipeline_version",
        "delete_recurring_run",
        "create_recurring_run",
    ]
    create = client.calls[-1][1]
    assert create["version_id"] == "v-p1" and create["pipeline_id"] == "p1" and create["experiment_id"] == "e1"
    assert create["cron_expression"] == "0 30 2 * * *" and create["params"] == {"training_days": 30, "deliver": True}
    assert create["description"].startswith(MANAGED_MARK)
    assert client.calls[3][1]["args"] == ("r-riskloop-monitoring-daily",)
