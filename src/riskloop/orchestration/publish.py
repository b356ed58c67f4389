"""Publish the compiled pipelines and their recurring runs to a KFP v2 backend.

The chart's post-install/upgrade Job runs ``riskloop cluster publish``: every
``<stem>.yaml`` under the pipelines dir becomes pipeline ``riskloop-<stem>`` with a
version named after the image tag (reused if it exists, so a re-run changes
nothing); experiment ``riskloop`` exists; every schedule in the schedules file is
a recurring run on that version.

Three parts, so the plan is testable without a server:

- :func:`read_state` asks KFP what exists (the only reads),
- :func:`plan_publish` is pure: desired (pipelines, tag, schedules) + existing -> the plan (its steps),
- :func:`apply_plan` carries the steps out (the only writes).

Recurring runs this command created carry :data:`MANAGED_MARK` in their description;
only those are replaced or removed, so runs a person made in the UI are left alone.
A schedule whose pipeline version, cron, parameters or state changed is replaced
(KFP cannot edit a recurring run); a disabled or deleted schedule leaves no run behind.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from riskloop.errors import ConfigError, DeploymentError, ServiceUnavailable
from riskloop.orchestration.schedules import Schedule, check_against_pipelines

EXPERIMENT = "riskloop"
MANAGED_MARK = "[managed by riskloop cluster publish]"
PIPELINE_PREFIX = "riskloop-"


@dataclass(frozen=True)
class CompiledPipeline:
    stem: str
    path: Path
    parameters: dict[str, str]  # name -> KFP parameterType

    @property
    def name(self) -> str:
        return PIPELINE_PREFIX + self.stem


@dataclass(frozen=True)
class ExistingRun:
    """A recurring run as KFP reports it (only the fields the plan compares)."""

    id: str
    name: str
    version_id: str
    cron: str
    parameters: dict[str, Any]
    enabled: bool
    managed: bool


@dataclass(frozen=True)
class ClusterState:
    pipeline_ids: dict[str, str] = field(default_factory=dict)  # pipeline name -> id
    version_ids: dict[str, dict[str, str]] = field(default_factory=dict)  # pipeline name -> {version name: id}
    experiment_id: str | None = None
    runs: tuple[ExistingRun, ...] = ()


PlanStepKind = Literal[
    "create_pipeline",
    "upload_version",
    "reuse_version",
    "create_experiment",
    "reuse_experiment",
    "create_run",
    "replace_run",
    "keep_run",
    "delete_run",
]


@dataclass(frozen=True)
class PlanStep:
    """One step of the publish plan: what to do to which KFP object, and why."""

    kind: PlanStepKind
    target: str  # pipeline, version, experiment or recurring run name
    reason: str
    pipeline: str | None = None  # pipeline name, for version and run steps
    schedule: Schedule | None = None
    run_id: str | None = None  # existing run to replace or delete

    def __str__(self) -> str:
        return f"{self.kind:<17} {self.target}: {self.reason}"


def read_compiled(pipelines_dir: Path) -> list[CompiledPipeline]:
    """The compiled pipelines in a directory with their root parameters; ConfigError if none or unreadable."""
    paths = sorted(pipelines_dir.glob("*.yaml")) if pipelines_dir.is_dir() else []
    if not paths:
        raise ConfigError(
            f"no compiled pipelines (*.yaml) in {pipelines_dir}",
            where="--pipelines-dir",
            fix="run `riskloop compile --out <dir>` (the image has them in /opt/riskloop/pipelines)",
        )
    found = []
    for p in paths:
        try:
            ir = next(yaml.safe_load_all(p.read_text()))
            declared = ir["root"].get("inputDefinitions", {}).get("parameters", {})
            params = {k: str(v.get("parameterType", "")) for k, v in declared.items()}
        except (yaml.YAMLError, StopIteration, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{p.name} is not a compiled KFP pipeline ({exc!r})",
                where=str(p),
                fix="recompile with `riskloop compile`",
            ) from exc
        found.append(CompiledPipeline(p.stem, p, params))
    return found


def _same_parameters(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def plan_publish(
    pipelines: Sequence[CompiledPipeline], version: str, schedules: Sequence[Schedule], state: ClusterState
) -> list[PlanStep]:
    """What publishing would do given what exists: pure, ordered (pipelines, experiment, runs)."""
    check_against_pipelines(list(schedules), {p.stem: p.parameters for p in pipelines})
    steps: list[PlanStep] = []
    target_version: dict[str, str | None] = {}  # pipeline name -> version id if it already exists
    for p in pipelines:
        if p.name not in state.pipeline_ids:
            steps.append(PlanStep("create_pipeline", p.name, "not in KFP yet", pipeline=p.name))
        existing = state.version_ids.get(p.name, {}).get(version)
        target_version[p.name] = existing
        if existing is None:
            steps.append(PlanStep("upload_version", version, f"new version of {p.name}", pipeline=p.name))
        else:
            steps.append(PlanStep("reuse_version", version, f"{p.name} already has it ({existing})", pipeline=p.name))
    if state.experiment_id is None:
        steps.append(PlanStep("create_experiment", EXPERIMENT, "not in KFP yet"))
    else:
        steps.append(PlanStep("reuse_experiment", EXPERIMENT, f"exists ({state.experiment_id})"))

    runs_by_name: dict[str, list[ExistingRun]] = {}
    for r in state.runs:
        runs_by_name.setdefault(r.name, []).append(r)
    wanted = {s.name for s in schedules}
    for s in schedules:
        pipeline = PIPELINE_PREFIX + s.pipeline_stem
        existing_runs = runs_by_name.get(s.name, [])
        foreign = [r for r in existing_runs if not r.managed]
        if foreign:
            raise DeploymentError(
                f"a recurring run named {s.name!r} exists in experiment {EXPERIMENT!r} but was not created by "
                "`riskloop cluster publish`",
                where=f"KFP recurring run {foreign[0].id}",
                fix=f"delete or rename it in the Kubeflow UI, or rename schedule {s.name!r} in the schedules file",
            )
        mine = existing_runs
        if not s.enabled:
            steps.extend(PlanStep("delete_run", s.name, "schedule disabled", run_id=r.id) for r in mine)
            continue
        if not mine:
            steps.append(
                PlanStep("create_run", s.name, f"new, {s.cron} on {pipeline}@{version}", pipeline=pipeline, schedule=s)
            )
            continue
        current, *duplicates = mine
        steps.extend(PlanStep("delete_run", s.name, "duplicate of the same schedule", run_id=r.id) for r in duplicates)
        changed = [
            what
            for what, differs in (
                ("pipeline version", current.version_id != target_version[pipeline]),
                ("cron", current.cron != s.cron),
                ("parameters", not _same_parameters(current.parameters, s.parameters)),
                ("enabled", not current.enabled),
            )
            if differs
        ]
        if changed:
            steps.append(
                PlanStep(
                    "replace_run",
                    s.name,
                    f"{', '.join(changed)} changed",
                    pipeline=pipeline,
                    schedule=s,
                    run_id=current.id,
                )
            )
        else:
            steps.append(PlanStep("keep_run", s.name, "unchanged", pipeline=pipeline, schedule=s, run_id=current.id))
    steps.extend(
        PlanStep("delete_run", r.name, "no longer in the schedules file", run_id=r.id)
        for r in state.runs
        if r.managed and r.name not in wanted
    )
    return steps


# ------------------------------------------------------------------------------ KFP adapter
def connect(kfp_host: str, *, namespace: str = "kubeflow") -> Any:
    """A ``kfp.Client`` for the KFP API at ``kfp_host`` (e.g. http://ml-pipeline.kubeflow:8888)."""
    from kfp import Client

    try:
        client = Client(host=kfp_host, namespace=namespace)
        multi_user = client.get_kfp_healthz().multi_user is True
    except Exception as exc:  # kfp raises bare exceptions of several kinds for an unreachable host
        raise ServiceUnavailable(
            f"cannot reach the KFP API at {kfp_host}: {exc}",
            where="--kfp-host",
            fix="check the URL (in the cluster: http://ml-pipeline.kubeflow:8888; from a "
            "laptop: kubectl -n kubeflow port-forward svc/ml-pipeline 8888)",
        ) from exc
    if multi_user:
        # Its API wants a user identity on every call (a projected pipelines.kubeflow.org token and a profile
        # namespace); the publish Job runs without a service account token, the CLI without one either.
        raise DeploymentError(
            f"the KFP API at {kfp_host} is a multi-user Kubeflow (healthz: multi_user=true), and "
            "riskloop supports standalone KFP only",
            where="--kfp-host",
            fix="install standalone KFP (make deploy PREREQS=1 on a cluster without Kubeflow), "
            "see README, 'Run on a cluster'",
        )
    return client


def _pages(call: Any, items: str, **kwargs: Any) -> Iterator[Any]:
    token = ""
    while True:
        page = call(page_token=token, page_size=100, **kwargs)
        yield from getattr(page, items) or []
        token = page.next_page_token or ""
        if not token:
            return


def read_state(client: Any, pipelines: Sequence[CompiledPipeline]) -> ClusterState:
    """What already exists in KFP for these pipelines and the riskloop experiment."""
    pipeline_ids: dict[str, str] = {}
    version_ids: dict[str, dict[str, str]] = {}
    for p in pipelines:
        pid = client.get_pipeline_id(p.name)
        if pid is None:
            continue
        pipeline_ids[p.name] = pid
        version_ids[p.name] = {
            v.display_name: v.pipeline_version_id
            for v in _pages(client.list_pipeline_versions, "pipeline_versions", pipeline_id=pid)
        }
    try:
        experiment_id: str | None = client.get_experiment(experiment_name=EXPERIMENT).experiment_id
    except ValueError:  # kfp: "No experiment is found with name ..."
        experiment_id = None
    runs: list[ExistingRun] = []
    if experiment_id is not None:
        for r in _pages(client.list_recurring_runs, "recurring_runs", experiment_id=experiment_id):
            ref = r.pipeline_version_reference
            cron = r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else ""
            params = (r.runtime_config.parameters if r.runtime_config else None) or {}
            runs.append(
                ExistingRun(
                    id=r.recurring_run_id,
                    name=r.display_name,
                    version_id=(ref.pipeline_version_id if ref else None) or r.pipeline_version_id or "",
                    cron=cron or "",
                    parameters=dict(params),
                    enabled=str(r.mode).upper() == "ENABLE",
                    managed=MANAGED_MARK in (r.description or ""),
                )
            )
    return ClusterState(pipeline_ids, version_ids, experiment_id, tuple(runs))


def apply_plan(
    client: Any,
    steps: Sequence[PlanStep],
    pipelines: Sequence[CompiledPipeline],
    version: str,
    state: ClusterState,
    *,
    on_step: Any = None,
) -> dict[str, str]:
    """Carry out a plan; returns pipeline name -> id of the published version."""
    by_name = {p.name: p for p in pipelines}
    pipeline_ids = dict(state.pipeline_ids)
    version_ids = {name: versions[version] for name, versions in state.version_ids.items() if version in versions}
    experiment_id = state.experiment_id
    for a in steps:
        if on_step is not None:
            on_step(a)
        if a.kind == "create_pipeline":
            assert a.pipeline is not None
            p = by_name[a.pipeline]
            # KFP creates a first version named like the pipeline; ours, named by the tag, follows
            pipeline_ids[p.name] = client.upload_pipeline(
                str(p.path), pipeline_name=p.name, description=_description(p)
            ).pipeline_id
        elif a.kind == "upload_version":
            assert a.pipeline is not None
            p = by_name[a.pipeline]
            version_ids[p.name] = client.upload_pipeline_version(
                str(p.path),
                pipeline_version_name=version,
                pipeline_id=pipeline_ids[p.name],
                description=f"image tag {version}",
            ).pipeline_version_id
        elif a.kind == "create_experiment":
            experiment_id = client.create_experiment(
                EXPERIMENT, description="riskloop pipelines and their recurring runs"
            ).experiment_id
        elif a.kind in ("delete_run", "replace_run"):
            assert a.run_id is not None
            client.delete_recurring_run(a.run_id)
        if a.kind in ("create_run", "replace_run"):
            assert a.schedule is not None and a.pipeline is not None and experiment_id is not None
            s = a.schedule
            client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=s.name,
                description=f"{MANAGED_MARK} {s.pipeline_stem} at {version}",
                cron_expression=s.cron,
                params=dict(s.parameters),
                pipeline_id=pipeline_ids[a.pipeline],
                version_id=version_ids[a.pipeline],
                enabled=True,
                max_concurrency=1,
                no_catchup=True,
            )
    return version_ids


