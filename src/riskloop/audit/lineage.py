"""Lineage of one prediction (`RequestLineage`): from its request id back to the data, code and decisions behind it.

:func:`trace_request` walks, hop by hop, only what was recorded:

1. ``prediction``: the prediction log's rows for the request id (one per
   instance and role; a shadow's row beside the answer), with each decision's
   top reasons where they were logged (for a credit decision: the principal
   reasons of an adverse-action notice);
2. ``model_version``: the registry version and role that answered, with its lineage tags;
3. ``dataset_spec``: the spec the version was trained under, read from the
   version (stored with the model) and its sha256 recomputed against the
   version's ``dataset_spec_sha256`` tag; whether it requires approval;
4. ``mlflow_run``: the run that produced it (exists, status, params);
5. ``pipeline_run``: the pipeline run id on the version, the audit events it
   left, and its directory under the local pipeline root when there is one;
6. ``training_data``: the snapshot path and the recorded ``data_sha256``,
   recomputed from the file and compared (plus the file's own sha256);
7. ``features``: the Feast feature service and its views, with the sha256 of
   their definitions as recorded at training time (``feature_definitions`` run
   tag), recomputed from the Feast registry and compared;
8. ``code``: the git commit, checked against the repository's history when one is available;
9. ``image``: the image tag, checked to be ``<riskloop_version>-<short commit>``;
10. ``decisions``: the audit events that put the version in service: the gate,
   the registration, approvals, deployments, canary steps and verdicts,
   promotions, rollbacks (all of them, in log order: the prediction log
   stamps rows with the transaction's time, not the serving time) — and
   whether the audit log itself verifies.

Each hop has a status: ``ok`` (recorded and, where it can be, recomputed and
equal), ``recorded`` (recorded, but not checkable from here, e.g. an object
store path), ``mismatch`` (recomputed and different: the fact does not hold)
or ``missing`` (not recorded or not found). Nothing is inferred: a hop that
cannot be found is reported as missing, and the walk goes on where it can.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from riskloop.audit.log import AuditEvent, canonical_json, open_audit_log
from riskloop.errors import ConfigError, RiskloopError
from riskloop.hashing import sha256_file
from riskloop.settings import Settings

Status = Literal["ok", "recorded", "mismatch", "missing"]
FEATURE_DEFINITIONS_TAG = "feature_definitions"
FEATURE_DEFINITIONS_METADATA = b"riskloop.feature_definitions"

# events that change what is served, and the ids naming the versions they concern
SERVING_EVENTS = (
    "deployed",
    "canary_deployed",
    "canary_traffic_set",
    "canary_verdict",
    "promoted",
    "rolled_back",
    "champion_restored",
)


@dataclass(frozen=True)
class Check:
    """One recomputation: what was compared, and whether it held."""

    check: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Hop:
    hop: str
    status: Status
    source: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class RequestLineage:
    """The lineage of one prediction, for one model that scored it: its hops in order (not the lineage record of
    a version, ``riskloop.registry.LineageRecord``, which is one of the hops)."""

    request_id: str
    hops: tuple[Hop, ...]

    @property
    def complete(self) -> bool:
        """Every hop was found and no recomputation contradicted a record."""
        return all(h.status in ("ok", "recorded") for h in self.hops)

    def hop(self, name: str) -> Hop:
        return next(h for h in self.hops if h.hop == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "complete": self.complete,
            "hops": [{**asdict(h), "checks": [asdict(c) for c in h.checks]} for h in self.hops],
        }


def _status(checks: Sequence[Check], *, verifiable: bool = True) -> Status:
    if any(not c.ok for c in checks):
        return "mismatch"
    return "ok" if verifiable and checks else "recorded"


# ------------------------------------------------------------------------- definitions
def feature_definitions(store: Any, service: str) -> dict[str, Any]:
    """sha256 of the feature service's and each of its views' definitions (their protobuf specs) in ``store``.

    ``store`` is a ``feast.FeatureStore``; only the ``spec`` of each object is
    hashed (its ``meta`` holds timestamps that change on every apply).
    """
    fs = store.get_feature_service(service)
    views: dict[str, str] = {}
    for projection in fs.feature_view_projections:
        name = projection.name
        try:
            view = store.get_feature_view(name)
        except Exception:  # feast raises its own NotFound types: an on-demand view is looked up separately
            view = store.get_on_demand_feature_view(name)
        views[name] = _spec_sha256(view)
    return {"service": service, "service_sha256": _spec_sha256(fs), "views": views}


_VOLATILE = frozenset({"createdTimestamp", "lastUpdatedTimestamp", "body"})


def _spec_sha256(obj: Any) -> str:
    """sha256 of an object's spec as canonical JSON, without what changes when nothing did.

    Dropped: creation/update timestamps (data sources carry them inside the spec,
    set anew on every apply and even on some reads) and an on-demand view's
    dill-pickled ``body``, whose bytes vary between processes (its ``bodyText``,
    the function's source, stays in).
    """
    from google.protobuf.json_format import MessageToDict

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    spec = clean(MessageToDict(obj.to_proto().spec))
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def definitions_sha256(definitions: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(definitions)).encode()).hexdigest()


# ------------------------------------------------------------------------------- hops
def _prediction_rows(s: Settings, request_id: str) -> list[dict[str, Any]]:
    from riskloop.serving.prediction_log import read_prediction_log

    frame = read_prediction_log(s.predictions)
    rows = frame[frame["request_id"] == request_id]
    if rows.empty:
        raise ConfigError(
            f"no prediction with request id {request_id!r} in the prediction log",
            where=str(s.predictions),
            fix="use the request_id a prediction response carried (or the x-request-id header "
            "sent); the log is written about a second after scoring; check RISKLOOP_STATE_DIR",
        )
    keep = [
        "request_id",
        "transaction_id",
        "time",
        "model",
        "model_version",
        "role",
        "score",
        "decision",
        "threshold",
        "latency_ms",
    ]
    out = []
    for _, r in rows.iterrows():
        row = {
            k: (r[k].isoformat() if isinstance(r[k], datetime) else (r[k].item() if hasattr(r[k], "item") else r[k]))
            for k in keep
            if k in r
        }
        reasons = r.get("reasons")
        if isinstance(reasons, str) and reasons:
            row["reasons"] = json.loads(reasons)  # written by the server: [{feature, text, value, contribution}]
        out.append(row)
    return out


def _local_path(snapshot: str) -> Path | None:
    if snapshot.startswith("file://"):
        return Path(snapshot.removeprefix("file://"))
    if "://" in snapshot:
        return None
    return Path(snapshot)


def _data_hop(tags: Mapping[str, str]) -> Hop:
    import pandas as pd

    from riskloop.hashing import frame_sha256

    snapshot, recorded = tags.get("data_snapshot"), tags.get("data_sha256")
    if not snapshot or not recorded:
        return Hop(
            "training_data",
            "missing",
            "model version tags",
            note="the version carries no data_snapshot/data_sha256 tag",
        )
    facts: dict[str, Any] = {"data_snapshot": snapshot, "data_sha256": recorded}
    path = _local_path(snapshot)
    if path is None:
        return Hop(
            "training_data",
            "recorded",
            "model version tags",
            facts,
            note="the snapshot is in an object store this command does not read",
        )
    if not path.is_file():
        return Hop(
            "training_data",
            "missing",
            "model version tags",
            facts,
            note=f"the snapshot {path} no longer exists (pipeline root cleaned?)",
        )
    frame = pd.read_parquet(path)
    actual = frame_sha256(frame)
    facts.update({"path": str(path), "file_sha256": sha256_file(path), "rows": len(frame)})
    check = Check(
        "data_sha256 recomputed from the snapshot",
        actual == recorded,
        "equal" if actual == recorded else f"recomputed {actual}",
    )
    return Hop("training_data", _status([check]), "model version tags; snapshot file", facts, (check,))


def _feature_hop(s: Settings, tags: Mapping[str, str], run_tags: Mapping[str, str]) -> Hop:
    service = tags.get("feature_service")
    if not service:
        return Hop("features", "missing", "model version tags", note="no feature_service tag")
    if service == "raw":
        return Hop(
            "features",
            "ok",
            "model version tags",
            {"feature_service": "raw"},
            note="raw columns of the dataset (no feature store)",
        )
    facts: dict[str, Any] = {"feature_service": service}
    recorded_text = run_tags.get(FEATURE_DEFINITIONS_TAG)
    recorded = json.loads(recorded_text) if recorded_text else None
    if recorded is not None:
        facts["recorded_at_training"] = recorded
    try:
        from riskloop.features.store import StoreConfig, open_store

        current = feature_definitions(open_store(StoreConfig.from_settings(s)), service)
    except Exception as exc:  # not applied here, or feast cannot read the registry: say so, do not guess
        facts["registry"] = str(s.feast_dir / "registry.db")
        return Hop(
            "features",
            "recorded" if recorded else "missing",
            "MLflow run tag; Feast registry",
            facts,
            note=f"the Feast registry has no definitions to compare: {exc}",
        )
    facts["registry"] = str(s.feast_dir / "registry.db")
    facts["current_definitions_sha256"] = definitions_sha256(current)
    if recorded is None:
        facts["current"] = current
        return Hop(
            "features",
            "missing",
            "Feast registry",
            facts,
            note="the training run recorded no feature definitions (trained before they were recorded)",
        )
    checks = [
        Check(
            f"definition of {name} unchanged since training",
            current["views"].get(name) == digest,
            "equal" if current["views"].get(name) == digest else f"now {current['views'].get(name) or 'absent'}",
        )
        for name, digest in recorded["views"].items()
    ]
    checks.insert(
        0,
        Check(
            f"feature service {service} unchanged since training",
            current["service_sha256"] == recorded["service_sha256"],
        ),
    )
    return Hop("features", _status(checks), "MLflow run tag; Feast registry", facts, tuple(checks))


def _repo_root() -> Path | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip())


def commit_in_history(commit: str, repo: Path | None = None) -> bool | None:
    """Whether ``commit`` is a commit of the repository's history (None: no repository here)."""
    root = repo or _repo_root()
    if root is None:
        return None
    r = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True, timeout=10)
    return r.returncode == 0


