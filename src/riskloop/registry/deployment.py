"""The local desired state of a served model: what the InferenceService spec is on the cluster.

A deployment record (``<state>/deployments/<model>.json``) says which version is
champion, which is challenger, how traffic is split and in which mode. The
delivery steps write it (also from kfp.local); a running ``riskloop serve``
watches it and switches models and split without failing a request in flight
(``serving/router.py``). Each write bumps ``revision`` under a file lock and
replaces the file atomically, so a reader sees the old record or the new one,
never half of one.

``drill`` injects faults into the challenger only (errors, score shift, added
latency), the way a service mesh's fault injection does, to rehearse that canary
analysis rolls a bad challenger back. It is part of the record, so it is visible
and audited, never a hidden switch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from riskloop.errors import ConfigError

Mode = Literal["canary", "shadow"]


class Drill(BaseModel):
    """Faults injected into the challenger's answers, for rollback drills."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of requests answered 500.")
    score_shift: float = Field(default=0.0, ge=-1.0, le=1.0, description="Added to every score, clipped to [0, 1].")
    added_latency_ms: float = Field(default=0.0, ge=0.0, le=10_000.0, description="Sleep before answering.")


class Deployment(BaseModel):
    """Desired state of one served model."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = Field(min_length=1)
    champion_version: str = Field(min_length=1)
    challenger_version: str | None = None
    canary_percent: int = Field(default=0, ge=0, le=100)
    mode: Mode = "canary"
    sticky: bool = Field(
        default=False,
        description=(
            "Route by a hash of card_id, so a card stays on one model. Off by default: fraud comes in bursts "
            "per card, so a card-sticky split gives the two models different populations and biases the "
            "comparison of alert rates and score distributions; per-request assignment (what Knative's "
            "revision split does) keeps the two samples comparable."
        ),
    )
    drill: Drill | None = None
    revision: int = Field(default=0, ge=0)
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reason: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Deployment:
        if self.challenger_version is None and (self.canary_percent or self.mode == "shadow" or self.drill):
            raise ValueError("canary_percent, shadow mode and drill need a challenger_version")
        if self.challenger_version is not None and self.challenger_version == self.champion_version:
            raise ValueError(f"champion and challenger are both version {self.champion_version}")
        if self.mode == "shadow" and self.canary_percent:
            raise ValueError("shadow mode sends no live traffic to the challenger: canary_percent must be 0")
        return self


def deployment_path(root: Path, model_name: str) -> Path:
    return root / "deployments" / f"{model_name}.json"


def read_deployment(path: Path) -> Deployment | None:
    """The record at ``path``, or ``None`` if there is none yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return Deployment.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(
            f"deployment record is not valid: {exc}",
            where=str(path),
            fix="fix or delete the file; `riskloop canary status` shows what it should hold",
        ) from exc


def update_deployment(path: Path, change: Callable[[Deployment | None], Deployment]) -> Deployment:
    """Read, change and write the record under a lock; the written record's revision is the old one + 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=30):
        current = read_deployment(path)
        wanted = change(current)
        new = Deployment.model_validate(
            {
                **wanted.model_dump(),
                "revision": (current.revision if current else 0) + 1,
                "updated_at": datetime.now(UTC),
            }
        )
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(new.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
    return new


__all__ = ["Deployment", "Drill", "Mode", "deployment_path", "read_deployment", "update_deployment"]
