"""The scoring request: one instance per entry (a transaction, a loan application), validated strictly.

Built from the dataset spec's contract, so the request schema and the data
contract cannot drift apart. Client mistakes become one clear message per
problem naming the field (``instances[3].amount: ...``); they are never
coerced silently (``"12"`` is not an amount) and never reach the model.

V1 body (the fraud spec)::

    {"instances": [{"transaction_id": "T1", "card_id": "C000042", "merchant_id": "M00017",
                    "amount": 42.5, "currency": "EUR", "merchant_category": "grocery",
                    "channel": "pos", "country": "DE", "device_type": "terminal",
                    "distance_from_home_km": 3.2, "card_age_days": 812,
                    "event_timestamp": "2026-01-21T10:15:00Z"}],
     "explain": false, "reasons": 0}

The fields of an instance, per kind of spec:

* a Feast-backed spec (``features.source: feast``): every contract column is
  required, a category must be one of its ``allowed`` values (the online
  features are looked up by the ids);
* a raw-column spec (``features.source: raw``): each model feature is required
  unless its column is ``nullable`` (then ``null`` or left out means missing);
  the other contract columns (the ``id_column``, protected attributes, ...) may
  be sent and are logged, never fed to the model. A category value the model
  never saw is scored as missing, as XGBoost scores any missing value, and
  counted (``riskloop_unseen_category_total``): a new product code must not
  make the server refuse every application that carries it.

Never in a request: the label column and when it became known (a request that
carries the outcome is a 400 naming it). The spec's ``timestamp_column`` is the
instance's event time, optional (default: the server's clock), ISO-8601 text
with a timezone. Unknown fields are rejected (``extra="forbid"``): a misspelt
field would otherwise silently fall back to a default.

``explain: true`` adds each instance's top contributions by magnitude;
``reasons: N`` (0 to :data:`MAX_REASONS`) its top N reasons, the features that
pushed its score toward the positive class most (``riskloop.serving.predictor``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic import create_model as _create_model

from riskloop.data.spec import ColumnType, DatasetSpec

ID_MAX_LENGTH = 64
TEXT_MAX_LENGTH = 256
MAX_REASONS = 10
ID_PATTERN = r"[\x21-\x7e]{1,64}"  # printable ASCII, no space: an id a log line and a URL can carry as is
_ID_PATTERN = r"^[\x21-\x7e]+$"


class RequestError(ValueError):
    """A request that breaks the schema; ``problems`` holds one ``(field, reason)`` per problem."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.problems))


@dataclass(frozen=True)
class Transaction:
    """A validated instance, with the event time resolved (the name stays from the fraud spec: any instance)."""

    fields: dict[str, Any]
    event_time: datetime

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


@dataclass(frozen=True)
class RequestSchema:
    """One instance's pydantic model for a spec, and what the schema knows beyond it.

    ``labels``: fields that are outcomes, refused by name; ``time_field``: the
    optional event time (popped from the fields).
    """

    model: type[BaseModel]
    labels: tuple[str, ...]
    time_field: str | None


def request_model(spec: DatasetSpec) -> RequestSchema:
    """The request schema of one instance for a dataset spec (strict, extra fields forbidden)."""
    raw = spec.features.source == "raw"
    features = set(spec.features.raw_columns)
    labels = tuple(c for c in (spec.label.column, spec.label.available_at) if c)
    ids = {spec.id_column, *spec.entity_columns}
    time_field = spec.timestamp_column
    defs: dict[str, Any] = {}
    for name, rule in spec.contract.columns.items():
        if name in labels or name == time_field:
            continue
        bounds: dict[str, Any] = {}
        if rule.min is not None:
            bounds["ge"] = rule.min
        if rule.max is not None:
            bounds["le"] = rule.max
        annotation: Any
        if rule.type is ColumnType.category and rule.allowed:
            # raw: any text; a value the model never saw is scored as missing and counted
            annotation = (
                Annotated[StrictStr, Field(max_length=TEXT_MAX_LENGTH)] if raw else Literal[tuple(rule.allowed)]
            )
        elif rule.type is ColumnType.float:
            annotation = Annotated[StrictFloat | StrictInt, Field(**bounds)]
        elif rule.type is ColumnType.integer:
            annotation = Annotated[StrictInt, Field(**bounds)]
        elif rule.type is ColumnType.string and (name in ids or not raw):
            annotation = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=_ID_PATTERN)]
        elif rule.type is ColumnType.string:
            annotation = Annotated[StrictStr, Field(max_length=TEXT_MAX_LENGTH)]
        else:
            continue
        if not raw or (name in features and not rule.nullable):  # a Feast spec needs every column
            defs[name] = (annotation, Field(...))
        else:  # a nullable feature, or a column the model does not read: optional
            defs[name] = (annotation | None, Field(default=None))
    if not raw and "amount" in defs:  # a zero or negative amount is never a payment
        defs["amount"] = (StrictFloat | StrictInt, Field(..., gt=0, le=spec.contract.columns["amount"].max or 1e9))
    if time_field:
        defs[time_field] = (Annotated[AwareDatetime | None, BeforeValidator(_iso_only)], Field(default=None))
    config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    model: type[BaseModel] = _create_model("InstanceRequest", __config__=config, **defs)
    return RequestSchema(model, labels, time_field)


