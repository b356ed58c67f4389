"""``riskloop run ...`` and ``riskloop compile``: the pipelines, run here under kfp.local or compiled for KFP.

A local run reads like a log a person follows: one line per step with its duration, then what the run
produced (the registered version, its metrics, the gate's verdict and why, the MLflow run, the reports)
and how to look at it. kfp.local's own output goes to a log file under the state dir (``--verbose``:
also to the terminal).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from riskloop.cli.common import SpecOpt, console, parse_day, settings, summary
from riskloop.errors import ConfigError
from riskloop.orchestration.local import LocalRun, StepRun
from riskloop.settings import Settings

run_app = typer.Typer(help="Run a pipeline locally under kfp.local.", no_args_is_help=True)

EXIT_RUN_FAILED = 1  # a step failed on something other than its input
EXIT_BAD_INPUT = 2  # a step refused its input or configuration (a ConfigError), as the CLI does

VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also print kfp.local's log and every step's output here (they always go to the run's log file).",
    ),
]
KEY_METRICS = ("roc_auc", "pr_auc", "recall_at_fpr", "brier")
DEFAULT_DAYS = 30  # run training's window when --days is not given (a spec with a time column)


@run_app.command("training")
def run_training_cmd(
    spec: SpecOpt = "synthetic-fraud",
    end: Annotated[
        str | None,
        typer.Option(
            help="Last day of the window (YYYY-MM-DD); default the newest landed day. "
            "Not for a spec without a time column: it trains on its whole snapshot."
        ),
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, help=f"Window length in days (default {DEFAULT_DAYS}); not for a snapshot.")
    ] = None,
    maturity_days: Annotated[
        float | None, typer.Option(min=0, help="Newest days whose labels are not mature; default from the spec.")
    ] = None,
    gate: Annotated[
        str | None,
        typer.Option("--gate", help="Gate thresholds as JSON (training.gate.GateParams), e.g. fairness limits."),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the training pipeline locally (the same components as on the cluster).

    Prints one line per step, then the registered version, its metrics, the gate's verdict,
    the MLflow run and the reports. Exit code 0 when the run succeeded (a candidate the gate
    refuses is a result, not a failure), 2 when a step refused its input, 1 when a step failed.
    A spec without a time column trains on its whole landed snapshot (`riskloop data land`):
    --end and --days do not apply to it.

    Examples:

        riskloop run training --days 20

        riskloop data fetch-ulb && riskloop run training --spec ulb-creditcard --days 2

        riskloop run training --spec german-credit \\
            --gate '{"min_roc_auc": 0.7, "max_demographic_parity_difference": 0.2}'
    """
    from riskloop.data.io import land_command, landed_files, partitions
    from riskloop.data.spec import load_spec
    from riskloop.orchestration.local import run_training, training_params

    s = settings()
    gate_params = None if gate is None else _gate_params(gate)  # bad flags fail before any work
    ds = load_spec(spec)
    snapshot = None
    if ds.timestamp_column is None:
        window_options = [option for option, value in (("--end", end), ("--days", days)) if value is not None]
        if window_options:
            named = " and ".join(window_options)
            raise ConfigError(
                f"{named} select days, but dataset spec {spec} has no time column (timestamp_column: null): "
                "it trains on its whole landed snapshot",
                where=named,
                fix=f"leave out {named}",
            )
        (snapshot,) = landed_files(ds, ds.source_path(s.shared))
        # ingest reads the whole snapshot whatever the window: the window is today, its cutoff the next
        # midnight (labels as known now), which is what the run records
        end_day, window = datetime.now(UTC).date(), 1
    else:
        landed = partitions(ds.source_path(s.shared))
        if not landed:
            raise ConfigError(
                f"no landed data for {ds.name}",
                where=str(ds.source_path(s.shared)),
                fix=f"land the data first: `{land_command(ds)}`",
            )
        end_day, window = parse_day(end, "--end") if end else landed[-1][0], days or DEFAULT_DAYS
    maturity = ds.label.maturity_days if maturity_days is None else maturity_days
    params = training_params(
        end_day,
        window,
        spec=spec,
        maturity_days=float(maturity),
        validation_days=float(ds.split.validation_days),
        test_days=float(ds.split.test_days),
    )
    if gate_params is not None:
        params["gate_params"] = gate_params
    window_text = (
        f"the whole snapshot {snapshot}" if snapshot is not None else f"{params['start_date']} .. {params['end_date']}"
    )
    console.print(f"training {ds.name} on {window_text} (kfp.local)", highlight=False)
    result = run_training(s, params, on_step=print_step, verbose=verbose)
    summary(
        f"training pipeline {'succeeded' if result.succeeded else 'FAILED'}",
        training_summary(result, s, params, window=window_text),
    )
    _exit_for(result)


