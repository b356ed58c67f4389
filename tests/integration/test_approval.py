"""Human oversight and audit anchors against a real MLflow on sqlite.

Approve; promotion refused without an approval; tampering anywhere in the resulting log, its last lines
included, fails `riskloop audit verify` against the anchors kept in the registry.

Two versions of a toy model are registered per model name; the delivery
bookkeeping (deployment record, aliases, audit log) runs for real, without a
server (promotion does not need one).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from riskloop.audit.anchors import collect_anchors, unanchored_tail
from riskloop.audit.approval import approval_requirement, check_approved
from riskloop.audit.log import FileAuditLog, canonical_json, event_hash, open_audit_log
from riskloop.delivery import rollout
from riskloop.delivery.canary import progressive_rollout
from riskloop.errors import DeploymentError
from riskloop.registry.mlflow_registry import (
    Lineage,
    get_version,
    register_version,
    set_alias,
    set_version_tags,
    start_training_run,
)
from riskloop.settings import AuditSettings, Settings
from riskloop.training.train import train_model
from tests.unit.test_train import META, PARAMS, toy_features, toy_frame

FRAUD, CREDIT = "fraud-detector", "credit-scorer"


def _register(s: Settings, model: str, spec: str, run_id: str, sha: str) -> str:
    lineage = Lineage(model_sha256=sha, data_sha256="d" * 64, data_snapshot="snap", feature_service="raw",
                      git_commit="abc", image="img", pipeline_run_id="run", gate_result="passed",
                      riskloop_version="0", dataset_spec=spec)
    return register_version(s.tracking_uri, model, run_id, lineage)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("approval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        s = Settings(state_dir=root / "state")
        s.ensure_dirs()
        bundle = train_model(toy_frame(), toy_features(), PARAMS, root / "model", meta=META)
        sha = bundle.meta["model_sha256"]
        run_id = start_training_run(s.tracking_uri, "approval-test", params={}, model_dir=root / "model",
                                    artifact_location=s.artifact_root.as_uri())
        for model, spec in ((FRAUD, "synthetic-fraud"), (CREDIT, "german-credit")):
            set_alias(s.tracking_uri, model, "champion", _register(s, model, spec, run_id, sha))
        yield root / "state"


def settings_for(state: Path, *, require: bool) -> Settings:
    return Settings(state_dir=state, audit=AuditSettings(require_approval=require))


@pytest.fixture()
def canary(state: Path) -> Iterator[str]:
    """A new, unapproved version of each model deployed as a 10 % canary beside v1 (the same version number
    for both models); afterwards v1 is champion again."""
    s = settings_for(state, require=False)
    champion = get_version(s.tracking_uri, FRAUD, "1")
    new = {model: _register(s, model, spec, champion.run_id, champion.tags["model_sha256"])
           for model, spec in ((FRAUD, "synthetic-fraud"), (CREDIT, "german-credit"))}
    assert new[FRAUD] == new[CREDIT]
    for model in (FRAUD, CREDIT):
        rollout.ensure_deployment(s, model)
        rollout.deploy_challenger(s, model, version=new[model], canary_percent=10)
    yield new[FRAUD]
    for model in (FRAUD, CREDIT):
        d = rollout.current(s, model)
        assert d is not None
        if d.challenger_version is not None:
            rollout.rollback(s, model, reason="test reset")
        if rollout.current(s, model).champion_version != "1":  # type: ignore[union-attr]
            rollout.restore_previous(s, model, reason="test reset")


def events(s: Settings, name: str) -> list[dict[str, object]]:
    log = open_audit_log("file", path=s.audit_path)
    assert log.verify().ok
    return [{"ids": e.ids, "details": e.details, "actor": e.actor} for e in log.events() if e.event == name]


def cli(state: Path, *args: str, require: bool = False) -> tuple[int, str]:
    from riskloop.cli import app

    env = {"RISKLOOP_STATE_DIR": str(state), "RISKLOOP_AUDIT__REQUIRE_APPROVAL": str(require).lower(),
           "COLUMNS": "200"}
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, r.output


def test_requirement_comes_from_the_settings_or_the_dataset_spec(state: Path) -> None:
    assert approval_requirement(settings_for(state, require=False), "synthetic-fraud").required is False
    assert approval_requirement(settings_for(state, require=True), "synthetic-fraud").required is True
    credit = approval_requirement(settings_for(state, require=False), "german-credit")
    assert credit.required and "german-credit" in credit.why
    # a version trained on a spec file this machine lacks: the settings decide
    assert approval_requirement(settings_for(state, require=False), "/nowhere/spec.yaml").required is False


def test_unapproved_challenger_is_refused_by_promote_and_the_refusal_is_audited(state: Path, canary: str) -> None:
    s, v = settings_for(state, require=True), canary
    with pytest.raises(DeploymentError) as refused:
        rollout.promote(s, FRAUD, reason="try")
    message = str(refused.value)
    assert "no recorded approval" in message and f"riskloop approve {v} --by NAME" in message
    d = rollout.current(s, FRAUD)
    assert d is not None and (d.champion_version, d.challenger_version) == ("1", v), "nothing moved"
    refusal = events(s, "approval_refused")[-1]
    assert refusal["ids"] == {"model": FRAUD, "model_version": v}
    assert refusal["details"]["action"] == "promotion"  # type: ignore[index]
    # the same promotion without the requirement goes through
    assert rollout.promote(settings_for(state, require=False), FRAUD).champion_version == v


def test_credit_spec_requires_approval_even_with_the_setting_off(state: Path, canary: str) -> None:
    s, v = settings_for(state, require=False), canary
    with pytest.raises(DeploymentError, match=f"riskloop approve {v} --spec german-credit"):
        rollout.promote(s, CREDIT)
    code, out = cli(state, "approve", v, "--spec", "german-credit", "--by", "Jane Doe", "--note",
                    "model card and fairness table reviewed")
    assert code == 0, out
    assert f"approved credit-scorer v{v}" in out and "german-credit has require_approval" in out
    tags = get_version(s.tracking_uri, CREDIT, v).tags
    assert tags["approved_by"] == "Jane Doe" and tags["approval_note"] == "model card and fairness table reviewed"
    approved = events(s, "approved")[-1]
    assert approved["actor"] == "Jane Doe" and approved["ids"]["model_version"] == v  # type: ignore[index]
    d = rollout.promote(s, CREDIT)
    assert d.champion_version == v
    promoted = events(s, "promoted")[-1]
    assert promoted["details"]["approval"]["by"] == "Jane Doe"  # type: ignore[index]


def test_cli_canary_promote_refuses_with_how_to_approve(state: Path, canary: str) -> None:
    code, out = cli(state, "canary", "promote", require=True)
    assert code == 2 and f"riskloop approve {canary} --by NAME" in out, out
    code, out = cli(state, "approve", canary, "--by", "Ann", "--note", "reviewed", require=True)
    assert code == 0, out
    code, out = cli(state, "canary", "promote", require=True)
    assert code == 0 and f"v{canary}" in out, out


def test_progressive_rollout_refuses_before_moving_any_traffic(state: Path, canary: str) -> None:
    s = settings_for(state, require=False)
    with pytest.raises(DeploymentError, match="progressive rollout refused"):
        progressive_rollout(s, CREDIT, steps=[10, 50], source=None)
    d = rollout.current(s, CREDIT)
    assert d is not None and d.canary_percent == 10 and d.challenger_version == canary
    assert events(s, "approval_refused")[-1]["details"]["action"] == "progressive rollout"  # type: ignore[index]


def test_an_approval_covers_only_the_model_file_it_named(state: Path, canary: str) -> None:
    s, v = settings_for(state, require=True), canary
    from riskloop.audit.approval import approve

    approve(s, FRAUD, v, by="Ann", note="reviewed")
    assert check_approved(s, FRAUD, v, action="promotion") is not None
    original = get_version(s.tracking_uri, FRAUD, v).tags["model_sha256"]
    set_version_tags(s.tracking_uri, FRAUD, v, {"model_sha256": "f" * 64})
    try:
        with pytest.raises(DeploymentError, match="no recorded approval"):
            check_approved(s, FRAUD, v, action="promotion")
    finally:
        set_version_tags(s.tracking_uri, FRAUD, v, {"model_sha256": original})


def test_approve_bad_input_says_what_and_how(state: Path) -> None:
    code, out = cli(state, "approve", "99", "--by", "Ann", "--note", "x")
    assert code == 2 and "version 99 not found" in out, out
    code, out = cli(state, "approve", "1", "--by", " ", "--note", "x")
    assert code == 2 and "--by is empty" in out, out
    code, out = cli(state, "approve", "1", "--note", "x")
    assert code == 2 and "--by" in out, out


# --------------------------------------------------------------------------------------------------------------
# Anchors from the registry: any edit, insertion or deletion of the log's lines, the last ones included, fails
# verification (appending after the last line is a legitimate append by construction: writers are trusted).

@st.composite
def tampering(draw: st.DrawFn, lines: list[bytes]) -> tuple[str, list[bytes]]:
    n = len(lines)
    kind = draw(st.sampled_from(["byte", "rehashed_edit", "delete", "insert"]))
    if kind == "byte":
        i = draw(st.integers(0, n - 1))
        pos = draw(st.integers(0, len(lines[i]) - 1))
        line = bytearray(lines[i])
        line[pos] = draw(st.integers(32, 126).filter(lambda b: b != line[pos]))
        return kind, [*lines[:i], bytes(line), *lines[i + 1:]]
    if kind == "rehashed_edit":
        i = draw(st.integers(max(0, n - 4), n - 1)) if draw(st.booleans()) else draw(st.integers(0, n - 1))
        record = json.loads(lines[i])
        record["actor"] = record["actor"] + "x"
        record["hash"] = event_hash(**{k: v for k, v in record.items() if k != "hash"})
        return kind, [*lines[:i], canonical_json(record).encode(), *lines[i + 1:]]
    if kind == "delete":
        start = draw(st.integers(0, n - 1))
        stop = n if draw(st.booleans()) else draw(st.integers(start + 1, n))  # often the tail
        return kind, lines[:start] + lines[stop:]
    i = draw(st.integers(0, n - 1))
    record = json.loads(lines[i])
    record["details"] = {"forged": True}
    record["hash"] = event_hash(**{k: v for k, v in record.items() if k != "hash"})
    return kind, [*lines[:i], canonical_json(record).encode(), *lines[i:]]


def test_any_tampering_of_a_real_log_including_its_last_lines_fails_verify(state: Path, canary: str) -> None:
    s = settings_for(state, require=False)
    rollout.promote(s, FRAUD, reason="the last event is a lifecycle event")
    anchors = collect_anchors(s)
    log = open_audit_log("file", path=s.audit_path)
    result = log.verify(anchors)
    assert result.ok and unanchored_tail(result.events, anchors) == 0, "the end of the log is anchored"
    lines = s.audit_path.read_bytes().split(b"\n")[:-1]
    tail_cases = [lines[:-1], lines[:-2], [*lines[:-1], lines[-1].replace(b'"riskloop"', b'"mallory"')]]

    def broken(tampered: list[bytes]) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            copy = FileAuditLog(Path(tmp) / "audit.jsonl")
            copy.path.write_bytes(b"".join(line + b"\n" for line in tampered))
            return not copy.verify(anchors).ok

    assert all(broken(case) for case in tail_cases)

    @settings(max_examples=80, deadline=None)
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        kind, tampered = data.draw(tampering(lines))
        assert broken(tampered), kind

    prop()
    # the command says so too: the last line deleted, exit code 1
    s.audit_path.write_bytes(b"".join(line + b"\n" for line in lines[:-1]))
    try:
        code, out = cli(state, "audit", "verify")
        assert code == 1 and "truncated" in out, out
    finally:
        s.audit_path.write_bytes(b"".join(line + b"\n" for line in lines))
    code, out = cli(state, "audit", "verify")
    assert code == 0 and "intact" in out and "after the newest anchor" not in out, out
