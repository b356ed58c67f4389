"""Canonical JSON: the one serialisation that is hashed and stored, and what may go into it.

An event's hash is only reproducible if its fields serialise to the same bytes
everywhere, so :func:`canonical_json` fixes the form, and :func:`json_object`
turns what callers hand to an append into plain JSON values first, refusing
what any conversion would have to guess at.
"""

from __future__ import annotations

import enum
import json
import math
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import numpy as np

from riskloop.errors import ConfigError


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and written: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_text(value: str, where: str) -> None:
    """Refuse a string that cannot be written as UTF-8 (lone surrogates), naming ``where``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"audit {where} is not encodable as UTF-8 ({exc.reason})",
            fix="remove lone surrogate characters from the value",
        ) from exc


def json_object(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``value`` as a plain JSON object (see :func:`json_value`)."""
    converted = json_value(value, where)
    assert isinstance(converted, dict)
    return converted


def json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, converting the usual suspects, else a clear error.

    numpy scalars and arrays, datetimes, dates, times, paths, UUIDs and enums are
    converted (datetimes to ISO-8601 strings, paths to strings); NaN, infinity,
    Decimals, sets and other objects are refused because any conversion would
    lose or invent information.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return json_value(value.value, where)
    if isinstance(value, str):
        check_text(value, where)
        return str(value)
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value))
    if isinstance(value, np.ndarray):
        return json_value(value.tolist(), where)
    if isinstance(value, np.generic):
        return json_value(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(
                f"audit {where} is {value}, which JSON cannot represent",
                fix="record None, or the reason the value is undefined as a string",
            )
        return float(value)
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, PurePath | uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"audit {where} has the non-string key {key!r}",
                    fix="use string keys in audit details",
                )
            check_text(key, f"{where} key {key!r}")
            out[key] = json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Decimal):
        hint = "convert it to float, or to str to keep every digit"
    elif isinstance(value, set | frozenset):
        hint = "pass a sorted list (a set has no stable order to hash)"
    else:
        hint = "convert it to a JSON value (str, number, bool, None, list, dict)"
    raise ConfigError(
        f"audit {where} is a {type(value).__name__}, which is not JSON-serialisable",
        fix=hint,
    )
