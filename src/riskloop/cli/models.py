"""Commands about registered model versions: ``card``, ``reproduce``, ``approve``, ``lineage``, ``history``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from riskloop.cli.common import ModelOpt, VersionSpecOpt, console, model_name, out, parse_time, settings, summary
from riskloop.cli.common import version_spec as read_version_spec
from riskloop.errors import RiskloopError


def card_cmd(
    model_version: Annotated[str, typer.Argument(help="Registry version, e.g. 3.")],
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write model_card.md/.html; default .riskloop/reports/model_cards/<model>-v<version>.",
        ),
    ] = None,
) -> None:
    """(Re)generate a version's model card with today's canary verdicts and approvals; also logged to MLflow.

    The training pipeline writes the card when it registers a version; this brings it up to date.

    Example:

        riskloop card 3 --model credit-scorer

        riskloop card 1 --spec ./my-credit.yaml
    """
    import shutil

    from riskloop.audit.log import open_audit_log
    from riskloop.registry.mlflow_registry import download_model_dir, resolve_version
    from riskloop.steps import model_card
    from riskloop.training.gate import GateResult

    s = settings()
    name = model_name(s, spec, model)
    info = resolve_version(s.tracking_uri, name, version=model_version)
    source = read_version_spec(s, info, spec)  # the card describes the version under the spec it carries
    snapshot = Path(info.tags.get("data_snapshot", "").removeprefix("file://"))
    if not snapshot.is_file():
        raise RiskloopError(
            f"the training snapshot of version {info.version} is not readable here: {snapshot}",
            where=f"tag data_snapshot of {name} v{info.version}",
            fix="run this where the pipeline root is mounted (the card of the training run "
            "is in the MLflow run's model_card/ folder)",
        )
    gated = [
        e
        for e in open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).events()
        if e.event == "gated" and e.ids.get("run_id") == info.run_id
    ]
    gate = GateResult.from_dict(gated[-1].details) if gated else None  # the decision recorded
    target = out_dir or s.reports_dir / "model_cards" / f"{name}-v{info.version}"
    model_dir = download_model_dir(s.tracking_uri, info.run_id)
    try:
        result = model_card(
            source,
            snapshot,
            model_dir,
            info.run_id,
            info.version,
            gate,
            target / "model_card.md",
            target / "model_card.html",
            s,
        )
    finally:
        shutil.rmtree(model_dir.parent, ignore_errors=True)
    summary(
        f"model card of {name} v{info.version}",
        {
            "markdown": target / "model_card.md",
            "html": target / "model_card.html",
            "fairness tables": result.fairness,
            "MLflow": f"run {info.run_id}, model_card/",
        },
    )


def _same_or_differs(same: str, identical: bool, recorded: str, rebuilt: str) -> str:
    """One line of the reproduce report: the rebuilt hash when it matches, both when it does not."""
    return f"{same} {rebuilt[:12]}…)" if identical else f"DIFFERS: recorded {recorded[:12]}…, rebuilt {rebuilt[:12]}…"


def reproduce_cmd(
    model_version: Annotated[str, typer.Argument(help="Registry version to rebuild, e.g. 3.")],
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Rebuild a version from its records (data window, cutoff, split, params) and compare it byte for byte.

    Uses the dataset spec the version carries (the one it was trained under).
    Re-ingests and validates the landed data, rebuilds the training set through Feast,
    checks it against the recorded data_sha256, retrains with the recorded parameters
    (warning when the code is not the recorded commit) and says whether model.ubj is
    byte-identical. Exit code 0 when it is, 1 when it is not.

    Example:

        riskloop reproduce 1
    """
    from riskloop.steps import reproduce_version

    s = settings()
    with console.status(f"rebuilding version {model_version}"):
        report = reproduce_version(s, model_name(s, spec, model), model_version, given_spec=spec)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        summary(
            f"reproduce {report.model} v{report.version}",
            {
                "training data": _same_or_differs(
                    "identical (data_sha256",
                    report.data_identical,
                    report.data_sha256_recorded,
                    report.data_sha256_rebuilt,
                ),
                "model.ubj": _same_or_differs(
                    "byte-identical (sha256",
                    report.model_identical,
                    report.model_sha256_recorded,
                    report.model_sha256_rebuilt,
                ),
                "commit": report.commit_recorded
                + ("" if report.commit_recorded == report.commit_now else f" (HEAD is {report.commit_now})"),
                "recipe": json.dumps(report.recipe),
                "work dir": report.work_dir,
            },
        )
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}")
    if not report.model_identical:
        raise typer.Exit(code=1)


