"""The Open Inference Protocol (KServe V2, Triton HTTP/REST) codec: request bodies in, response bodies out.

A pure module (no I/O) on the hot path of the thin ASGI predictor: it turns the
bytes of ``POST /v2/models/<name>/infer`` into python values per input and the
model's outputs back into bytes, so the server itself never touches the wire
format. Protocol: https://github.com/kserve/open-inference-protocol (REST) and
Triton's binary tensor data extension (``extension_binary_data.md``).

Why so strict: a request the codec lets through reaches the model's schema as
values of the declared type, or not at all. Every problem is a
:class:`ProtocolError` (400) naming the input or parameter, what was wrong and
how to fix it; a float sent for an ``INT64`` input is an error, never truncated.

Wire details that differ from the happy path of the spec:

* The body is JSON unless the ``Inference-Header-Content-Length`` header is
  present, whatever its content type: tritonclient sends JSON-only requests
  with ``application/octet-stream``, which KServe's server took for binary.
* Unknown top-level keys (KServe's client sends ``model_name``) and unknown
  per-tensor keys are ignored, as Triton ignores them; unsupported features
  that would change the answer (shared memory, the classification extension)
  are refused by name rather than ignored.
* JSON cannot carry NaN or infinity: an FP output holding one is written as
  ``null`` (tritonclient reads it back as NaN); binary outputs carry it exactly.
  Binary FP inputs may carry NaN/inf: the model's request schema refuses them.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import orjson

from riskloop.data.spec import ColumnType, DatasetSpec

DATATYPES: frozenset[str] = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)
_DATATYPE_LIST = ", ".join(sorted(DATATYPES))

# little-endian wire dtypes (BOOL travels as one byte 0/1, BYTES as length-prefixed strings)
_WIRE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("u1"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_INT_RANGE: dict[str, tuple[int, int]] = {
    t: (int(np.iinfo(_WIRE[t]).min), int(np.iinfo(_WIRE[t]).max)) for t in _WIRE if t[0] in "IU"
}
_FLOATS = frozenset({"FP16", "FP32", "FP64"})
_HEADER = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,19}")
_LENGTH = struct.Struct("<I")


class ProtocolError(Exception):
    """A 400-class problem with a request: ``message`` names the input or parameter, says what and how to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model metadata; ``-1`` in ``shape`` means any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name!r}: datatype {self.datatype!r} is not one of {_DATATYPE_LIST}")
        if any(d < -1 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: shape {list(self.shape)} has a dimension below -1")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` already resolves the request-level default."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: one flat (row-major) list of python values per input, in request order."""

    id: str | None
    inputs: dict[str, list[Any]]
    parameters: dict[str, Any]
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool


# ---------------------------------------------------------------------------------------------- requests


class _Input(NamedTuple):  # a tuple, not a frozen dataclass: built once per input on the hot path
    position: int
    name: str
    datatype: str
    shape: tuple[int, ...]
    n_values: int
    data: Any  # the JSON data, or None when binary
    binary_size: int | None


def parse_infer_request(body: bytes, header_length: str | None, inputs: Mapping[str, TensorSpec]) -> InferRequest:
    """Decode an inference request body and check its inputs against the model metadata ``inputs``.

    ``header_length``: the raw ``Inference-Header-Content-Length`` header (``None`` when absent). Required
    inputs are not checked here: the model's request schema does that, with its own messages.
    """
    json_end = _json_length(body, header_length)
    view = memoryview(body)
    try:
        doc = orjson.loads(view[:json_end])
    except orjson.JSONDecodeError as exc:
        doc = _json_with_nan(bytes(view[:json_end]))
        if doc is None:
            where = f"the first {json_end} bytes (the {_HEADER} header)" if header_length is not None else "the body"
            raise ProtocolError(
                f"<body>: {where} is not valid JSON ({exc}); send the inference request as JSON"
            ) from exc
    if not isinstance(doc, dict):
        raise ProtocolError('<body>: must be a JSON object with an "inputs" list, e.g. {"inputs": [...]}')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id: must be a string, got {_show(request_id)}")
    parameters, binary_output = _request_parameters(doc.get("parameters"))
    tensors = _structure(doc.get("inputs"), has_header=header_length is not None)
    outputs = _requested_outputs(doc.get("outputs"), binary_output)

    binary_total = sum(t.binary_size or 0 for t in tensors)
    if binary_total != len(body) - json_end:
        raise ProtocolError(
            f"<body>: the inputs' parameters.binary_data_size add up to {binary_total} bytes but "
            f"{len(body) - json_end} bytes follow the {json_end}-byte JSON header ({_HEADER}); "
            "send each input's binary data, in input order, right after the JSON"
        )
    _check_metadata(tensors, inputs)

    decoded: dict[str, list[Any]] = {}
    offset = json_end
    for tensor in tensors:
        if tensor.binary_size is None:
            decoded[tensor.name] = _decode_json(tensor)
        else:
            end = offset + tensor.binary_size
            decoded[tensor.name] = _decode_binary(tensor, view[offset:end])
            offset = end
    return InferRequest(request_id, decoded, parameters, outputs, binary_output)


def _json_with_nan(text: bytes) -> Any:
    """The body read by Python's json, which takes the ``NaN`` / ``Infinity`` literals that strict JSON (and
    orjson) refuse but real clients send: tritonclient writes a NaN in an FP tensor as ``NaN``. ``None`` when
    it is not JSON either. Only the slow path: a body orjson reads never comes here."""
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _json_length(body: bytes, header_length: str | None) -> int:
    if header_length is None:
        return len(body)
    text = header_length.strip()
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= len(body):
        raise ProtocolError(
            f"{_HEADER}: {header_length!r} is not a length within the {len(body)}-byte body; give the byte length "
            "of the JSON part (a positive integer), or leave the header out when the body is only JSON"
        )
    return int(text)


def _request_parameters(raw: Any) -> tuple[dict[str, Any], bool]:
    if raw is None:
        return {}, False
    if not isinstance(raw, dict):
        raise ProtocolError(f'parameters: must be a JSON object such as {{"reasons": 3}}, got {_show(raw)}')
    binary = raw.get("binary_data_output", False)
    if not isinstance(binary, bool):
        raise ProtocolError(f"parameters.binary_data_output: must be true or false, got {_show(binary)}")
    return {k: v for k, v in raw.items() if k != "binary_data_output"}, binary


def _structure(raw: Any, *, has_header: bool) -> list[_Input]:
    if not isinstance(raw, list) or not raw:
        raise ProtocolError(
            "inputs: must be a non-empty list of tensors, one per field, e.g. "
            '[{"name": "amount", "datatype": "FP64", "shape": [1], "data": [42.5]}]'
        )
    out: list[_Input] = []
    for i, item in enumerate(raw):
        if type(item) is not dict:
            raise ProtocolError(
                f"inputs[{i}]: must be an object with name, datatype, shape and data, got {_show(item)}"
            )
        name = item.get("name")
        if type(name) is not str or not name:
            raise ProtocolError(f"inputs[{i}].name: must be the input's name (a non-empty string), got {_show(name)}")
        datatype = item.get("datatype")
        if type(datatype) is not str or datatype not in DATATYPES:
            raise ProtocolError(
                f"inputs[{i}] ({name}).datatype: {_show(datatype)} is not a datatype; use one of {_DATATYPE_LIST}"
            )
        shape = item.get("shape")
        # type(...) is int: a bool is an int subclass, not a dimension; the first test is the usual [n]
        if not (type(shape) is list and len(shape) == 1 and type(shape[0]) is int and shape[0] >= 0) and (
            type(shape) is not list or (shape and (set(map(type, shape)) != {int} or min(shape) < 0))
        ):
            raise ProtocolError(
                f"inputs[{i}] ({name}).shape: must be a list of non-negative integers such as [3], got {_show(shape)}"
            )
        data = item.get("data")
        params = item.get("parameters")
        size = None
        if params is not None:
            size = _input_parameters(params, f"inputs[{i}] ({name})", has_header, "data" in item)
        if size is None and data is None:
            raise ProtocolError(
                f"inputs[{i}] ({name}).data: missing; send the values as a JSON list in data, or as binary data "
                f"with parameters.binary_data_size and the {_HEADER} header"
            )
        out.append(_Input(i, name, datatype, tuple(shape), math.prod(shape), data, size))
    return out


def _input_parameters(params: Any, at: str, has_header: bool, has_data: bool) -> int | None:
    """An input's ``binary_data_size`` (None: JSON data), after refusing what this server does not support."""
    if type(params) is not dict:
        raise ProtocolError(f"{at}.parameters: must be a JSON object, got {_show(params)}")
    if "shared_memory_region" in params:
        raise ProtocolError(f"{at}.parameters.shared_memory_region: shared memory is not supported; send the data")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise ProtocolError(
            f"{at}.parameters.binary_data_size: must be a byte count (an integer >= 0), got {_show(size)}"
        )
    if not has_header:
        raise ProtocolError(
            f"{at}.parameters.binary_data_size: binary data needs the {_HEADER} request header (the byte "
            "length of the JSON part); add it, or send the data as JSON in data"
        )
    if has_data:
        raise ProtocolError(f"{at}: has both data and parameters.binary_data_size; send one of them")
    return size