def _iso_only(value: Any) -> Any:
    # numbers are ambiguous (seconds? milliseconds?): only ISO-8601 text with a timezone is a time
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with a timezone, e.g. 2026-01-21T10:15:00Z")
    return value


class Envelope(BaseModel):
    """A V1 body's envelope: its raw instances and what the client asked for besides the scores."""

    model_config = ConfigDict(extra="forbid")
    instances: list[Any] = Field(min_length=1)
    explain: StrictBool = False
    reasons: StrictInt = Field(default=0, ge=0, le=MAX_REASONS)


def _field_problems(prefix: str, exc: ValidationError) -> list[tuple[str, str]]:
    """One problem per field: a union type (a float or an int) fails once per branch, said once here."""
    seen: dict[str, str] = {}
    for e in exc.errors():
        loc = e["loc"][:1] if e["loc"] else e["loc"]
        seen.setdefault(_loc(prefix, loc), e["msg"])
    return list(seen.items())


def _loc(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_envelope(body: Any) -> Envelope:
    """Validate a V1 body's envelope (its instances are validated per model: :func:`parse_instances`)."""
    if not isinstance(body, Mapping):
        raise RequestError([("<body>", "must be a JSON object with an 'instances' list")])
    try:
        env = Envelope.model_validate(body)
    except ValidationError as exc:
        raise RequestError([(_loc("", e["loc"]).lstrip(".") or "<body>", e["msg"]) for e in exc.errors()]) from exc
    return env


def reasons_parameter(parameters: Any) -> int:
    """The number of reasons a V2 request asks for in its ``parameters`` (``{"reasons": N}``), default 0."""
    value = parameters.get("reasons", 0) if isinstance(parameters, Mapping) else 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REASONS:
        raise RequestError([("parameters.reasons", f"must be an integer from 0 to {MAX_REASONS}, got {value!r}")])
    return value


def parse_instances(
    instances: Sequence[Any], schema: RequestSchema, *, now: datetime | None = None, where: str = "instances"
) -> list[Transaction]:
    """Validate each raw instance; ``where`` names them in messages (``instances`` in V1, ``inputs`` in V2)."""
    clock = now or datetime.now(timezone.utc)
    out: list[Transaction] = []
    problems: list[tuple[str, str]] = []
    for i, raw in enumerate(instances):
        if not isinstance(raw, Mapping):
            problems.append((f"{where}[{i}]", "must be an object with the instance's fields"))
            continue
        outcomes = [k for k in schema.labels if k in raw]
        problems.extend(
            (f"{where}[{i}].{k}", "is the label (the outcome the model predicts), never an input: leave it out")
            for k in outcomes
        )
        try:
            inst = schema.model.model_validate({k: v for k, v in raw.items() if k not in outcomes})
        except ValidationError as exc:
            problems.extend(_field_problems(f"{where}[{i}]", exc))
            continue
        if outcomes:
            continue
        fields = dict(inst.__dict__)  # the validated fields (flat, plain values): model_dump's copy, cheaper
        ts = (fields.pop(schema.time_field) if schema.time_field else None) or clock
        out.append(Transaction(fields, ts.astimezone(timezone.utc)))
    if problems:
        raise RequestError(problems[:20])
    return out