def approve_cmd(
    model_version: Annotated[str, typer.Argument(help="Registry version to approve, e.g. 3.")],
    by: Annotated[str, typer.Option("--by", help="Who approves (recorded as the audit event's actor).")],
    note: Annotated[str, typer.Option("--note", help="What was reviewed and why it is approved.")],
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Approve a model version for promotion (human oversight): an audit event and MLflow tags.

    Needed before promotion when the dataset spec the version was trained under says
    `require_approval: true` (credit scoring) or RISKLOOP_AUDIT__REQUIRE_APPROVAL is on.
    The approval covers exactly this version: its run, model file and dataset spec.

    Examples:

        riskloop approve 3 --model credit-scorer --by "Jane Doe" --note "model card and fairness table reviewed"

        riskloop approve 1 --spec ./my-credit.yaml --by "Jane Doe" --note "reviewed"
    """
    from riskloop.audit.approval import approve, version_approval
    from riskloop.registry.mlflow_registry import get_version

    s = settings()
    name = model_name(s, spec, model)
    a = approve(s, name, model_version, by=by, note=note, given_spec=spec)
    requirement, _ = version_approval(s, get_version(s.tracking_uri, name, a.version))
    summary(
        f"approved {name} v{a.version}",
        {
            "by": a.by,
            "note": a.note,
            "time": a.time,
            "model_sha256": a.model_sha256,
            "audit seq": a.audit_seq,
            "required": f"{requirement.required} ({requirement.why})",
            "audit log": s.audit_path if s.audit.backend == "file" else "postgres",
        },
    )


def lineage_cmd(
    request_id: Annotated[str, typer.Argument(help="The request_id of a prediction (its response carries it).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a tree.")] = False,
) -> None:
    """Why was this request scored this way, by what, trained on what: every recorded hop, checked.

    prediction -> model version and role -> MLflow run -> pipeline run -> training data
    (sha256 recomputed) -> Feast definitions (compared) -> git commit -> image -> the gate,
    approval and canary verdicts that put the version in service. A missing hop is
    reported as missing; exit code 1 when a hop is missing or contradicted.

    Examples:

        riskloop lineage 3f6c0a9e1b2d4c5e8f7a6b5c4d3e2f1a

        riskloop lineage cli-1a2b3c4d5e6f --json
    """
    from riskloop.audit.lineage import render_tree, trace_request

    s = settings()
    lineages = trace_request(s, request_id)
    if as_json:
        doc = {
            "request_id": request_id,
            "complete": all(lin.complete for lin in lineages),
            "models": [lin.to_dict() for lin in lineages],
        }
        out.print_json(json.dumps(doc, default=str))
    else:
        out.print(render_tree(lineages))
    if not all(lin.complete for lin in lineages):
        raise typer.Exit(code=1)


def history_cmd(
    spec: Annotated[str | None, typer.Option("--spec", help="Only this dataset spec's model (default: all).")] = None,
    at: Annotated[str | None, typer.Option(help="Only what served at this time (ISO 8601 with offset).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """Which model version served which share of live traffic, when: rebuilt from the audit log.

    Examples:

        riskloop history

        riskloop history --at 2026-01-14T12:00:00+00:00 --json
    """
    from riskloop.audit.history import serving_at, serving_history, version_summaries
    from riskloop.audit.log import open_audit_log

    s = settings()
    model = model_name(s, spec) if spec else None
    when = None if at is None else parse_time(at, "--at")
    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    periods = serving_history(log.events(), model=model)
    if when is not None:
        periods = serving_at(periods, when, model=model)
    if as_json:
        out.print_json(json.dumps({"periods": [p.to_dict() for p in periods]}))
        return
    if not periods:
        console.print(
            "no serving history in the audit log"
            + (f" for {model}" if model else "")
            + (f" at {at}" if at else "")
            + f" ({s.audit_path if s.audit.backend == 'file' else 'postgres'})"
        )
        return
    t = Table(
        "model",
        "from",
        "until",
        "traffic shares",
        "mode",
        "event",
        "seq",
        "reason",
        title="serving history (from the audit log)",
        title_justify="left",
    )
    for p in periods:
        shares = ", ".join(
            f"v{v} {pct}%" + (" (shadow)" if p.mode == "shadow" and v != p.champion_version else "")
            for v, pct in p.shares.items()
        )
        t.add_row(p.model, p.start[:19], (p.end or "now")[:19], shares, p.mode, p.event, str(p.seq), p.reason[:50])
    out.print(t)
    if when is None:
        v = Table(
            "model",
            "version",
            "first served",
            "last served",
            "as champion",
            "as challenger",
            "max share",
            title="per version",
            title_justify="left",
        )
        for vs in version_summaries(periods, now=datetime.now(timezone.utc)):
            v.add_row(
                vs.model,
                vs.version,
                vs.first_served[:19],
                (vs.last_served or "serving")[:19],
                str(timedelta(seconds=round(vs.seconds_as_champion))),
                str(timedelta(seconds=round(vs.seconds_as_challenger))),
                f"{vs.max_share}%",
            )
        out.print(v)
