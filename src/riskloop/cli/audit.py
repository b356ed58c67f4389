"""``riskloop audit ...``: read and verify the audit log."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from riskloop.cli.common import out, settings

audit_app = typer.Typer(help="Inspect and verify the audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Verify the audit log's hash chain and the head hashes anchored with model versions.

    Exit code 0 when intact, 1 with the first broken line otherwise.
    """
    from riskloop.audit.anchors import collect_anchors, unanchored_tail
    from riskloop.audit.log import open_audit_log

    s = settings()
    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    anchors = collect_anchors(s)
    result = log.verify(anchors)
    if result.ok:
        out.print(
            f"[green]audit log intact[/]: {result.events} events, {len(anchors)} anchors, head {result.head_hash}"
        )
        tail = unanchored_tail(result.events, anchors)
        if tail:
            out.print(
                f"the last {tail} event(s) come after the newest anchor: the chain alone covers them "
                "(a cut there is invisible until the next lifecycle event is anchored)"
            )
        return
    out.print(f"[bold red]audit log broken[/] at line {(result.first_broken_seq or 0) + 1}: {result.reason}")
    raise typer.Exit(code=1)


@audit_app.command("show")
def audit_show(
    event: Annotated[str | None, typer.Option(help="Only this event type.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Only events naming this model version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List audit events, optionally filtered."""
    from riskloop.audit.log import filter_events, open_audit_log

    s = settings()
    events = filter_events(
        open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).events(),
        event=event,
        model_version=model_version,
    )
    if as_json:
        for e in events:
            out.print(e.to_json(), soft_wrap=True, markup=False, highlight=False)
        return
    t = Table("seq", "time", "event", "actor", "ids", "details")
    for e in events:
        t.add_row(str(e.seq), e.time[:19], e.event, e.actor, json.dumps(e.ids), json.dumps(e.details)[:80])
    out.print(t)
