"""Audit anchors kept in the model registry, so that truncating or rewriting the log's end is detected.

The hash chain cannot see a log cut after line *n*, nor a consistent rewrite of
its tail (see :mod:`riskloop.audit.log`). An anchor ``(seq, hash)`` recorded
outside the log closes that gap up to the anchored line. Two anchors live on
model versions as tags:

- ``audit_head_seq`` / ``audit_head_hash``: the log's head when the version was
  registered (set by the register step, never changed);
- ``audit_anchor_seq`` / ``audit_anchor_hash``: the latest lifecycle event about
  the version (its registration, approval or refusal, deployment, canary step,
  promotion, rollback), overwritten by each.

So after any lifecycle event the log's end is anchored: deleting or editing the
last lines is detected. Events appended after the last anchored one (e.g. a
drift check) are covered by the chain alone; :func:`unanchored_tail` says how
many.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from riskloop.audit.log import AuditEvent
from riskloop.errors import RiskloopError
from riskloop.settings import Settings

ANCHOR_SEQ_TAG, ANCHOR_HASH_TAG = "audit_anchor_seq", "audit_anchor_hash"


def anchor_event(s: Settings, model_name: str, version: str, event: AuditEvent) -> None:
    """Record ``event`` as the anchor on ``version`` (best effort: the event is already durable)."""
    from riskloop.registry.mlflow_registry import set_version_tags

    set_version_tags(s.tracking_uri, model_name, version, {ANCHOR_SEQ_TAG: str(event.seq), ANCHOR_HASH_TAG: event.hash})


def collect_anchors(s: Settings) -> list[tuple[int, str]]:
    """Every anchor on every version of every registered model (empty without a registry)."""
    from riskloop.registry.mlflow_registry import AUDIT_HASH_TAG, AUDIT_SEQ_TAG, list_versions, registered_models

    if s.mlflow.tracking_uri is None and not (s.root / "mlflow.db").exists():
        return []
    anchors: list[tuple[int, str]] = []
    try:
        names = registered_models(s.tracking_uri)
    except Exception:  # mlflow raises its own types for a registry that was never created
        return []
    for name in names:
        with contextlib.suppress(RiskloopError):
            for v in list_versions(s.tracking_uri, name):
                for seq_tag, hash_tag in ((AUDIT_SEQ_TAG, AUDIT_HASH_TAG), (ANCHOR_SEQ_TAG, ANCHOR_HASH_TAG)):
                    if seq_tag in v.tags and hash_tag in v.tags:
                        anchors.append((int(v.tags[seq_tag]), v.tags[hash_tag]))
    return sorted(set(anchors))


def unanchored_tail(events_count: int, anchors: Sequence[tuple[int, str]]) -> int:
    """How many of the last lines lie after the newest anchor (covered by the chain alone)."""
    newest = max((seq for seq, _ in anchors), default=-1)
    return max(events_count - 1 - newest, 0)


__all__ = ["ANCHOR_HASH_TAG", "ANCHOR_SEQ_TAG", "anchor_event", "collect_anchors", "unanchored_tail"]