def _code_hop(tags: Mapping[str, str]) -> Hop:
    commit = tags.get("git_commit")
    if not commit or commit == "unknown":
        return Hop("code", "missing", "model version tags", note="no git_commit recorded")
    found = commit_in_history(commit)
    facts = {"git_commit": commit, "riskloop_version": tags.get("riskloop_version")}
    if found is None:
        return Hop("code", "recorded", "model version tags", facts, note="no git repository here to check it in")
    check = Check("commit is in the repository's history", found, "" if found else "unknown to git here")
    return Hop("code", _status([check]), "model version tags; git", facts, (check,))


def _image_hop(tags: Mapping[str, str]) -> Hop:
    image = tags.get("image")
    if not image:
        return Hop("image", "missing", "model version tags", note="no image tag recorded")
    expected = f"{tags.get('riskloop_version')}-{str(tags.get('git_commit', ''))[:7]}"
    check = Check(
        "image tag is <riskloop_version>-<short commit>", image.endswith(f":{expected}"), f"expected tag {expected}"
    )
    return Hop("image", _status([check]), "model version tags", {"image": image}, (check,))


def _brief(e: AuditEvent) -> dict[str, Any]:
    keep = ("passed", "reasons", "aliases", "canary_percent", "mode", "reason", "note", "verdict", "action")
    details = {k: v for k, v in e.details.items() if k in keep}
    if isinstance(details.get("verdict"), dict):
        details["verdict"] = {k: details["verdict"][k] for k in ("decision", "reasons") if k in details["verdict"]}
    return {
        "seq": e.seq,
        "time": e.time,
        "event": e.event,
        "actor": e.actor,
        "ids": e.ids,
        "details": details,
        "hash": e.hash,
    }


