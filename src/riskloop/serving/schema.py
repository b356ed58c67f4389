"""The scoring request: one transaction per instance, validated strictly.

Built from the dataset spec's contract, so the request schema and the data
contract cannot drift apart. Client mistakes become one clear message per
problem naming the field (``instances[3].amount: ...``); they are never
coerced silently (``"12"`` is not an amount) and never reach the model.

V1 body::

    {"instances": [{"transaction_id": "T1", "card_id": "C000042", "merchant_id": "M00017",
                    "amount": 42.5, "currency": "EUR", "merchant_category": "grocery",
                    "channel": "pos", "country": "DE", "device_type": "terminal",
                    "distance_from_home_km": 3.2, "card_age_days": 812,
                    "event_timestamp": "2026-01-21T10:15:00Z"}],
     "explain": false}

``event_timestamp`` is optional (default: the server's clock) and must carry a
timezone. Unknown fields are rejected (``extra="forbid"``): a misspelt field
would otherwise silently fall back to a default.
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
    ValidationError,
)
from pydantic import create_model as _create_model

from riskloop.data.spec import ColumnType, DatasetSpec

ID_FIELDS = ("transaction_id", "card_id", "merchant_id")
ID_MAX_LENGTH = 64
# Fields of the contract the client does not send (labels and what the server derives).
NOT_IN_REQUEST = {"is_fraud", "chargeback_timestamp", "event_timestamp"}


class RequestError(ValueError):
    """A request that breaks the schema; ``problems`` holds one ``(field, reason)`` per problem."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.problems))


@dataclass(frozen=True)
class Transaction:
    """A validated instance, with the event time resolved."""

    fields: dict[str, Any]
    event_time: datetime

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def request_model(spec: DatasetSpec) -> type[BaseModel]:
    """The pydantic model of one instance for a dataset spec (strict, extra fields forbidden)."""
    defs: dict[str, Any] = {}
    for name, rule in spec.contract.columns.items():
        if name in NOT_IN_REQUEST:
            continue
        bounds: dict[str, Any] = {}
        if rule.min is not None:
            bounds["ge"] = rule.min
        if rule.max is not None:
            bounds["le"] = rule.max
        annotation: Any
        if rule.type is ColumnType.category and rule.allowed:
            annotation = Literal[tuple(rule.allowed)]
            defs[name] = (annotation, Field(...))
        elif rule.type is ColumnType.float:
            defs[name] = (StrictFloat | StrictInt, Field(..., **bounds))
        elif rule.type is ColumnType.integer:
            defs[name] = (StrictInt, Field(..., **bounds))
        elif rule.type is ColumnType.string:
            defs[name] = (str, Field(..., min_length=1, max_length=ID_MAX_LENGTH, pattern=r"^[\x21-\x7e]+$"))
        else:
            continue
    if "amount" in defs:  # a zero or negative amount is never a payment
        defs["amount"] = (StrictFloat | StrictInt, Field(..., gt=0, le=spec.contract.columns["amount"].max or 1e9))
    defs["event_timestamp"] = (Annotated[AwareDatetime | None, BeforeValidator(_iso_only)], Field(default=None))
    config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    model: type[BaseModel] = _create_model("TransactionRequest", __config__=config, **defs)
    return model


def _iso_only(value: Any) -> Any:
    # numbers are ambiguous (seconds? milliseconds?): only ISO-8601 text with a timezone is a time
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with a timezone, e.g. 2026-01-21T10:15:00Z")
    return value


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[Any] = Field(min_length=1)
    explain: StrictBool = False


def _loc(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_v1(
    body: Any, model: type[BaseModel], *, max_instances: int, now: datetime | None = None
) -> tuple[list[Transaction], bool]:
    """Validate a V1 body; raise :class:`RequestError` naming every bad field."""
    if not isinstance(body, Mapping):
        raise RequestError([("<body>", "must be a JSON object with an 'instances' list")])
    try:
        env = Envelope.model_validate(body)
    except ValidationError as exc:
        raise RequestError([(_loc("", e["loc"]).lstrip(".") or "<body>", e["msg"]) for e in exc.errors()]) from exc
    if len(env.instances) > max_instances:
        raise RequestError([("instances", f"{len(env.instances)} instances, at most {max_instances} per request")])
    return parse_instances(env.instances, model, now=now), env.explain


def parse_instances(
    instances: Sequence[Any], model: type[BaseModel], *, now: datetime | None = None
) -> list[Transaction]:
    clock = now or datetime.now(timezone.utc)
    out: list[Transaction] = []
    problems: list[tuple[str, str]] = []
    for i, raw in enumerate(instances):
        if not isinstance(raw, Mapping):
            problems.append((f"instances[{i}]", "must be an object with the transaction's fields"))
            continue
        try:
            inst = model.model_validate(raw)
        except ValidationError as exc:
            problems.extend((_loc(f"instances[{i}]", e["loc"]), e["msg"]) for e in exc.errors())
            continue
        fields = inst.model_dump()
        ts = fields.pop("event_timestamp") or clock
        out.append(Transaction(fields, ts.astimezone(timezone.utc)))
    if problems:
        raise RequestError(problems[:20])
    return out


def v2_to_instances(inputs: Sequence[Any]) -> list[dict[str, Any]]:
    """Columnar V2 inputs (one named tensor per field, shape [n]) to row dicts."""
    columns: dict[str, list[Any]] = {}
    n: int | None = None
    for tensor in inputs:
        data = tensor.data if hasattr(tensor, "data") else None
        name = getattr(tensor, "name", None)
        if not isinstance(name, str) or not isinstance(data, list):
            raise RequestError([("inputs", "each input needs a name and a data list")])
        if name in columns:
            raise RequestError([(f"inputs.{name}", "given twice")])
        values = [v.decode() if isinstance(v, bytes) else v for v in data]
        if n is not None and len(values) != n:
            raise RequestError([(f"inputs.{name}", f"has {len(values)} values, other inputs have {n}")])
        n = len(values)
        columns[name] = values
    if not columns or not n:
        raise RequestError([("inputs", "at least one non-empty input is required")])
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]
