"""The Open Inference Protocol codec against the real tritonclient encoder and parser.

Requests are built by ``tritonclient.http.InferenceServerClient.generate_request_body`` (JSON and binary
tensors) and responses read back by its ``parse_response_body``: if the codec and the reference client ever
disagree on the wire format, these fail.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from riskloop.data.spec import load_spec
from riskloop.serving.oip import (
    DATATYPES,
    InferRequest,
    ProtocolError,
    RequestedOutput,
    TensorSpec,
    check_requested_outputs,
    encode_infer_response,
    model_metadata,
    parse_infer_request,
    spec_inputs,
)
from riskloop.serving.schema import request_model

# one 1-D input per datatype (named after it), and a 2-D one for nested data
SAMPLES: dict[str, np.ndarray[Any, Any]] = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535, 3], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1, 5], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1, 9], dtype=np.uint64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-(2**15), 1, 2**15 - 1], dtype=np.int16),
    "INT32": np.array([-(2**31), 2, 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 3, 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "FP32": np.array([1.1, -0.0, 3.4e38], dtype=np.float32),
    "FP64": np.array([42.5, -1e-300, 1.7976931348623157e308]),
    "BYTES": np.array(["EUR", "", "Zürich ✓"], dtype=object),
}
META = {dt.lower(): TensorSpec(dt.lower(), dt, (-1,)) for dt in DATATYPES}
META["grid"] = TensorSpec("grid", "INT32", (-1, 2))
OUTPUTS = [
    TensorSpec("score", "FP64", (-1,)),
    TensorSpec("flagged", "BOOL", (-1,)),
    TensorSpec("reasons", "BYTES", (-1,)),
    TensorSpec("code", "INT64", (-1,)),
]
RESULTS: list[tuple[TensorSpec, list[Any]]] = [
    (OUTPUTS[0], [0.125, 0.9, 1e-9]),
    (OUTPUTS[1], [False, True, False]),
    (OUTPUTS[2], ["amount high", "", "país ✓"]),
    (OUTPUTS[3], [0, -(2**63), 2**63 - 1]),
]


def client_body(
    tensors: dict[str, np.ndarray[Any, Any]],
    *,
    binary: bool | dict[str, bool],
    outputs: list[InferRequestedOutput] | None = None,
    request_id: str = "",
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, str | None]:
    """A request body and its Inference-Header-Content-Length as tritonclient sends them."""
    inputs = []
    for name, array in tensors.items():
        datatype = META[name].datatype if name in META else "FP64"
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary if isinstance(binary, bool) else binary[name])
        inputs.append(tensor)
    body, json_size = InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id, parameters=parameters
    )
    return body, None if json_size is None else str(json_size)


def parse(doc: Any, header: str | None = None) -> InferRequest:
    return parse_infer_request(orjson.dumps(doc) if not isinstance(doc, bytes) else doc, header, META)


def request_for(outputs: tuple[RequestedOutput, ...] | None = None, binary_output: bool = False) -> InferRequest:
    return InferRequest(None, {}, {}, outputs, binary_output)


def read_back(body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    header = dict(headers).get(b"inference-header-content-length")
    return InferenceServerClient.parse_response_body(body, header_length=None if header is None else int(header))


def expected(dt: str) -> list[Any]:
    values: list[Any] = SAMPLES[dt].tolist()
    return values


# ---------------------------------------------------------------------------------------------- requests


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_decodes_from_the_real_client(datatype: str, binary: bool) -> None:
    body, header = client_body({datatype.lower(): SAMPLES[datatype]}, binary=binary)
    assert (header is not None) is binary
    got = parse_infer_request(body, header, META).inputs[datatype.lower()]
    assert got == expected(datatype)
    assert [type(v) for v in got] == [type(v) for v in expected(datatype)]


def test_all_datatypes_in_one_request_mixing_json_and_binary_keep_request_order() -> None:
    names = [dt.lower() for dt in sorted(DATATYPES)]
    binary = {name: i % 2 == 0 for i, name in enumerate(names)}
    body, header = client_body({n: SAMPLES[n.upper()] for n in names}, binary=binary)
    assert header is not None and int(header) < len(body)
    req = parse_infer_request(body, header, META)
    assert list(req.inputs) == names
    for name in names:
        assert req.inputs[name] == expected(name.upper()), name


def test_json_tensors_parse_whatever_the_content_type_when_no_header_is_sent() -> None:
    # tritonclient sends JSON-only bodies as application/octet-stream: no header means JSON
    body, header = client_body({"fp64": SAMPLES["FP64"]}, binary=False)
    assert header is None
    assert parse_infer_request(body, None, META).inputs == {"fp64": expected("FP64")}


def test_nested_data_is_flattened_row_major() -> None:
    req = parse({"inputs": [{"name": "grid", "datatype": "INT32", "shape": [3, 2], "data": [[1, 2], [3, 4], [5, 6]]}]})
    assert req.inputs["grid"] == [1, 2, 3, 4, 5, 6]
    deep = parse({"inputs": [{"name": "fp64", "datatype": "FP64", "shape": [4], "data": [[[1.5, 2]], [[3, 4.5]]]}]})
    assert deep.inputs["fp64"] == [1.5, 2.0, 3.0, 4.5]
    assert all(type(v) is float for v in deep.inputs["fp64"])


def test_a_2d_tensor_from_the_client_binary_and_json() -> None:
    grid = np.arange(6, dtype=np.int32).reshape(3, 2)
    for binary in (False, True):
        body, header = client_body({"grid": grid}, binary=binary)
        assert parse_infer_request(body, header, META).inputs["grid"] == [0, 1, 2, 3, 4, 5]


def test_json_integers_are_floats_for_fp_inputs_and_fp32_rounds_like_the_model_sees_it() -> None:
    req = parse(
        {
            "inputs": [
                {"name": "fp64", "datatype": "FP64", "shape": [2], "data": [1, 2.5]},
                {"name": "fp32", "datatype": "FP32", "shape": [1], "data": [0.1]},
                {"name": "fp16", "datatype": "FP16", "shape": [1], "data": [3]},
            ]
        }
    )
    assert req.inputs["fp64"] == [1.0, 2.5] and type(req.inputs["fp64"][0]) is float
    assert req.inputs["fp32"] == [float(np.float32(0.1))]
    assert req.inputs["fp16"] == [3.0] and type(req.inputs["fp16"][0]) is float


def test_empty_tensors_decode_to_empty_lists() -> None:
    req = parse({"inputs": [{"name": "bytes", "datatype": "BYTES", "shape": [0], "data": []}]})
    assert req.inputs == {"bytes": []}
    body, header = client_body({"fp32": np.array([], dtype=np.float32)}, binary=True)
    assert parse_infer_request(body, header, META).inputs == {"fp32": []}


def test_id_parameters_and_requested_outputs_from_the_client() -> None:
    body, header = client_body(
        {"fp64": SAMPLES["FP64"]},
        binary=True,
        outputs=[InferRequestedOutput("reasons", binary_data=False), InferRequestedOutput("score", binary_data=True)],
        request_id="req-7",
        parameters={"reasons": 3},
    )
    req = parse_infer_request(body, header, META)
    assert req.id == "req-7"
    assert req.parameters == {"reasons": 3}
    assert req.outputs == (RequestedOutput("reasons", False), RequestedOutput("score", True))
    assert req.binary_output is False


def test_no_requested_outputs_means_all_and_binary_data_output_is_taken_out_of_parameters() -> None:
    body, header = client_body({"int64": SAMPLES["INT64"]}, binary=False, parameters={"reasons": 2})
    req = parse_infer_request(body, header, META)
    assert req.id is None and req.outputs is None
    assert req.binary_output is True  # tritonclient asks for binary outputs when it names none
    assert req.parameters == {"reasons": 2}


def test_an_output_without_binary_data_follows_the_request_default() -> None:
    doc = {
        "id": "x",
        "model_name": "ignored (KServe's client sends it)",
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "bool", "datatype": "BOOL", "shape": [1], "data": [True]}],
        "outputs": [{"name": "score"}, {"name": "code", "parameters": {"binary_data": False}}],
    }
    req = parse(doc)
    assert req.outputs == (RequestedOutput("score", True), RequestedOutput("code", False))
    assert req.parameters == {}
    assert parse({**doc, "outputs": []}).outputs is None


# ------------------------------------------------------------------------------------------------ errors

ONE = {"name": "fp64", "datatype": "FP64", "shape": [1], "data": [1.0]}


def bad(**changes: Any) -> dict[str, Any]:
    tensor = {**ONE, **changes}
    return {"inputs": [{k: v for k, v in tensor.items() if v is not ...}]}


ERRORS: list[tuple[str, Any, str | None, list[str]]] = [
    ("not json", b"{nope", None, ["<body>", "not valid JSON"]),
    ("not an object", [1], None, ["<body>", "inputs"]),
    ("no inputs", {"id": "a"}, None, ["inputs", "non-empty list"]),
    ("empty inputs", {"inputs": []}, None, ["inputs"]),
    ("input not an object", {"inputs": [ONE, 3]}, None, ["inputs[1]"]),
    ("no name", bad(name=...), None, ["inputs[0].name"]),
    ("unknown datatype", bad(datatype="BF16"), None, ["inputs[0] (fp64).datatype", "'BF16'", "FP64", "BYTES"]),
    ("shape not a list", bad(shape=3), None, ["inputs[0] (fp64).shape"]),
    ("negative dim", bad(shape=[-1]), None, ["inputs[0] (fp64).shape"]),
    ("bool dim", bad(shape=[True]), None, ["inputs[0] (fp64).shape"]),
    ("no data", bad(data=...), None, ["inputs[0] (fp64).data", "missing"]),
    ("data not a list", bad(data=1.0), None, ["inputs.fp64.data", "JSON list"]),
    ("ragged", bad(shape=[3], data=[[1.0], 2.0, 3.0]), None, ["inputs.fp64.data", "mixes"]),
    ("count", bad(shape=[2]), None, ["inputs.fp64.data", "1 values", "needs 2"]),
    ("unknown input", bad(name="amount"), None, ["inputs.amount", "not an input", "fp64", "bytes"]),
    ("twice", {"inputs": [ONE, ONE]}, None, ["inputs.fp64", "twice"]),
    ("datatype mismatch", bad(datatype="FP32"), None, ["inputs.fp64", "FP32", "says FP64", "send FP64"]),
    ("rank mismatch", bad(shape=[1, 1]), None, ["inputs.fp64", "shape [1, 1]", "[-1]"]),
    (
        "dim mismatch",
        {"inputs": [{"name": "grid", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]},
        None,
        ["inputs.grid", "shape [1, 3]", "[-1, 2]"],
    ),
    ("string for fp", bad(data=["1.5"]), None, ["inputs.fp64.data", "FP64", "strings"]),
    ("bool for fp", bad(data=[True]), None, ["inputs.fp64.data", "true/false"]),
    ("null for fp", bad(data=[None]), None, ["inputs.fp64.data", "null"]),
    ("fp32 overflow", bad(name="fp32", datatype="FP32", data=[1e39]), None, ["inputs.fp32.data", "out of range"]),
    ("fp16 overflow", bad(name="fp16", datatype="FP16", data=[70000]), None, ["inputs.fp16.data", "out of range"]),
    ("float for int", bad(name="int64", datatype="INT64", data=[1.0]), None, ["inputs.int64.data", "floats"]),
    ("bool for int", bad(name="int32", datatype="INT32", data=[True]), None, ["inputs.int32.data", "true/false"]),
    ("int8 range", bad(name="int8", datatype="INT8", data=[128]), None, ["inputs.int8.data", "128", "-128 to 127"]),
    ("uint negative", bad(name="uint64", datatype="UINT64", data=[-1]), None, ["inputs.uint64.data", "-1"]),
    (
        "int beyond 64 bits",  # orjson reads it as a float
        b'{"inputs": [{"name": "uint64", "datatype": "UINT64", "shape": [1], "data": [18446744073709551616]}]}',
        None,
        ["inputs.uint64.data", "beyond 64 bits"],
    ),
    ("int for bool", bad(name="bool", datatype="BOOL", data=[1]), None, ["inputs.bool.data", "true or false"]),
    ("number for bytes", bad(name="bytes", datatype="BYTES", data=[1]), None, ["inputs.bytes.data", "strings"]),
    ("bad id", {"id": 5, "inputs": [ONE]}, None, ["id", "string"]),
    ("bad parameters", {"parameters": [1], "inputs": [ONE]}, None, ["parameters", "object"]),
    (
        "bad binary_data_output",
        {"parameters": {"binary_data_output": "yes"}, "inputs": [ONE]},
        None,
        ["parameters.binary_data_output"],
    ),
    ("outputs not a list", {"inputs": [ONE], "outputs": {"name": "x"}}, None, ["outputs"]),
    ("output without name", {"inputs": [ONE], "outputs": [{"nam": "x"}]}, None, ["outputs[0]"]),
    ("output twice", {"inputs": [ONE], "outputs": [{"name": "x"}, {"name": "x"}]}, None, ["outputs[1] (x)", "twice"]),
    (
        "bad binary_data",
        {"inputs": [ONE], "outputs": [{"name": "x", "parameters": {"binary_data": 1}}]},
        None,
        ["outputs[0] (x).parameters.binary_data"],
    ),
    (
        "classification",
        {"inputs": [ONE], "outputs": [{"name": "x", "parameters": {"classification": 2}}]},
        None,
        ["outputs[0] (x).parameters.classification", "not supported"],
    ),
    (
        "shared memory",
        bad(data=..., parameters={"shared_memory_region": "r"}),
        None,
        ["inputs[0] (fp64).parameters.shared_memory_region"],
    ),
    (
        "binary without header",
        bad(data=..., parameters={"binary_data_size": 8}),
        None,
        ["inputs[0] (fp64).parameters.binary_data_size", "Inference-Header-Content-Length"],
    ),
]


@pytest.mark.parametrize(("case", "doc", "header", "needles"), ERRORS, ids=[e[0] for e in ERRORS])
def test_each_problem_is_a_400_naming_where(case: str, doc: Any, header: str | None, needles: list[str]) -> None:
    with pytest.raises(ProtocolError) as err:
        parse(doc, header)
    assert err.value.status == 400
    for needle in needles:
        assert needle in err.value.message, (needle, err.value.message)
    assert str(err.value) == err.value.message


def binary_body(tensors: list[dict[str, Any]], blobs: list[bytes], header: str | None = "auto") -> tuple[bytes, Any]:
    head = orjson.dumps({"inputs": tensors})
    return head + b"".join(blobs), str(len(head)) if header == "auto" else header


BINARY_ERRORS: list[tuple[str, tuple[bytes, Any], list[str]]] = [
    (
        "header not a number",
        binary_body([ONE], [], header="12a"),
        ["Inference-Header-Content-Length", "'12a'"],
    ),
    ("header zero", binary_body([ONE], [], header="0"), ["Inference-Header-Content-Length"]),
    ("header negative", binary_body([ONE], [], header="-5"), ["Inference-Header-Content-Length"]),
    ("header beyond body", binary_body([ONE], [], header="9999"), ["Inference-Header-Content-Length", "9999"]),
    (
        "header cuts the json",
        binary_body(
            [{"name": "fp64", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}],
            [b"\0" * 8],
            header="10",
        ),
        ["<body>", "first 10 bytes", "not valid JSON"],
    ),
    (
        "sizes do not add up",
        binary_body(
            [{"name": "fp64", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}], [b"\0" * 9]
        ),
        ["binary_data_size", "add up to 8", "9 bytes follow"],
    ),
    (
        "negative size",
        binary_body([{"name": "fp64", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": -8}}], []),
        ["inputs[0] (fp64).parameters.binary_data_size"],
    ),
    (
        "data and size",
        binary_body(
            [{"name": "fp64", "datatype": "FP64", "shape": [1], "data": [1.0], "parameters": {"binary_data_size": 8}}],
            [b"\0" * 8],
        ),
        ["inputs[0] (fp64)", "both"],
    ),
    (
        "size does not fit shape",
        binary_body(
            [{"name": "fp64", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 8}}], [b"\0" * 8]
        ),
        ["inputs.fp64.parameters.binary_data_size", "8 bytes", "needs 16"],
    ),
    (
        "bool not 0/1",
        binary_body(
            [{"name": "bool", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}}], [b"\x01\x02"]
        ),
        ["inputs.bool", "0 (false) or 1 (true)"],
    ),
    (
        "bytes not utf-8",
        binary_body(
            [{"name": "bytes", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}],
            [struct.pack("<I", 2) + b"\xff\xfe"],
        ),
        ["inputs.bytes", "not UTF-8"],
    ),
    (
        "bytes truncated",
        binary_body(
            [{"name": "bytes", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}],
            [struct.pack("<I", 5) + b"ab"],
        ),
        ["inputs.bytes", "exactly 1 elements"],
    ),
    (
        "bytes fewer than shape",
        binary_body(
            [{"name": "bytes", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 6}}],
            [struct.pack("<I", 2) + b"ab"],
        ),
        ["inputs.bytes", "exactly 2 elements"],
    ),
    (
        "bytes more than shape",
        binary_body(
            [{"name": "bytes", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 10}}],
            [struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b"],
        ),
        ["inputs.bytes", "exactly 1 elements"],
    ),
    (
        "binary datatype mismatch",
        binary_body(
            [{"name": "fp64", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}], [b"\0" * 4]
        ),
        ["inputs.fp64", "datatype FP32", "send FP64"],
    ),
]


@pytest.mark.parametrize(("case", "request_", "needles"), BINARY_ERRORS, ids=[e[0] for e in BINARY_ERRORS])
def test_each_binary_problem_is_a_400_naming_where(case: str, request_: tuple[bytes, Any], needles: list[str]) -> None:
    body, header = request_
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(body, header, META)
    assert err.value.status == 400
    for needle in needles:
        assert needle in err.value.message, (needle, err.value.message)


def test_a_header_with_no_binary_inputs_is_fine_when_nothing_follows_the_json() -> None:
    body, header = binary_body([ONE], [])
    assert parse_infer_request(body, header, META).inputs == {"fp64": [1.0]}


def test_binary_fp_inputs_pass_nan_through_for_the_schema_to_refuse() -> None:
    body, header = client_body({"fp64": np.array([math.nan, math.inf])}, binary=True)
    values = parse_infer_request(body, header, META).inputs["fp64"]
    assert math.isnan(values[0]) and values[1] == math.inf


def test_required_inputs_are_left_to_the_schema() -> None:
    assert parse({"inputs": [ONE]}).inputs == {"fp64": [1.0]}  # no other of META's inputs needed here


# --------------------------------------------------------------------------------------------- responses


def encode(request: InferRequest, **kw: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    args: dict[str, Any] = {
        "model_name": "fraud",
        "model_version": "7",
        "request_id": "req-1",
        "parameters": None,
        "outputs": RESULTS,
        "request": request,
    }
    return encode_infer_response(**{**args, **kw})


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_all_outputs_read_back_by_the_real_client(binary: bool) -> None:
    body, headers = encode(request_for(binary_output=binary), parameters={"reasons": 2})
    hdrs = dict(headers)
    assert hdrs[b"content-type"] == (b"application/octet-stream" if binary else b"application/json")
    assert (b"inference-header-content-length" in hdrs) is binary
    result = read_back(body, headers)
    response = result.get_response()
    assert response["model_name"] == "fraud" and response["model_version"] == "7" and response["id"] == "req-1"
    assert response["parameters"] == {"reasons": 2}
    assert [o["name"] for o in response["outputs"]] == ["score", "flagged", "reasons", "code"]
    for spec, data in RESULTS:
        out = result.get_output(spec.name)
        assert out["datatype"] == spec.datatype and out["shape"] == [3]
        assert ("data" in out) is not binary
        array = result.as_numpy(spec.name)
        got = [v.decode() for v in array.tolist()] if spec.datatype == "BYTES" and binary else array.tolist()
        assert got == data, spec.name


def test_requested_outputs_only_in_their_order_and_per_output_binary() -> None:
    request = request_for((RequestedOutput("code", True), RequestedOutput("score", False)), binary_output=True)
    body, headers = encode(request, model_version=None, request_id=None)
    result = read_back(body, headers)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["code", "score"]
    assert "model_version" not in response and "id" not in response and "parameters" not in response
    assert response["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert result.as_numpy("code").tolist() == RESULTS[3][1]
    assert result.as_numpy("score").tolist() == RESULTS[0][1]


def test_requests_from_the_client_drive_the_response_format() -> None:
    body, header = client_body(
        {"fp64": SAMPLES["FP64"]},
        binary=False,
        outputs=[InferRequestedOutput("reasons", binary_data=True), InferRequestedOutput("flagged", binary_data=False)],
        request_id="abc",
    )
    request = parse_infer_request(body, header, META)
    out, headers = encode(request, request_id=request.id)
    result = read_back(out, headers)
    assert result.get_response()["id"] == "abc"
    assert [v.decode() for v in result.as_numpy("reasons").tolist()] == RESULTS[2][1]
    assert result.get_output("flagged")["data"] == [False, True, False]


def test_an_unknown_requested_output_is_a_400_naming_it() -> None:
    request = request_for((RequestedOutput("score", False), RequestedOutput("probability", True)))
    with pytest.raises(ProtocolError) as err:
        encode(request)
    assert err.value.status == 400
    assert "outputs.probability" in err.value.message and "score, flagged, reasons, code" in err.value.message
    with pytest.raises(ProtocolError):
        check_requested_outputs(request, OUTPUTS)
    check_requested_outputs(request_for((RequestedOutput("code", True),)), OUTPUTS)


def test_nan_scores_are_null_in_json_and_exact_in_binary() -> None:
    results = [(OUTPUTS[0], [math.nan, 0.5])]
    body, headers = encode(request_for(), outputs=results)
    assert orjson.loads(body)["outputs"][0]["data"] == [None, 0.5]
    assert math.isnan(read_back(body, headers).as_numpy("score")[0])
    body, headers = encode(request_for(binary_output=True), outputs=results)
    assert math.isnan(read_back(body, headers).as_numpy("score")[0])


def test_numpy_output_data_and_empty_outputs() -> None:
    results = [(OUTPUTS[0], np.array([0.25, 0.5])), (OUTPUTS[2], [])]
    for binary in (False, True):
        body, headers = encode(request_for(binary_output=binary), outputs=results)
        result = read_back(body, headers)
        assert result.as_numpy("score").tolist() == [0.25, 0.5]
        assert result.as_numpy("reasons").shape == (0,)


@pytest.mark.parametrize(
    ("spec", "data"),
    [
        (OUTPUTS[3], [1.5]),  # a float is never truncated into an INT64
        (TensorSpec("small", "INT8", (-1,)), [300]),
        (OUTPUTS[1], [1, 0]),
        (OUTPUTS[0], ["0.5"]),
        (OUTPUTS[0], [None]),
        (OUTPUTS[2], [1]),
        (OUTPUTS[0], [[0.5]]),
    ],
)
def test_output_data_that_does_not_fit_its_datatype_is_a_server_bug(spec: TensorSpec, data: list[Any]) -> None:
    for binary in (False, True):
        with pytest.raises(ValueError, match=spec.name) as err:
            encode(request_for(binary_output=binary), outputs=[(spec, data)])
        assert not isinstance(err.value, ProtocolError)


# ---------------------------------------------------------------------------------------------- metadata


def test_model_metadata() -> None:
    inputs = [TensorSpec("amount", "FP64", (-1,))]
    doc = model_metadata("fraud", ["3"], "xgboost", inputs, OUTPUTS[:1])
    assert doc == {
        "name": "fraud",
        "versions": ["3"],
        "platform": "xgboost",
        "inputs": [{"name": "amount", "datatype": "FP64", "shape": [-1]}],
        "outputs": [{"name": "score", "datatype": "FP64", "shape": [-1]}],
    }
    assert "versions" not in model_metadata("fraud", [], "xgboost", inputs, [])


def test_tensor_spec_refuses_unknown_datatypes() -> None:
    with pytest.raises(ValueError, match="BF16"):
        TensorSpec("x", "BF16", (-1,))


@pytest.mark.parametrize("name", ["synthetic-fraud", "german-credit", "ulb-creditcard"])
def test_spec_inputs_are_the_request_schema_fields(name: str) -> None:
    spec = load_spec(name)
    tensors = spec_inputs(spec)
    names = [t.name for t in tensors]
    assert sorted(names) == sorted(request_model(spec).model.model_fields)
    assert len(set(names)) == len(names)
    assert names == [c for c in spec.contract.columns if c in set(names)]  # contract order
    assert spec.label.column not in names
    types = {t.name: t.datatype for t in tensors}
    for column, rule in spec.contract.columns.items():
        if column in types:
            want = {"float": "FP64", "integer": "INT64"}.get(rule.type.value, "BYTES")
            assert types[column] == want, column
    assert all(t.shape == (-1,) for t in tensors)
    if spec.timestamp_column:
        assert types[spec.timestamp_column] == "BYTES"


def test_spec_inputs_feed_the_codec() -> None:
    spec = load_spec("synthetic-fraud")
    meta = {t.name: t for t in spec_inputs(spec)}
    tensors = [
        InferInput("amount", [2], "FP64").set_data_from_numpy(np.array([42.5, 10.0]), binary_data=True),
        InferInput("card_age_days", [2], "INT64").set_data_from_numpy(np.array([812, 3]), binary_data=False),
        InferInput("event_timestamp", [2], "BYTES").set_data_from_numpy(
            np.array(["2026-01-21T10:15:00Z", "2026-01-21T10:16:00+01:00"], dtype=object), binary_data=True
        ),
    ]
    body, size = InferenceServerClient.generate_request_body(tensors)
    req = parse_infer_request(body, str(size), meta)
    assert req.inputs == {
        "amount": [42.5, 10.0],
        "card_age_days": [812, 3],
        "event_timestamp": ["2026-01-21T10:15:00Z", "2026-01-21T10:16:00+01:00"],
    }


# ---------------------------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
fields = st.sampled_from(["name", "datatype", "shape", "data", "parameters", "binary_data_size", "binary_data"])
tensor_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from([*META, "nope"]) | json_values,
        "datatype": st.sampled_from(sorted(DATATYPES)) | json_values,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
        "data": json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 40) | json_values, "binary_data": json_values}
        )
        | json_values,
    },
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.lists(tensor_like, max_size=4) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({}, optional={"name": json_values, "parameters": json_values})),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": json_values}) | json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=request_like, tail=st.binary(max_size=40), use_header=st.booleans())
def test_random_requests_decode_or_raise_protocol_error(doc: dict[str, Any], tail: bytes, use_header: bool) -> None:
    head = orjson.dumps(doc)
    body, header = (head + tail, str(len(head))) if use_header else (head, None)
    try:
        req = parse_infer_request(body, header, META)
    except ProtocolError as exc:
        assert exc.status == 400 and exc.message
    else:
        assert set(req.inputs) <= set(META)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=80), header=st.none() | st.text(max_size=6) | st.integers(-3, 90).map(str))
def test_random_bytes_raise_only_protocol_error(body: bytes, header: str | None) -> None:
    try:
        parse_infer_request(body, header, META)
    except ProtocolError as exc:
        assert exc.status == 400


@settings(max_examples=200, deadline=None)
@given(
    arrays=st.dictionaries(
        st.sampled_from(sorted(DATATYPES)),
        st.tuples(st.integers(0, 5), st.booleans(), st.randoms(use_true_random=False)),
        min_size=1,
    )
)
def test_random_client_requests_round_trip(arrays: dict[str, tuple[int, bool, Any]]) -> None:
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    binary: dict[str, bool] = {}
    for dt, (n, as_binary, rnd) in arrays.items():
        idx = [rnd.randrange(len(SAMPLES[dt])) for _ in range(n)]
        tensors[dt.lower()] = SAMPLES[dt][idx] if n else SAMPLES[dt][:0]
        binary[dt.lower()] = as_binary
    body, header = client_body(tensors, binary=binary)
    req = parse_infer_request(body, header, META)
    assert req.inputs == {name: array.tolist() for name, array in tensors.items()}


_VALID_BINARY = client_body(
    {n.lower(): SAMPLES[n] for n in ("BYTES", "FP64", "BOOL", "INT8")},
    binary={"bytes": True, "fp64": True, "bool": True, "int8": False},
)


@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, len(_VALID_BINARY[0]) - 1), st.integers(0, 255)), max_size=3),
    cut=st.integers(0, 12),
    shift=st.integers(-3, 3),
)
def test_corrupted_binary_requests_raise_only_protocol_error(
    flips: list[tuple[int, int]], cut: int, shift: int
) -> None:
    body = bytearray(_VALID_BINARY[0])
    for at, value in flips:
        body[at] = value
    assert _VALID_BINARY[1] is not None
    header = str(int(_VALID_BINARY[1]) + shift)
    try:
        req = parse_infer_request(bytes(body[: len(body) - cut]), header, META)
    except ProtocolError as exc:
        assert exc.status == 400
    else:
        assert set(req.inputs) == {"bytes", "fp64", "bool", "int8"}
