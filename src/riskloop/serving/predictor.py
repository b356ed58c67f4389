"""The predictors: each scores one model version in one role, per kind of dataset spec.

:class:`FraudModel` (a Feast-backed spec) scores transactions with online features;
:class:`RawColumnModel` (``features.source: raw``, e.g. a credit application) scores
the instance's own columns. Both validate the same way (``schema.py``), log every
instance and can give each decision its reasons. They know no protocol: the ASGI app
(``app.py``) turns a V1 or V2 request into raw instances and their answers into its
response (:meth:`ScoringModel.v1_item`, :meth:`ScoringModel.v2_outputs`).

Reasons: the features that pushed an instance's score toward the positive class
most, from XGBoost's per-feature contributions (``pred_contribs``: SHAP values of
the margin), largest positive first, each with the spec's text for the feature
(``reasons:`` in the spec; default the feature name) and the instance's value. For
a credit decision they are the principal reasons an applicant turned down is
entitled to (an adverse-action notice): a raw-column model logs the top
:data:`LOGGED_REASONS` of every decision, asked for or not, so the notice can be
written from the prediction log later. A client asks for them with ``"reasons": N``
(V1 body) or ``parameters: {"reasons": N}`` (V2; answered as a ``reasons`` output,
one JSON list per instance); a client that does not ask gets the response it got before.

Errors are :class:`ServingError` s with the HTTP status they are answered with.

One fraud request, start to finish (all instances of a request are handled as one batch):

1. validate the instances (``schema.py``) — a bad field is a 400 naming it;
2. one batched Feast online lookup for all instances: batch-tier card and
   merchant rows, the on-demand context features, each card's real-time state;
3. real-time features from that state, in event-time order, so two instances of
   the same card in one request see each other exactly as they would in training;
4. ``inplace_predict`` on the assembled matrix (feature order and category codes
   from ``model.json``, one XGBoost thread);
5. push each card's new state to the PushSource, so the card's next transaction
   sees this one; log the predictions off the request path; count metrics.

Readiness is false until the model (hash-checked) and the feature store are loaded.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import xgboost as xgb

from riskloop.data.spec import DatasetSpec
from riskloop.errors import FeatureStoreError
from riskloop.features.compute import (
    CardState,
    append_to_state,
    epoch_us,
    hour_of_day,
    realtime_from_state,
)
from riskloop.model import FeatureSpec, ModelBundle
from riskloop.registry.deployment import Drill
from riskloop.serving.metrics import ModelLabels
from riskloop.serving.oip import TensorSpec
from riskloop.serving.schema import RequestError, Transaction, parse_instances, request_model

log = logging.getLogger(__name__)
TOP_CONTRIBUTIONS = 5
LOGGED_REASONS = 3
REASONS_OUTPUT = TensorSpec("reasons", "BYTES", (-1,))  # one JSON list per instance, when asked for
Reason = dict[str, Any]


class ServingError(Exception):
    """A request answered with ``status`` and ``{"error": message}`` (the message says what and how to fix)."""

    status = 500

    def __init__(self, message: str, *, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.headers = list(headers)


class InvalidRequest(ServingError):
    """The client's request breaks the schema or the protocol (400)."""

    status = 400


class NotFound(ServingError):
    """No such model, version or route (404)."""

    status = 404


class ModelNotReady(ServingError):
    """The model is not loaded or its feature store never answered (503)."""

    status = 503


class FeatureStoreUnavailable(ServingError):
    """Answered as 503: the server cannot score now; the client may retry elsewhere or later."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, headers=[(b"retry-after", b"1")])


class ScoringFailed(ServingError):
    """An error inside the server while scoring (500); the traceback is in the server log."""

    status = 500


class DrillFault(ScoringFailed):
    """A fault injected by the deployment record's ``drill`` (answered 500, counted as an error)."""


class FeatureSource(Protocol):
    """What the predictor needs from a feature store: ``riskloop.features.store.OnlineFeatures`` in production
    (Feast's online store; a dead or hung Redis is a ``FeatureStoreError`` within its socket timeout, with no
    thread of its own), :class:`NoFeatures` for overhead benchmarks."""

    def lookup(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], list[CardState], list[bool]]: ...

    def push(self, card_ids: Sequence[str], states: Sequence[CardState], at: Sequence[datetime]) -> None: ...