def _description(p: CompiledPipeline) -> str:
    try:
        info = next(yaml.safe_load_all(p.path.read_text())).get("pipelineInfo", {})
        return str(info.get("description", p.name))
    except (OSError, yaml.YAMLError, StopIteration, AttributeError):
        return p.name


def publish(
    client: Any,
    pipelines: Sequence[CompiledPipeline],
    version: str,
    schedules: Sequence[Schedule],
    *,
    dry_run: bool = False,
    on_step: Any = None,
) -> list[PlanStep]:
    """Read what exists, plan, and (unless ``dry_run``) apply; returns the plan."""
    with _kfp_errors("reading pipelines, versions and recurring runs"):
        state = read_state(client, pipelines)
    steps = plan_publish(pipelines, version, schedules, state)
    if dry_run:
        for a in steps:
            if on_step is not None:
                on_step(a)
    else:
        with _kfp_errors("publishing"):
            apply_plan(client, steps, pipelines, version, state, on_step=on_step)
    return steps


@contextlib.contextmanager
def _kfp_errors(doing: str) -> Iterator[None]:
    """KFP API failures as a DeploymentError saying what was being done."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        if exc.status in (401, 403):
            # Multi-user Kubeflow asks every call for a user identity (a kubeflow-userid header behind its gateway, or
            # a projected pipelines.kubeflow.org token); riskloop's Job and CLI call standalone KFP without one.
            raise DeploymentError(
                f"the KFP API refused {doing} as unauthenticated ({exc.status} {exc.reason}: "
                f"{(exc.body or '')[:300]}): this looks like a multi-user Kubeflow, and riskloop supports standalone "
                "KFP only",
                fix="install standalone KFP (make deploy PREREQS=1 on a cluster without Kubeflow), see "
                "README, 'Run on a cluster'",
            ) from exc
        raise DeploymentError(
            f"the KFP API refused {doing}: {exc.status} {exc.reason}: {(exc.body or '')[:500]}",
            fix="check the KFP API server's log (kubectl -n kubeflow logs deploy/ml-pipeline)",
        ) from exc
    except HTTPError as exc:
        raise ServiceUnavailable(
            f"the KFP API did not answer while {doing}: {exc}",
            fix="check that ml-pipeline in namespace kubeflow is running",
        ) from exc


def start_run(client: Any, pipeline: CompiledPipeline, version: str, parameters: dict[str, Any], run_name: str) -> str:
    """Start one run of the published ``version`` of a pipeline; returns the run id."""
    check_against_pipelines(
        [Schedule(name="run", pipeline=pipeline.stem, cron="0 0 0 * * *", parameters=parameters)],
        {pipeline.stem: pipeline.parameters},
    )
    with _kfp_errors("looking up the published version"):
        state = read_state(client, [pipeline])
    version_id = state.version_ids.get(pipeline.name, {}).get(version)
    if version_id is None or state.experiment_id is None:
        raise DeploymentError(
            f"{pipeline.name} version {version} is not published in KFP yet",
            fix="run `riskloop cluster publish` (the chart's publish Job does) and retry",
        )
    with _kfp_errors("starting the run"):
        run = client.run_pipeline(
            experiment_id=state.experiment_id,
            job_name=run_name,
            params=parameters,
            pipeline_id=state.pipeline_ids[pipeline.name],
            version_id=version_id,
        )
    return str(run.run_id)