def _requested_outputs(raw: Any, binary_output: bool) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProtocolError(f'outputs: must be a list such as [{{"name": "score"}}], got {_show(raw)}')
    if not raw:  # tritonclient and KServe send no "outputs" for "all of them"; read an empty list the same way
        return None
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        at = f"outputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f'{at}: must be an object with the output\'s name, e.g. {{"name": "score"}}')
        name: str = item["name"]
        at = f"outputs[{i}] ({name})"
        if name in seen:
            raise ProtocolError(f"{at}: requested twice; name each output once")
        seen.add(name)
        params = item.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError(f"{at}.parameters: must be a JSON object, got {_show(params)}")
        params = params or {}
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in params:
                raise ProtocolError(f"{at}.parameters.{unsupported}: not supported by this server; leave it out")
        binary = params.get("binary_data", binary_output)
        if not isinstance(binary, bool):
            raise ProtocolError(f"{at}.parameters.binary_data: must be true or false, got {_show(binary)}")
        out.append(RequestedOutput(name, binary))
    return tuple(out)


def _check_metadata(tensors: Sequence[_Input], inputs: Mapping[str, TensorSpec]) -> None:
    seen: set[str] = set()
    for t in tensors:
        spec = inputs.get(t.name)
        if spec is not None and t.name not in seen and t.datatype == spec.datatype and _fits(t.shape, spec.shape):
            seen.add(t.name)
            continue
        at = f"inputs.{t.name}"
        if spec is None:
            raise ProtocolError(
                f"{at}: not an input of this model; its inputs are: {', '.join(inputs) or '(none)'} "
                "(the model metadata, GET /v2/models/<name>, lists them)"
            )
        if t.name in seen:
            raise ProtocolError(f"{at}: given twice (inputs[{t.position}] repeats it); send each input once")
        seen.add(t.name)
        if t.datatype != spec.datatype:
            raise ProtocolError(
                f"{at}: datatype {t.datatype}, the model's metadata says {spec.datatype}; send {spec.datatype}"
            )
        if not _fits(t.shape, spec.shape):
            raise ProtocolError(
                f"{at}: shape {list(t.shape)} does not fit the model's metadata shape {list(spec.shape)} "
                "(-1 is any size); for one value per instance send [number of instances]"
            )