@dataclass
class Runtime:
    """Per-process collaborators: created in each worker, never pickled across processes."""

    features: FeatureSource
    metrics: Any = None  # riskloop.serving.metrics.ServingMetrics
    prediction_log: Any = None  # riskloop.serving.prediction_log.PredictionLog

    def close(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.close()


class NoFeatures:
    """Serve without a feature store: every card is unknown, store features are missing (NaN).

    For measuring the server's own overhead (``riskloop serve --features none``),
    never for production scoring: the model then sees no history at all.
    """

    def lookup(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], list[CardState], list[bool]]:
        return [{} for _ in rows], [CardState() for _ in rows], [False for _ in rows]

    def push(self, card_ids: Sequence[str], states: Sequence[CardState], at: Sequence[datetime]) -> None:
        return None


@dataclass(frozen=True)
class Scored:
    transaction_id: str | None  # the instance's id (the spec's id_column); a raw-column instance may have none
    score: float
    flagged: bool
    unknown_card: bool
    features: dict[str, float]
    contributions: list[dict[str, float | str]] | None
    reasons: list[Reason] | None = None


def assemble_row(
    tx: Transaction, store_feats: Mapping[str, float], realtime: Mapping[str, float], fspec: FeatureSpec
) -> np.ndarray:
    """One model row in ``model.json`` order: the same encoding as training's ``matrix``."""
    hour = hour_of_day(epoch_us(tx.event_time))
    values: dict[str, Any] = {**tx.fields, "event_hour": hour, **store_feats, **realtime}
    row = np.empty(len(fspec.names), dtype=np.float32)
    for j, name in enumerate(fspec.names):
        v = values.get(name)
        if name in fspec.categories:
            cats = fspec.categories[name]
            row[j] = cats.index(v) if v in cats else np.nan
        else:
            row[j] = np.nan if v is None else float(v)
    return row