def concerns_version(e: AuditEvent, model: str, version: str) -> bool:
    """Whether a serving event names ``version`` of ``model`` as champion or challenger."""
    return e.ids.get("model") == model and version in (e.ids.get("champion_version"), e.ids.get("challenger_version"))


def _concerns(e: AuditEvent, model: str, version: str, run_id: str) -> bool:
    """Whether an audit event is a decision about this version: its gate, registration, approval, serving."""
    if e.event == "gated":
        return e.ids.get("run_id") == run_id
    if e.event == "registered":
        return e.ids.get("model_version") == version and e.ids.get("run_id") == run_id
    if e.event in ("approved", "approval_refused"):
        return e.ids.get("model") == model and e.ids.get("model_version") == version
    return e.event in SERVING_EVENTS and concerns_version(e, model, version)


def _decisions_hop(
    events: Sequence[AuditEvent], verified: bool, reason: str | None, model: str, version: str, run_id: str
) -> Hop:
    # every decision about the version, in log order: the prediction log stamps a row with the transaction's
    # time (a replay scores old transactions), not when it was served, so it cannot cut this list
    chosen = [e for e in events if _concerns(e, model, version, run_id)]
    facts: dict[str, Any] = {"events": [_brief(e) for e in chosen], "audit_log_verified": verified}
    checks = [Check("the audit log's hash chain verifies", verified, reason or "")]
    kinds = {e.event for e in chosen}
    missing = [k for k in ("gated", "registered") if k not in kinds]
    # registered with alias champion (a first model) is what a server pinned to the alias serves
    champion_at_registration = any(
        e.event == "registered" and "champion" in (e.details.get("aliases") or []) for e in chosen
    )
    if not any(k in kinds for k in SERVING_EVENTS) and not champion_at_registration:
        missing.append(
            "a serving decision (deployed/canary_deployed/promoted/champion_restored, or registration as champion)"
        )
    if missing:
        return Hop(
            "decisions",
            "mismatch" if not verified else "missing",
            "audit log",
            facts,
            tuple(checks),
            note=f"no audit event for: {', '.join(missing)}",
        )
    return Hop("decisions", _status(checks), "audit log", facts, tuple(checks))