def _fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if len(shape) != len(expected):
        return False
    if len(expected) == 1:  # the usual case, one value per instance: no generator
        return expected[0] == -1 or expected[0] == shape[0]
    return all(want in (-1, got) for got, want in zip(shape, expected, strict=True))


def _decode_json(t: _Input) -> list[Any]:
    at = f"inputs.{t.name}.data"
    flat, types = _flatten(t.data, at)
    if len(flat) != t.n_values:
        raise ProtocolError(f"{at}: {len(flat)} values, but shape {list(t.shape)} needs {t.n_values}; make them agree")
    if not flat:
        return []
    dt = t.datatype
    if dt == "BYTES":
        if types != {str}:
            raise ProtocolError(f"{at}: BYTES values must be JSON strings, got {_kinds(types)}")
        return flat
    if dt == "BOOL":
        if types != {bool}:
            raise ProtocolError(f"{at}: BOOL values must be true or false, got {_kinds(types)}")
        return flat
    if dt in _FLOATS:
        if not types <= {int, float}:
            raise ProtocolError(f"{at}: {dt} values must be JSON numbers, got {_kinds(types)}")
        if dt == "FP64" and types == {float}:
            return flat  # the common case: nothing to convert
        try:
            with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
                values = np.asarray(flat, dtype=_WIRE[dt])
        except OverflowError as exc:
            raise ProtocolError(f"{at}: a value is out of range for {dt}; send smaller numbers") from exc
        if not np.isfinite(values).all():
            raise ProtocolError(f"{at}: a value is out of range for {dt} (it would become infinity)")
        result: list[Any] = values.tolist()
        return result
    if types != {int}:
        raise ProtocolError(
            f"{at}: {dt} values must be JSON integers, got {_kinds(types)} "
            "(a number beyond 64 bits reads as a float; a float is never truncated)"
        )
    low, high = _INT_RANGE[dt]
    smallest, largest = min(flat), max(flat)
    if smallest < low or largest > high:
        bad = smallest if smallest < low else largest
        raise ProtocolError(f"{at}: {bad} is out of range for {dt} ({low} to {high})")
    return flat