class ScoringModel:
    """One model version in one role: validation, scoring, the answer's fields, log and metrics.

    Subclasses say how a batch of validated instances becomes scores (:meth:`score`), when the model is
    ready (:meth:`load`) and what an answer holds (:meth:`v1_item`, :data:`outputs`); :func:`scoring_model`
    picks the one a spec needs.
    """

    def __init__(
        self,
        name: str,
        *,
        bundle: ModelBundle,
        model_version: str,
        spec: DatasetSpec,
        runtime: Callable[[], Runtime],
        role: str = "champion",
        max_instances: int = 256,
        drill: Drill | None = None,
    ) -> None:
        self.name = name
        self.ready = False
        self.bundle, self.model_version, self.role = bundle, model_version, role
        self.spec, self.max_instances = spec, max_instances
        self.runtime_factory = runtime
        # a shadow scores off the request path and must not write the card's state a second time
        self.push_state = role != "shadow"
        self.drill = drill
        self._runtime: Runtime | None = None
        self.request_schema = request_model(spec)
        self._names = list(bundle.features.names)
        self.model_labels = ModelLabels(name, model_version, role)

    def __getstate__(self) -> dict[str, Any]:
        # worker processes get the model pickled: each builds its own runtime (store connections, log writer)
        state = self.__dict__.copy()
        state["_runtime"] = None
        state.pop("request_schema", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.request_schema = request_model(self.spec)

    @property
    def rt(self) -> Runtime:
        if self._runtime is None:
            self.attach(self.runtime_factory())
        assert self._runtime is not None
        return self._runtime

    def attach(self, runtime: Runtime) -> None:
        """Use ``runtime`` (one per process, shared by every model the process serves)."""
        self._runtime = runtime
        if runtime.metrics is not None:
            runtime.metrics.register_model(self.model_labels, model_sha256=self.bundle.meta.get("model_sha256", ""))

    def retire(self) -> None:
        """This process no longer serves this model in this role (``riskloop_model_info`` 0)."""
        if self._runtime is not None and self._runtime.metrics is not None:
            self._runtime.metrics.retire_model(self.model_labels, model_sha256=self.bundle.meta.get("model_sha256", ""))

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        self.ready = True
        return True

    def stop(self) -> None:
        if self._runtime is not None:
            self._runtime.close()

    def count_invalid(self, fields: Sequence[str], seconds: float) -> None:
        """A request refused before it reached validation here (its envelope or protocol), counted as ours."""
        if self.rt.metrics is not None:
            self.rt.metrics.count_validation_errors(self.model_labels, fields)
        self._count("invalid", seconds)

    def _count(self, outcome: str, seconds: float) -> None:
        if self.rt.metrics is not None:
            self.rt.metrics.observe_request(self.model_labels, outcome=outcome, seconds=seconds)

    # ------------------------------------------------------------------ predict
    def predict(
        self,
        instances: Sequence[Any],
        *,
        request_id: str,
        explain: bool = False,
        reasons: int = 0,
        started: float | None = None,
        where: str = "instances",
    ) -> list[Scored]:
        """Validate and score a request's raw instances (JSON objects, as decoded from V1 or V2).

        ``started`` (``perf_counter``) is when the server began handling the request; ``where`` names the
        instances in error messages (``instances`` for V1, ``inputs`` for V2).
        """
        t0 = time.perf_counter() if started is None else started
        if not self.ready:
            raise ModelNotReady(f"model {self.name} version {self.model_version} is not ready")
        try:
            if len(instances) > self.max_instances:
                raise RequestError([(where, f"{len(instances)} instances, at most {self.max_instances} per request")])
            txs = parse_instances(instances, self.request_schema, where=where)
        except RequestError as exc:
            if self.rt.metrics is not None:
                self.rt.metrics.count_validation_errors(
                    self.model_labels, [field.split(".")[-1] for field, _ in exc.problems]
                )
            self._count("invalid", time.perf_counter() - t0)
            raise InvalidRequest(str(exc)) from exc
        try:
            if self.drill is not None:
                _inject(self.drill)
            scored = self.score(txs, explain=explain, reasons=reasons)
        except FeatureStoreError as exc:
            self._count("unavailable", time.perf_counter() - t0)
            raise FeatureStoreUnavailable(f"feature store unavailable: {exc.what}") from exc
        except ServingError:
            self._count("error", time.perf_counter() - t0)
            raise
        except Exception as exc:
            self._count("error", time.perf_counter() - t0)
            log.exception("scoring failed")
            raise ScoringFailed(f"internal error while scoring ({type(exc).__name__}); see the server log") from exc
        latency_ms = (time.perf_counter() - t0) * 1000
        self._count("ok", latency_ms / 1000)
        self._log(request_id, txs, scored, latency_ms)
        return scored

    def score(self, txs: Sequence[Transaction], *, explain: bool = False, reasons: int = 0) -> list[Scored]:
        """Scores of a batch of validated instances, with ``reasons`` top reasons each (and more if logged)."""
        raise NotImplementedError

    def _finish(
        self,
        txs: Sequence[Transaction],
        x: np.ndarray,
        scores: np.ndarray,
        *,
        explain: bool,
        reasons: int,
        known: Sequence[bool] | None = None,
    ) -> list[Scored]:
        """Decisions, contributions and reasons of a scored batch; count the instances."""
        if self.drill is not None and self.drill.score_shift:
            scores = np.clip(scores + self.drill.score_shift, 0.0, 1.0)
        threshold = self.bundle.threshold
        flags = [bool(sc >= threshold) for sc in scores]
        n_reasons = max(reasons, self.logged_reasons)
        contrib = contributions(self.bundle, x) if explain or n_reasons else None
        if self.rt.metrics is not None:
            self.rt.metrics.observe_instances(
                self.model_labels, [float(sc) for sc in scores], ["flagged" if f else "passed" for f in flags]
            )
        finite = not np.isinf(x).any()  # the log keeps an infinite input as NaN (missing), as JSON must
        out = []
        for i, t in enumerate(txs):
            values = x[i].tolist()
            feats = dict(zip(self._names, values if finite else map(_json_float, values), strict=True))
            out.append(
                Scored(
                    t.fields.get(self.spec.id_column),
                    float(scores[i]),
                    flags[i],
                    known is not None and not known[i],
                    feats,
                    _top_by_magnitude(contrib[i], self._names) if explain and contrib is not None else None,
                    top_reasons(contrib[i], self._names, t.fields, feats, self.spec.reasons, n_reasons)
                    if n_reasons and contrib is not None
                    else None,
                )
            )
        return out

    @property
    def logged_reasons(self) -> int:
        """Reasons logged for every decision, asked for or not (0: only those a client asks for)."""
        return 0

    # ------------------------------------------------------------------ responses
    def v1_item(self, s: Scored, request_id: str, reasons: int) -> dict[str, Any]:
        """One instance's V1 prediction."""
        item: dict[str, Any] = {
            "transaction_id": s.transaction_id,
            "score": s.score,
            "fraud": s.flagged,
            "threshold": self.bundle.threshold,
            "model_version": self.model_version,
            "request_id": request_id,
            "unknown_card": s.unknown_card,
        }
        return _extras(item, s, reasons)

    def outputs(self) -> list[TensorSpec]:
        """The V2 output tensors of this model's answers (``reasons`` only when asked for)."""
        return [
            TensorSpec("score", "FP64", (-1,)),
            TensorSpec("fraud", "BOOL", (-1,)),
            TensorSpec("transaction_id", "BYTES", (-1,)),
            TensorSpec("unknown_card", "BOOL", (-1,)),
            REASONS_OUTPUT,
        ]

    def v2_columns(self, scored: Sequence[Scored]) -> dict[str, list[Any]]:
        """Each V2 output's data, by output name (without ``reasons``)."""
        return {
            "score": [s.score for s in scored],
            "fraud": [s.flagged for s in scored],
            "transaction_id": [s.transaction_id or "" for s in scored],
            "unknown_card": [s.unknown_card for s in scored],
        }

    def v2_outputs(self, scored: Sequence[Scored], reasons: int) -> list[tuple[TensorSpec, list[Any]]]:
        """The V2 answer's output tensors with their data (``reasons``: one JSON list per instance, as BYTES)."""
        columns = self.v2_columns(scored)
        if reasons:
            columns["reasons"] = [json.dumps((s.reasons or [])[:reasons]) for s in scored]
        return [(t, columns[t.name]) for t in self.outputs() if t.name in columns]

    def _log(self, request_id: str, txs: Sequence[Transaction], scored: Sequence[Scored], latency_ms: float) -> None:
        plog = self.rt.prediction_log
        if plog is None:
            return
        plog.append(
            [
                {
                    "request_id": request_id,
                    "transaction_id": s.transaction_id,
                    "time": t.event_time,
                    "model": self.name,
                    "model_version": self.model_version,
                    "role": self.role,
                    "score": s.score,
                    "decision": "flagged" if s.flagged else "passed",
                    "threshold": self.bundle.threshold,
                    "latency_ms": latency_ms,
                    "unknown_card": s.unknown_card,
                    "reasons": None if s.reasons is None else json.dumps(s.reasons),
                    "inputs": dict(t.fields),
                    "features": s.features,
                }
                for t, s in zip(txs, scored, strict=True)
            ]
        )
        if self.rt.metrics is not None:
            self.rt.metrics.sync_prediction_log(written=plog.written, dropped=plog.dropped)


class FraudModel(ScoringModel):
    """A Feast-backed spec's model: online features per card and merchant, the card's state pushed back."""

    def load(self) -> bool:
        """Ready only when a warm-up lookup through the feature store succeeds."""
        try:
            self.rt.features.lookup(
                [
                    {
                        "card_id": "__warmup__",
                        "merchant_id": "__warmup__",
                        "amount": 1.0,
                        "country": "DE",
                        "event_hour": 0.0,
                        "event_us": 0,
                    }
                ]
            )
        except Exception as exc:  # any failure of the store means not ready
            log.error("feature store not reachable: %s", exc)
            self.ready = False
            return False
        self.ready = True
        return True

    def score(self, txs: Sequence[Transaction], *, explain: bool = False, reasons: int = 0) -> list[Scored]:
        """Features, model and state update for a batch of validated transactions."""
        t0 = time.perf_counter()
        event_us = [epoch_us(t.event_time) for t in txs]
        rows = [
            {
                "card_id": t["card_id"],
                "merchant_id": t["merchant_id"],
                "amount": float(t["amount"]),
                "country": t["country"],
                "event_hour": hour_of_day(us),
                "event_us": us,
            }
            for t, us in zip(txs, event_us, strict=True)
        ]
        try:
            store_feats, states, known = self.rt.features.lookup(rows)
        except Exception as exc:  # Feast/Redis/sqlite errors of every kind
            raise FeatureStoreError(f"online lookup failed: {exc}") from exc
        # real-time features in event order; a card seen twice in this batch sees its own earlier event
        order = sorted(range(len(txs)), key=lambda i: (txs[i].event_time, i))
        current: dict[str, CardState] = {}
        realtime: list[dict[str, float]] = [{} for _ in txs]
        last_time: dict[str, datetime] = {}
        for i in order:
            card = txs[i]["card_id"]
            state = current.get(card, states[i])
            now_us = epoch_us(txs[i].event_time)
            realtime[i] = realtime_from_state(state, now_us)
            current[card] = append_to_state(state, now_us, float(txs[i]["amount"]))
            last_time[card] = txs[i].event_time
        t_feat = time.perf_counter()
        x = np.vstack(
            [assemble_row(t, f, r, self.bundle.features) for t, f, r in zip(txs, store_feats, realtime, strict=True)]
        )
        scores = self.bundle.predict(x)
        t_pred = time.perf_counter()
        try:
            if self.push_state:
                cards = list(current)
                self.rt.features.push(cards, [current[c] for c in cards], [last_time[c] for c in cards])
        except Exception as exc:
            raise FeatureStoreError(f"push of the real-time state failed: {exc}") from exc
        t_push = time.perf_counter()
        m = self.rt.metrics
        if m is not None:
            lab = self.model_labels
            m.observe_stage(lab, stage="features", seconds=t_feat - t0)
            m.observe_stage(lab, stage="predict", seconds=t_pred - t_feat)
            m.observe_stage(lab, stage="push", seconds=t_push - t_pred)
            unknown = sum(not k for k in known)
            if unknown:
                m.count_unknown_entities(lab, entity="card", count=unknown)
        return self._finish(txs, x, scores, explain=explain, reasons=reasons, known=known)


class RawColumnModel(ScoringModel):
    """A raw-column spec's model (``features.source: raw``): the instance's own columns are the features.

    No feature store, no state: ready once loaded. A category value outside the model's categories is
    scored as missing and counted per feature in ``riskloop_unseen_category_total``.
    """

    @property
    def logged_reasons(self) -> int:
        # decisions about people (credit): every decision keeps its principal reasons in the log
        return LOGGED_REASONS

    def score(self, txs: Sequence[Transaction], *, explain: bool = False, reasons: int = 0) -> list[Scored]:
        t0 = time.perf_counter()
        unseen: Counter[str] = Counter()
        x = np.vstack([raw_row(t.fields, self.bundle.features, unseen) for t in txs])
        t_feat = time.perf_counter()
        scores = self.bundle.predict(x)
        m = self.rt.metrics
        if m is not None:
            m.observe_stage(self.model_labels, stage="features", seconds=t_feat - t0)
            m.observe_stage(self.model_labels, stage="predict", seconds=time.perf_counter() - t_feat)
            if unseen:
                m.count_unseen_categories(self.model_labels, unseen)
        return self._finish(txs, x, scores, explain=explain, reasons=reasons)

    def v1_item(self, s: Scored, request_id: str, reasons: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            self.spec.id_column: s.transaction_id,
            "score": s.score,
            "flagged": s.flagged,
            "threshold": self.bundle.threshold,
            "model_version": self.model_version,
            "request_id": request_id,
        }
        return _extras(item, s, reasons)

    def outputs(self) -> list[TensorSpec]:
        return [
            TensorSpec("score", "FP64", (-1,)),
            TensorSpec("flagged", "BOOL", (-1,)),
            TensorSpec(self.spec.id_column, "BYTES", (-1,)),
            REASONS_OUTPUT,
        ]

    def v2_columns(self, scored: Sequence[Scored]) -> dict[str, list[Any]]:
        return {
            "score": [s.score for s in scored],
            "flagged": [s.flagged for s in scored],
            self.spec.id_column: [s.transaction_id or "" for s in scored],
        }


def scoring_model(spec: DatasetSpec) -> type[ScoringModel]:
    """The predictor class a spec's models are served with."""
    return RawColumnModel if spec.features.source == "raw" else FraudModel


def raw_row(fields: Mapping[str, Any], fspec: FeatureSpec, unseen: Counter[str]) -> np.ndarray:
    """One model row from an instance's own columns, in ``model.json`` order (training's ``matrix`` encoding).

    ``None`` is missing (NaN); a category value outside the model's categories is missing too, counted in ``unseen``.
    """
    row = np.empty(len(fspec.names), dtype=np.float32)
    for j, name in enumerate(fspec.names):
        v = fields.get(name)
        if v is None:
            row[j] = np.nan
        elif name in fspec.categories:
            cats = fspec.categories[name]
            if v in cats:
                row[j] = cats.index(v)
            else:
                row[j] = np.nan
                unseen[name] += 1
        else:  # a text value in a numeric feature: missing, as training's matrix coerces it
            row[j] = float(v) if isinstance(v, int | float) else np.nan
    return row


def contributions(bundle: ModelBundle, x: np.ndarray) -> np.ndarray:
    """Each feature's contribution to each row's margin (XGBoost's ``pred_contribs``, without the bias column)."""
    fs = bundle.features
    dm = xgb.DMatrix(x, feature_names=list(fs.names), feature_types=fs.types, enable_categorical=True)
    return np.asarray(bundle.booster.predict(dm, pred_contribs=True))[:, :-1]


def _top_by_magnitude(row: np.ndarray, names: Sequence[str]) -> list[dict[str, float | str]]:
    top = np.argsort(-np.abs(row))[:TOP_CONTRIBUTIONS]
    return [{"feature": names[j], "contribution": round(float(row[j]), 6)} for j in top]


def top_reasons(
    row: np.ndarray,
    names: Sequence[str],
    fields: Mapping[str, Any],
    features: Mapping[str, float],
    texts: Mapping[str, str],
    n: int,
) -> list[Reason]:
    """The ``n`` features that pushed this score toward the positive class most (positive contributions only,
    largest first): each with its reason text (``texts``, default the feature name) and the instance's value
    (the request's own value; a derived feature's model input otherwise; ``None`` when missing)."""
    out: list[Reason] = []
    for j in np.argsort(-row, kind="stable")[:n]:
        c = float(row[j])
        if c <= 0:
            break
        name = names[j]
        value = fields[name] if name in fields else features.get(name)
        if isinstance(value, float) and math.isnan(value):
            value = None
        out.append({"feature": name, "text": texts.get(name, name), "value": value, "contribution": round(c, 6)})
    return out


def _extras(item: dict[str, Any], s: Scored, reasons: int) -> dict[str, Any]:
    if s.contributions is not None:
        item["explanation"] = s.contributions
    if reasons and s.reasons is not None:
        item["reasons"] = s.reasons[:reasons]
    return item


def _inject(drill: Drill) -> None:
    # added latency is the router's (asyncio.sleep on the request path, a sleep on the shadow's thread)
    if drill.error_rate and random.random() < drill.error_rate:
        raise DrillFault(f"drill: injected error (error_rate {drill.error_rate:g})")


def _json_float(v: float) -> float:
    return v if math.isfinite(v) else math.nan


__all__ = [
    "DrillFault",
    "FeatureSource",
    "FeatureStoreUnavailable",
    "FraudModel",
    "InvalidRequest",
    "ModelNotReady",
    "NotFound",
    "RawColumnModel",
    "Scored",
    "ScoringFailed",
    "ScoringModel",
    "ServingError",
    "assemble_row",
    "contributions",
    "raw_row",
    "scoring_model",
    "top_reasons",
]
