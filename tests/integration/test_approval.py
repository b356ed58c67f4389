"""Human oversight and audit anchors against a real MLflow on sqlite.

Approve; promotion refused without an approval, and fail closed when the version's spec (its approval
policy) cannot be read, does not match its hash or the --spec given; tampering anywhere in the resulting log,
its last lines included, fails `riskloop audit verify` against the anchors kept in the registry.

A toy model is registered under three specs, each stored with it as training does: the shipped
synthetic-fraud and german-credit, and a user's credit spec given by path under a name no shipped spec has
(``acme-credit``, require_approval: true). The delivery bookkeeping (deployment record, aliases, audit log)
runs for real, without a server (promotion does not need one).
"""

from __future__ import annotations

import json
import shutil
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
from riskloop.data.spec import load_spec, read_spec_source
from riskloop.delivery import rollout
from riskloop.delivery.canary import progressive_rollout
from riskloop.errors import ApprovalRefused, ConfigError, DeploymentError
from riskloop.registry.mlflow_registry import (
    SPEC_FILE,
    SPEC_SHA256_TAG,
    LineageRecord,
    get_version,
    register_version,
    set_alias,
    set_version_tags,
    start_training_run,
    version_by_alias,
)
from riskloop.settings import AuditSettings, Settings
from riskloop.training.gate import GateResult
from riskloop.training.train import train_model
from tests.unit.test_train import META, PARAMS, toy_features, toy_frame

FRAUD, CREDIT, ACME = "fraud-detector", "credit-scorer", "acme-credit-scorer"
MODELS = (FRAUD, CREDIT, ACME)


def acme_spec_text(name: str = "acme-credit", model: str = ACME) -> str:
    """A user's credit spec: the German Credit spec under a name and model no shipped spec has."""
    text = read_spec_source("german-credit").text
    return text.replace("name: german-credit", f"name: {name}").replace(
        "model_name: credit-scorer", f"model_name: {model}"
    )