def _gate_params(text: str) -> dict[str, Any]:
    from pydantic import ValidationError

    from riskloop.training.gate import GateParams

    try:
        # only the fields given: the others keep the spec's policy.gate (laid under these by the gate step)
        return GateParams.model_validate_json(text).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'JSON'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"--gate is not valid gate thresholds: {problems}",
            where="--gate",
            fix='pass a JSON object, e.g. {"min_roc_auc": 0.7, "max_demographic_parity_difference": 0.2}',
        ) from None


def step_line(step: StepRun) -> str:
    """One line per step: state, name, duration, and a failed step's own error (its first line)."""
    if step.state == "skipped":
        return f"  skip  {step.name}"
    mark = "ok  " if step.succeeded else "FAIL"
    retried = f" ({step.attempts} attempts)" if step.attempts > 1 else ""
    line = f"  {mark}  {step.name:<22} {step.seconds:7.1f}s{retried}"
    if step.error:
        line += f"  {step.error.splitlines()[0]}"
    return line


def print_step(step: StepRun) -> None:
    console.print(step_line(step), highlight=False, markup=False, soft_wrap=True)


def training_summary(
    run: LocalRun, s: Settings, params: dict[str, Any], *, window: str | None = None
) -> dict[str, str]:
    """What a training run produced, from its steps' outputs: version, metrics, gate, MLflow run, reports."""
    rows = {"window": window or f"{params['start_date']} .. {params['end_date']}", "seconds": f"{run.seconds:.1f}"}
    failed = run.failed_step
    if failed is not None:
        rows["failed step"] = failed.name
        rows["error"] = failed.error or run.error or "-"
    elif run.error:
        rows["error"] = run.error
    train, evaluate, gate, register, card = (
        run.step(n) for n in ("train", "evaluate", "gate", "register", "model-card")
    )
    if train is not None and train.succeeded:
        rows["MLflow run"] = str(train.outputs.get("Output"))
    if evaluate is not None and evaluate.succeeded:
        ev = json.loads(evaluate.outputs["Output"])
        rows["metrics"] = _metrics(ev["candidate"])
        if ev.get("champion"):
            rows[f"champion v{ev['champion_version']}"] = _metrics(ev["champion"])
        report = evaluate.outputs.get("report")
        if report is not None:
            rows["evaluation report"] = str(report.path)
    if gate is not None and gate.succeeded and "gate_result" in gate.outputs:
        rows["gate"] = _gate_verdict(Path(gate.outputs["gate_result"].path))
    if register is not None and register.succeeded:
        from riskloop.data.spec import load_spec

        name = load_spec(params["spec"]).registered_model(s.mlflow.model_name)
        rows["registered"] = f"{name} v{json.loads(register.outputs['Output'])['version']}"
    elif evaluate is not None and evaluate.succeeded:
        rows["registered"] = "nothing (the gate refused the candidate)" if failed is None else "nothing"
    if card is not None and card.succeeded:
        rows["model card"] = str(card.outputs["card_html"].path)
    rows["MLflow UI"] = _mlflow_ui(s)
    if run.log is not None:
        rows["log"] = str(run.log)
    return rows


def _metrics(values: dict[str, Any]) -> str:
    shown = [k for k in KEY_METRICS if k in values] or sorted(values)[:4]
    return ", ".join(f"{k} {float(values[k]):.4f}" for k in shown)


def _gate_verdict(decision: Path) -> str:
    """The gate step's decision (its artifact): the verdict, and the checks that failed (else all of them)."""
    from riskloop.training.gate import GateResult

    result = GateResult.read(decision)
    failed = [r for r in result.reasons if r.startswith("fail:")]
    return ("PASS" if result.passed else "FAIL") + ": " + "; ".join(failed or result.reasons)


def _mlflow_ui(s: Settings) -> str:
    """The command that shows this run's store in MLflow's UI (or the server's address)."""
    uri = s.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {s.artifact_root.as_uri()}"


def _exit_for(run: LocalRun) -> None:
    if run.succeeded:
        return
    raise typer.Exit(code=EXIT_BAD_INPUT if run.bad_input else EXIT_RUN_FAILED)


def compile_cmd(out: Annotated[Path, typer.Option(help="Output directory.")] = Path("build/pipelines")) -> None:
    """Compile every pipeline to KFP IR YAML (upload these in the Kubeflow UI).

    Example:

        riskloop compile --out build/pipelines
    """
    from riskloop.orchestration.compile import compile_all

    written = compile_all(out)
    summary("compiled", {p.stem: p for p in written})