def trace_request(s: Settings, request_id: str) -> list[RequestLineage]:
    """The lineage of each model that scored ``request_id`` (the answering role first, then a shadow)."""
    rows = _prediction_rows(s, request_id)
    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    verdict = log.verify()
    events = log.events() if verdict.ok else _readable_events(log)
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r.get("role") == "shadow"):
        seen.setdefault((str(r["model"]), str(r["model_version"])), []).append(r)
    return [trace_version(s, request_id, rs, events, verdict.ok, verdict.reason) for rs in seen.values()]


def _readable_events(log: Any) -> list[AuditEvent]:
    try:
        return list(log.events())
    except RiskloopError:
        return []


def trace_version(
    s: Settings,
    request_id: str,
    rows: list[dict[str, Any]],
    events: Sequence[AuditEvent],
    verified: bool,
    reason: str | None,
) -> RequestLineage:
    from riskloop.registry.mlflow_registry import get_version, run_info

    first = rows[0]
    model, version = str(first["model"]), str(first["model_version"])
    hops: list[Hop] = [Hop("prediction", "ok", str(s.predictions), {"rows": rows})]
    try:
        info = get_version(s.tracking_uri, model, version)
    except RiskloopError as exc:
        hops.append(
            Hop("model_version", "missing", s.tracking_uri, {"model": model, "version": version}, note=exc.what)
        )
        return RequestLineage(request_id, tuple(hops))
    tags = info.tags
    hops.append(
        Hop(
            "model_version",
            "ok",
            "MLflow registry",
            {
                "model": model,
                "version": version,
                "roles": sorted({str(r["role"]) for r in rows}),
                "aliases_now": list(info.aliases),
                "run_id": info.run_id,
                "model_sha256": tags.get("model_sha256"),
                "dataset_spec": tags.get("dataset_spec"),
                "gate_result": tags.get("gate_result"),
                "approved_by": tags.get("approved_by"),
            },
        )
    )
    hops.append(_spec_hop(s, info))
    try:
        run = run_info(s.tracking_uri, info.run_id)
        hops.append(
            Hop(
                "mlflow_run",
                "ok",
                "MLflow tracking",
                {
                    "run_id": info.run_id,
                    "status": run["status"],
                    "artifact_uri": run["artifact_uri"],
                    "params": run["params"],
                },
            )
        )
        run_tags: dict[str, str] = run["tags"]
    except Exception as exc:  # mlflow raises its own types for an unknown run
        hops.append(Hop("mlflow_run", "missing", "MLflow tracking", {"run_id": info.run_id}, note=str(exc)))
        run_tags = {}
    hops.append(_pipeline_hop(s, tags.get("pipeline_run_id"), events))
    hops.append(_data_hop(tags))
    hops.append(_feature_hop(s, tags, run_tags))
    hops.append(_code_hop(tags))
    hops.append(_image_hop(tags))
    hops.append(_decisions_hop(events, verified, reason, model, version, info.run_id))
    return RequestLineage(request_id, tuple(hops))


def _spec_hop(s: Settings, info: Any) -> Hop:
    from riskloop.data.spec import SpecSource
    from riskloop.registry.mlflow_registry import MODEL_DIR_ARTIFACT, SPEC_FILE, SPEC_SHA256_TAG, download_spec_text

    source = f"model version tags; MLflow artifact {MODEL_DIR_ARTIFACT}/{SPEC_FILE}"
    recorded = info.tags.get(SPEC_SHA256_TAG)
    facts: dict[str, Any] = {"dataset_spec": info.tags.get("dataset_spec"), "dataset_spec_sha256": recorded}
    if not recorded:
        return Hop(
            "dataset_spec",
            "missing",
            "model version tags",
            facts,
            note=f"the version records no {SPEC_SHA256_TAG} (registered before versions carried their spec)",
        )
    try:
        stored = SpecSource(download_spec_text(s.tracking_uri, info.run_id), f"{SPEC_FILE} of v{info.version}")
    except RiskloopError as exc:
        return Hop("dataset_spec", "missing", source, facts, note=exc.what)
    check = Check(
        "dataset spec sha256 recomputed from the stored spec",
        stored.sha256 == recorded,
        "equal" if stored.sha256 == recorded else f"recomputed {stored.sha256}",
    )
    if check.ok:
        try:
            spec = stored.parse()
            facts.update(
                {"name": spec.name, "require_approval": spec.require_approval, "registered_model": spec.model_name}
            )
        except RiskloopError as exc:
            return Hop(
                "dataset_spec", "mismatch", source, facts, (check, Check("the stored spec parses", False, exc.what))
            )
    return Hop("dataset_spec", _status([check]), source, facts, (check,))