def _flatten(data: Any, at: str) -> tuple[list[Any], set[type]]:
    if not isinstance(data, list):
        raise ProtocolError(f"{at}: must be a JSON list of values (flat or nested row-major), got {_show(data)}")
    flat: list[Any] = data
    while True:
        types = set(map(type, flat))
        if list not in types:
            return flat, types
        if types != {list}:
            raise ProtocolError(f"{at}: mixes nested lists and values; send a flat list or evenly nested lists")
        flat = list(chain.from_iterable(flat))


def _decode_binary(t: _Input, buf: memoryview) -> list[Any]:
    at = f"inputs.{t.name}"
    if t.datatype == "BYTES":
        return _decode_strings(buf, t.n_values, at)
    wire = _WIRE[t.datatype]
    if len(buf) != t.n_values * wire.itemsize:
        raise ProtocolError(
            f"{at}.parameters.binary_data_size: {len(buf)} bytes, but shape {list(t.shape)} of {t.datatype} "
            f"needs {t.n_values * wire.itemsize} ({wire.itemsize} per value); make them agree"
        )
    values = np.frombuffer(buf, dtype=wire)
    if t.datatype == "BOOL":
        if values.size and values.max() > 1:
            raise ProtocolError(f"{at}: BOOL binary data must be bytes 0 (false) or 1 (true)")
        values = values.astype(bool)
    result: list[Any] = values.tolist()
    return result


def _decode_strings(buf: memoryview, count: int, at: str) -> list[Any]:
    out: list[str] = []
    pos, end = 0, len(buf)
    try:
        while pos < end:
            if pos + 4 > end or len(out) >= count:
                break
            (size,) = _LENGTH.unpack_from(buf, pos)
            pos += 4
            if pos + size > end:
                pos = end + 1
                break
            out.append(str(buf[pos : pos + size], "utf-8"))
            pos += size
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"{at}: element {len(out)} of the BYTES binary data is not UTF-8 text ({exc.reason}); send UTF-8"
        ) from exc
    if pos != end or len(out) != count:
        raise ProtocolError(
            f"{at}: the BYTES binary data does not hold exactly {count} elements of a 4-byte little-endian length "
            "and that many bytes each; check parameters.binary_data_size and the shape"
        )
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kinds(types: set[type]) -> str:
    names = {bool: "true/false", int: "integers", float: "floats", str: "strings", dict: "objects"}
    return ", ".join(sorted(names.get(t, "null" if t is type(None) else t.__name__) for t in types))


# --------------------------------------------------------------------------------------------- responses


def check_requested_outputs(request: InferRequest, outputs: Sequence[TensorSpec]) -> None:
    """Refuse a request for an output the model does not have, before running the model for it."""
    if request.outputs is None:
        return
    known = {o.name for o in outputs}
    for requested in request.outputs:
        if requested.name not in known:
            raise ProtocolError(
                f"outputs.{requested.name}: not an output of this model; its outputs are: "
                f"{', '.join(o.name for o in outputs) or '(none)'}"
            )


