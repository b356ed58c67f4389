"""``riskloop canary ...``: progressive delivery on the deployment record (or the InferenceService)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from riskloop.cli.common import ModelOpt, VersionSpecOpt, console, model_name, settings, summary, version_spec
from riskloop.errors import ConfigError, RiskloopError
from riskloop.settings import Settings

canary_app = typer.Typer(
    help="Progressive delivery: deploy a challenger, analyse, promote or roll back.", no_args_is_help=True
)


def _deployment_table(d: Any) -> None:
    summary(
        f"deployment of {d.model_name} (revision {d.revision})",
        {
            "champion": f"v{d.champion_version}",
            "challenger": f"v{d.challenger_version}" if d.challenger_version else "-",
            "mode": d.mode if d.challenger_version else "-",
            "canary traffic": f"{d.canary_percent}%"
            + (" (sticky by card_id)" if d.sticky and d.canary_percent else ""),
            "drill": d.drill.model_dump() if d.drill else "-",
            "updated": d.updated_at.isoformat(timespec="seconds"),
            "reason": d.reason,
        },
    )


def _renamed(new: str | None, old: str | None, new_flag: str, old_flag: str) -> str | None:
    """The value of a renamed option given by either spelling; both, with different values, is a ConfigError.

    The old spelling stays for one release, hidden from --help (docs/glossary.md, alias options), so scripts
    that pass it keep working while the help shows only the name the glossary gives.
    """
    if new is not None and old is not None and new != old:
        raise ConfigError(
            f"{new_flag} {new} and {old_flag} {old} name two different versions",
            where="riskloop canary deploy",
            fix=f"pass only {new_flag} ({old_flag} is its old name)",
        )
    return new if new is not None else old


@canary_app.command("deploy")
def canary_deploy(
    challenger_alias: Annotated[
        str | None, typer.Option(help="Deploy this alias's version as challenger (resolved to its version).")
    ] = None,
    challenger_version: Annotated[str | None, typer.Option(help="Deploy this version as challenger.")] = None,
    alias: Annotated[str | None, typer.Option("--alias", hidden=True, help="Old name of --challenger-alias.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", hidden=True, help="Old name of --challenger-version.")
    ] = None,
    canary_percent: Annotated[int, typer.Option(min=0, max=100, help="Challenger's percentage of live requests.")] = 10,
    shadow: Annotated[bool, typer.Option(help="Shadow mode: the challenger only scores copies.")] = False,
    sticky: Annotated[
        bool,
        typer.Option(
            help="Route by a hash of card_id: a card stays on one model, but fraud "
            "clusters by card, so the two samples differ; off by default."
        ),
    ] = False,
    drill_error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Drill: share of challenger requests failed.")
    ] = 0.0,
    drill_score_shift: Annotated[float, typer.Option(min=-1, max=1, help="Drill: added to challenger scores.")] = 0.0,
    drill_latency_ms: Annotated[float, typer.Option(min=0, max=10_000, help="Drill: added challenger latency.")] = 0.0,
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Deploy a registered version as challenger beside the champion (a running server switches live).

    Examples:

        riskloop canary deploy --challenger-alias challenger --canary-percent 20

        riskloop canary deploy --challenger-version 3 --shadow

        riskloop canary deploy --challenger-version 3 --drill-error-rate 0.2     # rehearse a rollback
    """
    from riskloop.delivery import rollout
    from riskloop.registry.deployment import Drill

    alias = _renamed(challenger_alias, alias, "--challenger-alias", "--alias")
    version = _renamed(challenger_version, version, "--challenger-version", "--version")
    s = settings()
    drill = (
        Drill(error_rate=drill_error_rate, score_shift=drill_score_shift, added_latency_ms=drill_latency_ms)
        if drill_error_rate or drill_score_shift or drill_latency_ms
        else None
    )
    name = model_name(s, spec, model)
    if spec is not None:  # the version to deploy must be the one trained under the spec named
        from riskloop.registry.mlflow_registry import resolve_version

        version_spec(s, resolve_version(s.tracking_uri, name, alias=alias, version=version), spec)
    d = rollout.deploy_challenger(
        s,
        name,
        alias=alias,
        version=version,
        canary_percent=canary_percent,
        mode="shadow" if shadow else "canary",
        sticky=sticky,
        drill=drill,
        reason="riskloop canary deploy",
    )
    _deployment_table(d)


@canary_app.command("status")
def canary_status(
    url: Annotated[str | None, typer.Option(help="Running server to read live metrics from.")] = None,
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Show the traffic split, both models' live metrics (since the server started) and the verdict.

    Example:

        riskloop canary status
    """
    from riskloop.delivery import rollout

    s = settings()
    d = rollout.current(s, model_name(s, spec, model))
    if d is None:
        raise RiskloopError("no deployment yet", fix="start `riskloop serve` or run `riskloop canary deploy`")
    _deployment_table(d)
    if d.challenger_version is not None:
        _live_verdict(s, d, url or f"http://127.0.0.1:{s.serving.http_port}")


def _live_verdict(s: Settings, d: Any, base_url: str) -> None:
    from riskloop.delivery.analysis import CanaryPolicy, analyze
    from riskloop.delivery.metrics_source import ScrapeSource, Snapshot, window

    try:
        end = ScrapeSource(base_url, model=d.model_name).snapshot()
    except RiskloopError as exc:  # no server running is an answer here, not a failure
        console.print(f"no live metrics: {exc}", highlight=False, markup=False)
        return
    start = Snapshot(at=end.at, series={})
    role = "shadow" if d.mode == "shadow" else "challenger"
    champion = window(start, end, "champion", d.champion_version)
    challenger = window(start, end, role, d.challenger_version)
    verdict = analyze(champion, challenger, CanaryPolicy())
    t = Table(title="live metrics since the server started", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in verdict.measures.items():
        t.add_row(k, f"{v:.4g}")
    console.print(t)
    console.print(f"verdict: [bold]{verdict.value}[/]")
    for reason in verdict.reasons:
        console.print(f"  - {reason}")


def _canary_act(action: str, spec: str | None, model: str | None, reason: str) -> None:
    """Run one bookkeeping operation of ``delivery.rollout`` on the model and show the new state."""
    from riskloop.delivery import rollout

    s = settings()
    name = model_name(s, spec, model)
    if action == "promote":  # the version promoted must be the one trained under a --spec named
        d = rollout.promote(s, name, reason=reason, given_spec=spec)
    elif action == "rollback":
        d = rollout.rollback(s, name, reason=reason)
    else:
        d = rollout.restore_previous(s, name, reason=reason)
    _deployment_table(d)


@canary_app.command("promote")
def canary_promote(
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual promotion",
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Make the challenger champion (alias `previous` keeps the old one for `riskloop canary restore`).

    Refused (and audited) when the challenger needs an approval it does not have, or its dataset spec cannot
    be verified. With no champion yet, the `challenger` version goes live as the first champion: how a
    credit model goes live the first time, after `riskloop approve`.

    Example:

        riskloop canary promote --model credit-scorer --reason "approved, first go-live"
    """
    _canary_act("promote", spec, model, reason)


@canary_app.command("rollback")
def canary_rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual rollback",
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Take the challenger out of traffic; the champion answers everything."""
    _canary_act("rollback", spec, model, reason)


@canary_app.command("restore")
def canary_restore(
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual restore",
    spec: VersionSpecOpt = None,
    model: ModelOpt = None,
) -> None:
    """Instant rollback after a promotion: the `previous` version becomes champion again."""
    _canary_act("restore", spec, model, reason)