def _pipeline_hop(s: Settings, pipeline_run_id: str | None, events: Sequence[AuditEvent]) -> Hop:
    if not pipeline_run_id:
        return Hop("pipeline_run", "missing", "model version tags", note="no pipeline_run_id tag")
    mine = [e for e in events if e.ids.get("pipeline_run_id") == pipeline_run_id]
    facts: dict[str, Any] = {
        "pipeline_run_id": pipeline_run_id,
        "audit_events": [{"seq": e.seq, "event": e.event, "time": e.time} for e in mine],
    }
    local = s.pipeline_root / pipeline_run_id
    if local.is_dir():
        facts["pipeline_root"] = str(local)
    if not mine:
        return Hop(
            "pipeline_run",
            "missing",
            "model version tags; audit log",
            facts,
            note="the audit log has no event of this pipeline run",
        )
    return Hop("pipeline_run", "ok", "model version tags; audit log", facts)


# ------------------------------------------------------------------------------ render
_MARK = {
    "ok": "[green]ok[/]",
    "recorded": "[yellow]recorded[/]",
    "mismatch": "[bold red]MISMATCH[/]",
    "missing": "[bold red]MISSING[/]",
}


def render_tree(lineages: Sequence[RequestLineage]) -> Any:
    """A rich Tree: one branch per hop, its key facts and its checks."""
    from rich.markup import escape
    from rich.tree import Tree

    root = Tree(f"request [bold]{escape(lineages[0].request_id)}[/]")
    for lin in lineages:
        pred = lin.hop("prediction").facts["rows"][0]
        branch = root.add(
            f"{escape(str(pred['model']))} v{escape(str(pred['model_version']))} "
            f"({'complete' if lin.complete else '[bold red]incomplete[/]'})"
        )
        for h in lin.hops:
            node = branch.add(f"{h.hop}: {_MARK[h.status]}  [dim]{escape(h.source)}[/]")
            for k, v in _headline(h).items():
                node.add(f"{k}: {escape(str(v))}")
            for c in h.checks:
                node.add(
                    f"{'[green]✓[/]' if c.ok else '[red]✗[/]'} {escape(c.check)}"
                    + (f" [dim]({escape(c.detail)})[/]" if c.detail and not c.ok else "")
                )
            if h.note:
                node.add(f"[italic]{escape(h.note)}[/]")
    return root


def _headline(h: Hop) -> dict[str, Any]:
    f = h.facts
    if h.hop == "prediction":
        lines: dict[str, Any] = {}
        for r in f["rows"]:
            lines[f"{r['role']}"] = f"score {r['score']:.4f} → {r['decision']} at {r['time']}"
            if r.get("reasons"):
                lines[f"{r['role']} reasons"] = "; ".join(
                    f"{x['text']} ({x['feature']} = {x['value']})" for x in r["reasons"]
                )
        return lines
    if h.hop == "decisions":
        return {f"#{e['seq']}": f"{e['time'][:19]} {e['event']} by {e['actor']}" for e in f.get("events", [])}
    if h.hop == "pipeline_run":
        return {
            "pipeline_run_id": f.get("pipeline_run_id"),
            "events": ", ".join(e["event"] for e in f.get("audit_events", [])),
        }
    if h.hop == "features":
        return {k: f[k] for k in ("feature_service", "registry") if k in f}
    if h.hop == "mlflow_run":
        return {k: f[k] for k in ("run_id", "status") if k in f}
    return {k: v for k, v in f.items() if isinstance(v, str | int | float) or v is None}


__all__ = [
    "Check",
    "Hop",
    "RequestLineage",
    "commit_in_history",
    "definitions_sha256",
    "feature_definitions",
    "render_tree",
    "trace_request",
    "trace_version",
]