def encode_infer_response(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
    outputs: Sequence[tuple[TensorSpec, Sequence[Any]]],
    request: InferRequest,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The response body and its headers (ASGI byte pairs) for a model's 1-D outputs.

    Only the outputs the request named, in its order (all, in the given order, when it named none); each
    as binary or JSON per its ``binary_data``, else the request's ``binary_data_output``. A requested output
    the model lacks is a :class:`ProtocolError`; data that does not fit its datatype is the server's bug
    (``ValueError``).
    """
    check_requested_outputs(request, [spec for spec, _ in outputs])
    chosen: list[tuple[TensorSpec, Sequence[Any], bool]]
    if request.outputs is None:
        chosen = [(spec, data, request.binary_output) for spec, data in outputs]
    else:
        by_name = {spec.name: (spec, data) for spec, data in outputs}
        chosen = [(*by_name[r.name], r.binary) for r in request.outputs]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    any_binary = False
    for spec, data, binary in chosen:
        entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": [len(data)]}
        if binary:
            blob = _encode_binary(spec, data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
            any_binary = True
        else:
            entry["data"] = _encode_json(spec, data)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = entries
    head = orjson.dumps(doc)
    if not any_binary:
        return head, [(b"content-type", b"application/json")]
    return head + b"".join(blobs), [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]


def _numbers(spec: TensorSpec, data: Sequence[Any]) -> np.ndarray[Any, Any]:
    """The output as a numpy array of its wire dtype; a value that does not fit is a ``ValueError``."""
    values = np.asarray(data)
    if values.ndim != 1:
        raise ValueError(f"output {spec.name}: data must be one-dimensional, got shape {values.shape}")
    dt = spec.datatype
    wire = _WIRE[dt]
    if values.size == 0:
        return values.astype(wire)
    kind = values.dtype.kind
    if dt == "BOOL":
        ok = kind == "b"
    elif dt in _FLOATS:
        ok = kind in "iuf"
    else:
        ok = kind in "iu"
        if ok:
            low, high = _INT_RANGE[dt]
            ok = int(values.min()) >= low and int(values.max()) <= high
    if not ok:
        raise ValueError(f"output {spec.name}: values of numpy dtype {values.dtype} do not fit datatype {dt}")
    with np.errstate(over="ignore"):  # a score beyond FP32/FP16 range is inf, as a cast in the model would be
        return values.astype(wire)


def _strings(spec: TensorSpec, data: Sequence[Any]) -> list[bytes]:
    types = set(map(type, data))
    if not types <= {str, bytes}:
        raise ValueError(f"output {spec.name}: BYTES values must be str or bytes, got {sorted(map(str, types))}")
    return [v.encode() if type(v) is str else v for v in data]


def _encode_binary(spec: TensorSpec, data: Sequence[Any]) -> bytes:
    if spec.datatype != "BYTES":
        return _numbers(spec, data).tobytes()
    parts = _strings(spec, data)
    return b"".join(chain.from_iterable((_LENGTH.pack(len(p)), p) for p in parts))


def _encode_json(spec: TensorSpec, data: Sequence[Any]) -> list[Any]:
    if spec.datatype != "BYTES":
        values = _numbers(spec, data)
        if spec.datatype == "BOOL":
            values = values.astype(bool)
        result: list[Any] = values.tolist()
        return result
    if set(map(type, data)) <= {str}:
        return list(data)
    try:
        return [v.decode() for v in _strings(spec, data)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"output {spec.name}: BYTES value is not UTF-8, JSON cannot carry it; send it binary") from exc


# ---------------------------------------------------------------------------------------------- metadata


def model_metadata(
    name: str, versions: Sequence[str], platform: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """The body of ``GET /v2/models/<name>[/versions/<v>]`` (``versions`` left out when there are none)."""
    doc: dict[str, Any] = {"name": name}
    if versions:
        doc["versions"] = list(versions)
    doc["platform"] = platform
    doc["inputs"] = [t.to_json() for t in inputs]
    doc["outputs"] = [t.to_json() for t in outputs]
    return doc


_COLUMN_DATATYPE = {
    ColumnType.float: "FP64",
    ColumnType.integer: "INT64",
    ColumnType.category: "BYTES",
    ColumnType.string: "BYTES",
    ColumnType.timestamp: "BYTES",  # ISO-8601 text with a timezone, as in the V1 body
}


def spec_inputs(spec: DatasetSpec) -> list[TensorSpec]:
    """The request's inputs for a dataset spec, one 1-D tensor per field, in contract column order.

    The same fields as ``riskloop.serving.schema.request_model``: never the label or when it became known;
    the ``timestamp_column`` as optional event time; other timestamp columns are not request fields.
    """
    labels = {c for c in (spec.label.column, spec.label.available_at) if c}
    out: list[TensorSpec] = []
    for name, rule in spec.contract.columns.items():
        if name in labels or (rule.type is ColumnType.timestamp and name != spec.timestamp_column):
            continue
        out.append(TensorSpec(name, _COLUMN_DATATYPE[rule.type], (-1,)))
    return out