def write_acme_spec(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "acme-credit.yaml"
    path.write_text(acme_spec_text())
    assert load_spec(path).require_approval and load_spec(path).name == "acme-credit"
    return path


def train_run(s: Settings, root: Path, spec_text: str | None) -> str:
    """An MLflow run of the toy model whose model directory stores ``spec_text``, as the train step does."""
    folder = Path(tempfile.mkdtemp(dir=root))
    shutil.copytree(root / "model", folder / "model")
    tags = {}
    if spec_text is not None:
        (folder / "model" / SPEC_FILE).write_text(spec_text)
        tags[SPEC_SHA256_TAG] = read_spec_source(folder / "model" / SPEC_FILE).sha256
    return start_training_run(
        s.tracking_uri,
        "approval-test",
        params={},
        model_dir=folder / "model",
        artifact_location=s.artifact_root.as_uri(),
        tags=tags,
    )


def _register(s: Settings, model: str, run_id: str, *, spec_sha256: str | None = None) -> str:
    """Register ``run_id`` like the register step (lineage with the run's spec hash, unless overridden)."""
    from riskloop.registry.mlflow_registry import run_info

    tags = run_info(s.tracking_uri, run_id)["tags"]
    lineage = LineageRecord(
        model_sha256=RUNS["model_sha256"],
        data_sha256="d" * 64,
        data_snapshot="snap",
        feature_service="raw",
        git_commit="abc",
        image="img",
        pipeline_run_id="run",
        gate_result="passed",
        riskloop_version="0",
        dataset_spec=model,
        dataset_spec_sha256=spec_sha256 if spec_sha256 is not None else tags.get(SPEC_SHA256_TAG, ""),
    )
    return register_version(s.tracking_uri, model, run_id, lineage)


RUNS: dict[str, str] = {}  # set by the state fixture: model -> the run whose model directory carries its spec


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("approval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        s = Settings(state_dir=root / "state")
        s.ensure_dirs()
        RUNS["model_sha256"] = train_model(toy_frame(), toy_features(), PARAMS, root / "model", meta=META).meta[
            "model_sha256"
        ]
        for model, text in (
            (FRAUD, read_spec_source("synthetic-fraud").text),
            (CREDIT, read_spec_source("german-credit").text),
            (ACME, acme_spec_text()),
        ):
            RUNS[model] = train_run(s, root, text)
            set_alias(s.tracking_uri, model, "champion", _register(s, model, RUNS[model]))
        from riskloop.audit.approval import approve

        for model in (CREDIT, ACME):  # the credit champions went live approved
            approve(s, model, "1", by="Jane Doe", note="v1 reviewed before it went live")
        yield root / "state"


def settings_for(state: Path, *, require: bool) -> Settings:
    return Settings(state_dir=state, audit=AuditSettings(require_approval=require))


@pytest.fixture()
def canary(state: Path) -> Iterator[dict[str, str]]:
    """A new, unapproved version of each model deployed as a 10 % canary beside v1 (model -> version);
    afterwards v1 is champion again."""
    s = settings_for(state, require=False)
    new = {model: _register(s, model, RUNS[model]) for model in MODELS}
    for model in MODELS:
        rollout.ensure_deployment(s, model)
        rollout.deploy_challenger(s, model, version=new[model], canary_percent=10)
    yield new
    for model in MODELS:
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

    env = {"RISKLOOP_STATE_DIR": str(state), "RISKLOOP_AUDIT__REQUIRE_APPROVAL": str(require).lower(), "COLUMNS": "200"}
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, r.output


def test_requirement_comes_from_the_dataset_spec_and_the_settings_only_add_it(state: Path) -> None:
    fraud, credit = load_spec("synthetic-fraud"), load_spec("german-credit")
    assert approval_requirement(settings_for(state, require=False), fraud).required is False
    assert approval_requirement(settings_for(state, require=True), fraud).required is True
    for require in (False, True):  # the setting off never removes a spec's requirement
        req = approval_requirement(settings_for(state, require=require), credit)
        assert req.required and "german-credit has require_approval" in req.why


def test_unapproved_challenger_is_refused_by_promote_and_the_refusal_is_audited(
    state: Path, canary: dict[str, str]
) -> None:
    s, v = settings_for(state, require=True), canary[FRAUD]
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


def test_credit_spec_requires_approval_even_with_the_setting_off(state: Path, canary: dict[str, str]) -> None:
    s, v = settings_for(state, require=False), canary[CREDIT]
    with pytest.raises(ApprovalRefused, match=f"riskloop approve {v} --model credit-scorer"):
        rollout.promote(s, CREDIT)
    code, out = cli(
        state, "approve", v, "--model", CREDIT, "--by", "Jane Doe", "--note", "model card and fairness table reviewed"
    )
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


def test_cli_canary_promote_refuses_with_how_to_approve(state: Path, canary: dict[str, str]) -> None:
    code, out = cli(state, "canary", "promote", require=True)
    assert code == 2 and f"riskloop approve {canary[FRAUD]} --by NAME" in out, out
    code, out = cli(state, "approve", canary[FRAUD], "--by", "Ann", "--note", "reviewed", require=True)
    assert code == 0, out
    code, out = cli(state, "canary", "promote", require=True)
    assert code == 0 and f"v{canary[FRAUD]}" in out, out


def test_progressive_rollout_refuses_before_moving_any_traffic(state: Path, canary: dict[str, str]) -> None:
    s = settings_for(state, require=False)
    with pytest.raises(DeploymentError, match="progressive rollout refused"):
        progressive_rollout(s, CREDIT, steps=[10, 50], source=None)
    d = rollout.current(s, CREDIT)
    assert d is not None and d.canary_percent == 10 and d.challenger_version == canary[CREDIT]
    assert events(s, "approval_refused")[-1]["details"]["action"] == "progressive rollout"  # type: ignore[index]


def test_an_approval_covers_only_the_model_file_it_named(state: Path, canary: dict[str, str]) -> None:
    s, v = settings_for(state, require=True), canary[FRAUD]
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
# Fail closed, with a user's spec given by path: the version carries its spec, so deleting or editing the file
# cannot switch the approval off; a stored spec that does not verify refuses promotion, even where no approval
# would be needed.


@pytest.fixture()
def acme_spec(tmp_path: Path) -> Path:
    """The user's spec file the ACME versions were trained under (the same bytes they store)."""
    return write_acme_spec(tmp_path / "specs")


def refusals(s: Settings, model: str, version: str) -> list[dict[str, object]]:
    return [e for e in events(s, "approval_refused") if e["ids"] == {"model": model, "model_version": version}]


def test_a_path_spec_that_requires_approval_refuses_an_unapproved_promotion(
    state: Path, canary: dict[str, str], acme_spec: Path
) -> None:
    s, v = settings_for(state, require=False), canary[ACME]
    tags = get_version(s.tracking_uri, ACME, v).tags
    assert tags[SPEC_SHA256_TAG] == read_spec_source(acme_spec).sha256  # the hash sits beside data_sha256
    code, out = cli(state, "canary", "promote", "--spec", str(acme_spec))
    assert code == 2 and "promotion refused" in out and "acme-credit has require_approval: true" in out, out
    assert f"riskloop approve {v} --model {ACME}" in out, out
    assert len(refusals(s, ACME, v)) == 1
    d = rollout.current(s, ACME)
    assert d is not None and (d.champion_version, d.challenger_version) == ("1", v), "nothing moved"
    with pytest.raises(ApprovalRefused, match="progressive rollout refused"):
        progressive_rollout(s, ACME, steps=[10, 50])
    assert len(refusals(s, ACME, v)) == 2


def test_deleting_the_spec_file_after_training_does_not_remove_the_requirement(
    state: Path, canary: dict[str, str], acme_spec: Path
) -> None:
    s, v = settings_for(state, require=False), canary[ACME]
    acme_spec.unlink()
    code, out = cli(state, "canary", "promote", "--model", ACME)
    assert code == 2 and "no recorded approval" in out and "acme-credit has require_approval" in out, out
    assert refusals(s, ACME, v)
    code, out = cli(state, "approve", v, "--spec", str(acme_spec), "--by", "Ann", "--note", "reviewed")
    assert code == 2 and "does not exist" in out, out  # a --spec that cannot be read is an error, not a default
    code, out = cli(state, "approve", v, "--model", ACME, "--by", "Ann", "--note", "card reviewed")
    assert code == 0 and "acme-credit has require_approval" in out, out
    code, out = cli(state, "canary", "promote", "--model", ACME)
    assert code == 0, out
    assert version_by_alias(s.tracking_uri, ACME, "champion").version == v  # type: ignore[union-attr]


def test_a_spec_edited_after_training_does_not_match_and_cannot_switch_approval_off(
    state: Path, canary: dict[str, str], acme_spec: Path
) -> None:
    s, v = settings_for(state, require=False), canary[ACME]
    acme_spec.write_text(acme_spec.read_text().replace("require_approval: true", "require_approval: false"))
    code, out = cli(state, "canary", "promote", "--spec", str(acme_spec))
    assert code == 2 and "is not the dataset spec version" in out, out
    assert "-require_approval: true" in out and "+require_approval: false" in out, out  # says what differs
    assert "cannot be verified" in str(refusals(s, ACME, v)[-1]["details"]["required_because"])  # type: ignore[index]
    code, out = cli(state, "approve", v, "--spec", str(acme_spec), "--by", "Ann", "--note", "reviewed")
    assert code == 2 and "is not the dataset spec version" in out, out
    assert not [
        e
        for e in events(s, "approved")
        if e["ids"]["model"] == ACME  # type: ignore[index]
        and e["ids"]["model_version"] == v
    ]  # type: ignore[index]
    code, out = cli(state, "card", v, "--spec", str(acme_spec))
    assert code == 2 and "is not the dataset spec version" in out, out
    # without --spec the version's own spec decides: still required
    code, out = cli(state, "canary", "promote", "--model", ACME)
    assert code == 2 and "no recorded approval" in out, out
    assert rollout.current(s, ACME).champion_version == "1"  # type: ignore[union-attr]


def test_a_stored_spec_that_cannot_be_read_or_does_not_match_its_hash_refuses_promotion(
    state: Path, canary: dict[str, str]
) -> None:
    s, v = settings_for(state, require=False), canary[FRAUD]  # fraud needs no approval: the spec alone refuses
    recorded = get_version(s.tracking_uri, FRAUD, v).tags[SPEC_SHA256_TAG]
    set_version_tags(s.tracking_uri, FRAUD, v, {SPEC_SHA256_TAG: "0" * 64})
    try:
        with pytest.raises(ApprovalRefused, match=r"its dataset spec cannot be verified.*altered after registration"):
            rollout.promote(s, FRAUD)
    finally:
        set_version_tags(s.tracking_uri, FRAUD, v, {SPEC_SHA256_TAG: recorded})
    assert refusals(s, FRAUD, v)
    without_spec = _register(s, FRAUD, train_run(s, state.parent, None), spec_sha256="e" * 64)  # artifact lost
    legacy = _register(s, FRAUD, RUNS[FRAUD], spec_sha256="")  # registered before versions carried a spec
    for version, why in ((without_spec, "cannot be read"), (legacy, "records no dataset spec")):
        with pytest.raises(ApprovalRefused, match=why):
            check_approved(s, FRAUD, version, action="promotion")
        assert refusals(s, FRAUD, version)
    assert rollout.promote(s, FRAUD).champion_version == v  # the verified spec needs no approval


def test_an_approval_of_one_version_does_not_let_the_next_be_promoted(state: Path, canary: dict[str, str]) -> None:
    from riskloop.audit.approval import approve

    s, v = settings_for(state, require=False), canary[CREDIT]
    approve(s, CREDIT, v, by="Ann", note="v reviewed")
    later = _register(s, CREDIT, RUNS[CREDIT])  # the same model file and spec, a later version
    rollout.deploy_challenger(s, CREDIT, version=later, canary_percent=10)
    with pytest.raises(ApprovalRefused, match=f"version {later} of {CREDIT}: it has no recorded approval"):
        rollout.promote(s, CREDIT)
    assert refusals(s, CREDIT, later)
    assert rollout.current(s, CREDIT).champion_version == "1"  # type: ignore[union-attr]


def test_a_tampered_approval_tag_without_its_audit_event_does_not_count(state: Path, canary: dict[str, str]) -> None:
    s, v = settings_for(state, require=False), canary[CREDIT]
    set_version_tags(
        s.tracking_uri,
        CREDIT,
        v,
        {"approved_by": "Mallory", "approved_at": "2026-01-01T00:00:00Z", "approval_note": "trust me"},
    )
    code, out = cli(state, "canary", "promote", "--model", CREDIT)
    assert code == 2 and "no recorded approval" in out, out
    assert refusals(s, CREDIT, v)
    assert rollout.current(s, CREDIT).champion_version == "1"  # type: ignore[union-attr]


def test_an_approval_forged_into_the_log_with_a_recomputed_chain_does_not_count(
    state: Path, canary: dict[str, str]
) -> None:
    from riskloop.errors import AuditChainBroken

    s, v = settings_for(state, require=False), canary[CREDIT]
    with pytest.raises(ApprovalRefused):
        rollout.promote(s, CREDIT)  # its refusal is the log's last line, anchored on the version
    original = s.audit_path.read_bytes()
    lines = original.split(b"\n")[:-1]
    record = json.loads(lines[-1])
    assert record["event"] == "approval_refused"
    info = get_version(s.tracking_uri, CREDIT, v)
    record.update(
        event="approved",
        actor="Mallory",
        ids={"model": CREDIT, "model_version": v, "run_id": info.run_id},
        details={
            "note": "forged",
            "model_sha256": info.tags["model_sha256"],
            "dataset_spec_sha256": info.tags[SPEC_SHA256_TAG],
        },
    )
    record["hash"] = event_hash(**{k: x for k, x in record.items() if k != "hash"})
    s.audit_path.write_bytes(b"".join(line + b"\n" for line in [*lines[:-1], canonical_json(record).encode()]))
    try:
        assert open_audit_log("file", path=s.audit_path).verify().ok, "the chain alone cannot see it"
        with pytest.raises(AuditChainBroken):
            rollout.promote(s, CREDIT)
        assert rollout.current(s, CREDIT).champion_version == "1"  # type: ignore[union-attr]
    finally:
        s.audit_path.write_bytes(original)


def test_the_first_version_of_a_path_spec_that_requires_approval_waits_as_challenger(
    state: Path, tmp_path: Path
) -> None:
    """The first version to pass the gate is not champion until approved and promoted (register step)."""
    from riskloop import steps

    s = settings_for(state, require=False)
    model = "acme-first-scorer"
    spec = tmp_path / "acme-first.yaml"
    spec.write_text(acme_spec_text(name="acme-first", model=model))
    run_id = train_run(s, state.parent, spec.read_text())
    model_dir = Path(tempfile.mkdtemp(dir=tmp_path)) / "model"
    shutil.copytree(state.parent / "model", model_dir)
    (model_dir / SPEC_FILE).write_text(spec.read_text())
    gate = GateResult(passed=True, reasons=("pass: first model",), candidate={}, champion=None, champion_version=None)
    reg = steps.register(
        run_id, model_dir, gate, str(spec), s, pipeline_run_id="p1", data_sha256="d" * 64, data_snapshot="snap"
    )
    assert reg.aliases == ["challenger"] and reg.approval_required, reg
    assert version_by_alias(s.tracking_uri, model, "champion") is None
    with pytest.raises(DeploymentError, match=r"(?s)no champion yet.*riskloop approve 1 --model acme-first-scorer"):
        rollout.ensure_deployment(s, model)  # nothing serves it: `riskloop serve` stops here too
    code, out = cli(state, "canary", "promote", "--spec", str(spec))
    assert code == 2 and "no recorded approval" in out, out
    assert refusals(s, model, "1")
    code, out = cli(state, "approve", "1", "--spec", str(spec), "--by", "Jane Doe", "--note", "card reviewed")
    assert code == 0, out
    code, out = cli(state, "canary", "promote", "--spec", str(spec), "--reason", "approved: first go-live")
    assert code == 0 and "v1" in out, out
    champion = version_by_alias(s.tracking_uri, model, "champion")
    assert champion is not None and champion.version == "1"
    assert version_by_alias(s.tracking_uri, model, "challenger") is None
    promoted = [e for e in events(s, "promoted") if e["ids"]["model"] == model][-1]  # type: ignore[index]
    assert promoted["details"]["first_champion"] and promoted["details"]["approval"]["by"] == "Jane Doe"  # type: ignore[index]
    d = rollout.current(s, model)
    assert d is not None and d.champion_version == "1" and d.challenger_version is None
    # a spec edited between training and registration stops the register step, saying what differs
    spec.write_text(spec.read_text().replace("max_bad_fraction: 0.0", "max_bad_fraction: 0.5"))
    with pytest.raises(ConfigError, match="changed since the model trained in MLflow run"):
        steps.register(
            run_id, model_dir, gate, str(spec), s, pipeline_run_id="p2", data_sha256="d" * 64, data_snapshot="snap"
        )


def test_a_champion_alias_set_by_hand_is_no_licence_to_serve(state: Path, tmp_path: Path) -> None:
    s, model = settings_for(state, require=False), "acme-hand-scorer"
    spec = tmp_path / "acme-hand.yaml"
    spec.write_text(acme_spec_text(name="acme-hand", model=model))
    v = _register(s, model, train_run(s, state.parent, spec.read_text()))
    set_alias(s.tracking_uri, model, "champion", v)  # what the old register step did for a first version
    with pytest.raises(ApprovalRefused, match="deployment as champion refused"):
        rollout.ensure_deployment(s, model)  # `riskloop serve` following the record, a canary deploy
    assert rollout.current(s, model) is None
    code, out = cli(state, "serve", "--model-version", v, "--spec", str(spec), "--port", "1")
    assert code == 2 and "serving refused" in out and "no recorded approval" in out, out
    assert len(refusals(s, model, v)) == 2


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
        return kind, [*lines[:i], bytes(line), *lines[i + 1 :]]
    if kind == "rehashed_edit":
        i = draw(st.integers(max(0, n - 4), n - 1)) if draw(st.booleans()) else draw(st.integers(0, n - 1))
        record = json.loads(lines[i])
        record["actor"] = record["actor"] + "x"
        record["hash"] = event_hash(**{k: v for k, v in record.items() if k != "hash"})
        return kind, [*lines[:i], canonical_json(record).encode(), *lines[i + 1 :]]
    if kind == "delete":
        start = draw(st.integers(0, n - 1))
        stop = n if draw(st.booleans()) else draw(st.integers(start + 1, n))  # often the tail
        return kind, lines[:start] + lines[stop:]
    i = draw(st.integers(0, n - 1))
    record = json.loads(lines[i])
    record["details"] = {"forged": True}
    record["hash"] = event_hash(**{k: v for k, v in record.items() if k != "hash"})
    return kind, [*lines[:i], canonical_json(record).encode(), *lines[i:]]


def test_any_tampering_of_a_real_log_including_its_last_lines_fails_verify(state: Path, canary: dict[str, str]) -> None:
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
