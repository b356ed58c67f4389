"""The real server against the clients people actually use: tritonclient (JSON and binary tensors), a generic
client that knows only the model metadata, curl's default content type for V1, and the protocol's error answers.

Scores are compared across protocols on cards the store has never seen, a fresh id per request: scoring pushes
the card's state, so the same card scored twice would not score the same; two never-seen cards with the same
transaction fields get the same features (the merchant's come from the store, which scoring does not change).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from riskloop.data.spec import load_spec
from riskloop.serving.oip import spec_inputs
from tests.integration.serving.conftest import MODEL, Server, Trained, instance
from tests.integration.serving.test_raw_spec import MODEL as RAW_MODEL
from tests.integration.serving.test_raw_spec import RISKY, SAFE, Served, expected_scores
from tests.integration.serving.test_raw_spec import served as served  # the raw-spec server, as this module's fixture
from tests.integration.serving.test_raw_spec import v1 as raw_v1

NP_DTYPE = {"FP64": np.float64, "INT64": np.int64, "BYTES": np.object_}
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def fresh(trained: Trained, start: int, n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` held-out transactions as instances, each on a card the store has never seen."""
    rows = [instance(r) for _, r in trained.held_out.iloc[start : start + n].iterrows()]
    return [r | {"card_id": f"PX-{tag}-{uuid.uuid4().hex[:10]}"} for r in rows]


def v1(server: Server, rows: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    r = server.client.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": rows, **extra})
    assert r.status_code == 200, r.text
    preds: list[dict[str, Any]] = r.json()["predictions"]
    return preds


def triton_inputs(rows: list[dict[str, Any]], *, binary: bool) -> list[triton.InferInput]:
    """One tensor per field of the fraud spec's metadata, built from numpy as a Triton user would."""
    out = []
    for spec in spec_inputs(load_spec("synthetic-fraud")):
        arr: np.ndarray[Any, Any] = np.array([r[spec.name] for r in rows], dtype=NP_DTYPE[spec.datatype])
        t = triton.InferInput(spec.name, [len(rows)], spec.datatype)
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


def v2_body(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    types = {str: "BYTES", float: "FP64", int: "INT64"}
    inputs = [
        {"name": k, "shape": [len(rows)], "datatype": types[type(v)], "data": [r[k] for r in rows]}
        for k, v in rows[0].items()
    ]
    return {"inputs": inputs, **extra}


# ------------------------------------------------------------------------------------------------ tritonclient


def test_tritonclient_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("no-such-model")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "riskloop" and "binary_tensor_data" in server_meta["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    expected = [t.to_json() for t in spec_inputs(load_spec("synthetic-fraud"))]
    assert meta["inputs"] == expected
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "score": "FP64",
        "fraud": "BOOL",
        "transaction_id": "BYTES",
        "unknown_card": "BOOL",
        "reasons": "BYTES",
    }
    assert client.get_model_metadata(MODEL, model_version="1") == meta
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata(MODEL, model_version="99")
    assert e.value.status() == "404" and "'99'" in e.value.message()


@pytest.mark.parametrize("binary_inputs", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("outputs", ["json", "binary", "unrequested"])
def test_tritonclient_infer_scores_as_v1_does(
    server: Server, client: triton.InferenceServerClient, trained: Trained, binary_inputs: bool, outputs: str
) -> None:
    rows = fresh(trained, 10, 4, "v1")
    expected = v1(server, rows)
    same = [r | {"card_id": f"PX-v2-{uuid.uuid4().hex[:10]}"} for r in rows]  # never-seen cards again
    requested = (
        None
        if outputs == "unrequested"
        else [
            triton.InferRequestedOutput(name, binary_data=outputs == "binary")
            for name in ("score", "fraud", "transaction_id", "unknown_card")
        ]
    )
    result = client.infer(MODEL, triton_inputs(same, binary=binary_inputs), outputs=requested, request_id="tc-42")
    response = result.get_response()
    assert response["id"] == "tc-42" and response["model_name"] == MODEL and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == ["score", "fraud", "transaction_id", "unknown_card"]
    binary_out = outputs != "json"  # tritonclient asks for binary outputs when it names none
    assert all(("data" in o) != binary_out for o in response["outputs"]), response["outputs"]
    score = result.as_numpy("score")
    assert score.dtype == np.float64 and score.shape == (4,)
    np.testing.assert_array_equal(score, [p["score"] for p in expected])
    assert result.as_numpy("fraud").tolist() == [p["fraud"] for p in expected]
    ids = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("transaction_id").tolist()]
    assert ids == [r["transaction_id"] for r in rows]
    assert result.as_numpy("unknown_card").tolist() == [True] * 4
    assert result.as_numpy("reasons") is None  # not asked for


@pytest.mark.parametrize("binary_output", [False, True], ids=["json-out", "binary-out"])
def test_tritonclient_reasons_parameter(
    client: triton.InferenceServerClient, trained: Trained, binary_output: bool
) -> None:
    rows = fresh(trained, 20, 3, "reasons")
    requested = [triton.InferRequestedOutput(n, binary_data=binary_output) for n in ("score", "reasons")]
    result = client.infer(MODEL, triton_inputs(rows, binary=True), outputs=requested, parameters={"reasons": 2})
    reasons = result.as_numpy("reasons")
    assert reasons is not None and reasons.shape == (3,)
    for item in reasons.tolist():
        decoded = json.loads(item)  # one JSON list per instance, whether it came back as str or bytes
        assert isinstance(decoded, list) and len(decoded) <= 2
        assert all({"feature", "contribution"} <= set(x) and x["contribution"] > 0 for x in decoded)
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, triton_inputs(rows, binary=False), parameters={"reasons": 99})
    assert e.value.status() == "400" and "parameters.reasons" in e.value.message()


def test_tritonclient_versioned_infer(client: triton.InferenceServerClient, trained: Trained) -> None:
    rows = fresh(trained, 30, 2, "version")
    result = client.infer(MODEL, triton_inputs(rows, binary=True), model_version="1")
    assert result.get_response()["model_version"] == "1" and result.as_numpy("score").shape == (2,)
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, triton_inputs(rows, binary=True), model_version="99")
    assert e.value.status() == "404"
    assert "no version '99'" in e.value.message() and "served: 1" in e.value.message()


# ------------------------------------------------------------------------------ a client built from the metadata


def _value(v: Any, datatype: str) -> Any:
    if datatype == "FP64":
        return float(v)
    if datatype == "INT64":
        return int(v)
    assert datatype == "BYTES", datatype
    return pd.Timestamp(v).isoformat() if isinstance(v, pd.Timestamp) else str(v)


@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
def test_a_client_built_only_from_the_metadata(server: Server, trained: Trained, content_type: str | None) -> None:
    meta = server.client.get(f"{server.url}/v2/models/{MODEL}")
    assert meta.status_code == 200, meta.text
    doc = meta.json()
    row = trained.held_out.iloc[40]
    assert {t["name"] for t in doc["inputs"]} == set(instance(row)), "metadata inputs are the V1 instance's fields"
    assert "score" in {t["name"] for t in doc["outputs"]}
    assert all(t["shape"] == [-1] for t in doc["inputs"])
    n = 2
    inputs = [
        {
            "name": t["name"],
            "datatype": t["datatype"],
            "shape": [n],
            "data": [_value(row[t["name"]], t["datatype"])] * n,
        }
        for t in doc["inputs"]
    ]
    headers = {} if content_type is None else {"content-type": content_type}
    request = server.client.build_request(
        "POST", f"{server.url}/v2/models/{MODEL}/infer", content=orjson.dumps({"inputs": inputs}), headers=headers
    )
    assert request.headers.get("content-type") == content_type  # httpx adds none for raw content
    r = server.client.send(request)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["transaction_id"]["data"] == [row["transaction_id"]] * n
    assert out["score"]["datatype"] == "FP64" and all(0 <= s <= 1 for s in out["score"]["data"])


# -------------------------------------------------------------------------------------------- protocol errors


def _valid(trained: Trained) -> dict[str, Any]:
    return v2_body(fresh(trained, 50, 1, "err"))


def _edit_input(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    for t in body["inputs"]:
        if t["name"] == name:
            t.update(changes)
    return body


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda b: _edit_input(b, "amount", datatype="FP32"), "amount"),
        (lambda b: _edit_input(b, "amount", shape=[1, 1], data=[[99.5]]), "amount"),
        (
            lambda b: (
                b | {"inputs": [*b["inputs"], {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]}]}
            ),
            "colour",
        ),
        (lambda b: b | {"inputs": [t for t in b["inputs"] if t["name"] != "card_id"]}, "card_id"),
        (lambda b: b | {"outputs": [{"name": "score"}, {"name": "colour"}]}, "outputs.colour"),
    ],
    ids=["datatype", "rank-2-shape", "unknown-input", "missing-input", "unknown-output"],
)
def test_protocol_errors_are_400_naming_the_input(server: Server, trained: Trained, mutate: Any, named: str) -> None:
    body = mutate(_valid(trained))
    r = server.client.post(f"{server.url}/v2/models/{MODEL}/infer", content=orjson.dumps(body))
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
    assert named in r.json()["error"], r.json()


def test_malformed_binary_is_a_400_naming_the_header(server: Server, trained: Trained) -> None:
    body = orjson.dumps(_valid(trained))
    r = server.client.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        content=body,
        headers={"content-type": "application/octet-stream", HEADER: str(len(body) + 10)},
    )
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and HEADER in r.json()["error"]
    # a binary tensor whose declared size runs past the body
    doc = _valid(trained)
    amount = next(t for t in doc["inputs"] if t["name"] == "amount")
    del amount["data"]
    amount["parameters"] = {"binary_data_size": 16}
    head = orjson.dumps(doc)
    r = server.client.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        content=head + np.float64(12.5).tobytes(),
        headers={HEADER: str(len(head))},
    )
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    assert "binary_data_size" in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/models/no-such-model/infer", 404),
        ("GET", "/v2/models/no-such-model", 404),
        ("GET", "/v2/models/no-such-model/ready", 404),
        ("GET", f"/v2/models/{MODEL}/versions/99", 404),
        ("POST", f"/v2/models/{MODEL}/versions/99/infer", 404),
        ("GET", f"/v2/models/{MODEL}/infer", 405),
        ("GET", f"/v2/models/{MODEL}/versions/1/infer", 405),
        ("POST", f"/v2/models/{MODEL}", 405),
        ("POST", "/v2/health/live", 405),
    ],
)
def test_unknown_models_and_wrong_methods(
    server: Server, trained: Trained, method: str, path: str, status: int
) -> None:
    content = orjson.dumps(_valid(trained)) if method == "POST" else None
    r = server.client.request(method, f"{server.url}{path}", content=content)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str) and r.json()["error"]
    if status == 405:
        assert r.headers["allow"] == ("POST" if method == "GET" else "GET")


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}/explain", f"/v2/models/{MODEL}/versions/1/foo"])
def test_an_unknown_route_under_a_model_is_404_whatever_the_method(server: Server, path: str) -> None:
    """A 405 says the route exists for another method: here no method has a route, GET included."""
    assert server.client.get(f"{server.url}{path}").status_code == 404
    r = server.client.post(f"{server.url}{path}", content=b"{}")
    assert r.status_code == 404, (r.status_code, r.headers.get("allow"), r.text)
    assert set(r.json()) == {"error"}


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_request(
    client: triton.InferenceServerClient, trained: Trained, algorithm: str
) -> None:
    """tritonclient's request_compression_algorithm sets Content-Encoding (Triton decompresses it): the server
    must either score the request as sent uncompressed, or refuse it naming the Content-Encoding header."""
    rows = fresh(trained, 80, 2, "plain")
    plain = client.infer(MODEL, triton_inputs(rows, binary=True)).as_numpy("score")
    again = [r | {"card_id": f"PX-{algorithm}-{uuid.uuid4().hex[:10]}"} for r in rows]
    try:
        result = client.infer(MODEL, triton_inputs(again, binary=True), request_compression_algorithm=algorithm)
    except InferenceServerException as exc:
        assert exc.status() in ("400", "415") and "Content-Encoding" in exc.message(), (exc.status(), exc.message())
    else:
        np.testing.assert_array_equal(result.as_numpy("score"), plain)


# ------------------------------------------------------------------------------- V1 without a JSON content type


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_v1_json_body_without_a_json_content_type(server: Server, trained: Trained, content_type: str | None) -> None:
    rows = fresh(trained, 60, 3, "form")
    headers = {} if content_type is None else {"content-type": content_type}
    r = server.client.post(
        f"{server.url}/v1/models/{MODEL}:predict", content=orjson.dumps({"instances": rows}), headers=headers
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["transaction_id"] for p in preds] == [x["transaction_id"] for x in rows]
    assert all(set(p) >= {"score", "fraud", "threshold", "model_version", "request_id"} for p in preds)


def test_readme_curl_without_a_content_type_header(server: Server, trained: Trained) -> None:
    """curl -d sends application/x-www-form-urlencoded: the JSON body is still read as JSON."""
    rows = fresh(trained, 70, 2, "curl")
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            f"{server.url}/v1/models/{MODEL}:predict",
            "-d",
            json.dumps({"instances": rows}),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, code = out.stdout.rpartition("\n")
    assert code == "200", out.stdout
    assert len(json.loads(body)["predictions"]) == 2


def test_v1_non_json_body_names_the_content_type(server: Server) -> None:
    r = server.client.post(
        f"{server.url}/v1/models/{MODEL}:predict",
        content=b"instances=1&amount=2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}
    message = r.json()["error"]
    assert "Content-Type" in message and "application/x-www-form-urlencoded" in message


# ------------------------------------------------------------------------------------- a raw-column spec over V2


def test_raw_spec_over_tritonclient(served: Served) -> None:
    srv = served.server
    c = triton.InferenceServerClient(url=srv.url.removeprefix("http://"))
    try:
        meta = c.get_model_metadata(RAW_MODEL)
        assert {t["name"] for t in meta["inputs"]} == {
            "app_id",
            "duration_months",
            "income",
            "purpose",
            "housing",
            "branch",
        }, "the contract's columns, never the label"
        assert {o["name"] for o in meta["outputs"]} >= {"score", "flagged", "app_id"}
        rows = [{k: v for k, v in r.items() if k != "housing"} for r in (RISKY, SAFE)]  # nullable housing left out
        types = {"app_id": "BYTES", "duration_months": "INT64", "income": "FP64", "purpose": "BYTES"}
        inputs = []
        for name, datatype in types.items():
            t = triton.InferInput(name, [len(rows)], datatype)
            t.set_data_from_numpy(np.array([r[name] for r in rows], dtype=NP_DTYPE[datatype]), binary_data=False)
            inputs.append(t)
        requested = [triton.InferRequestedOutput(n, binary_data=False) for n in ("score", "flagged", "app_id")]
        result = c.infer(RAW_MODEL, inputs, outputs=requested)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["score", "flagged", "app_id"]
        np.testing.assert_allclose(result.as_numpy("score"), expected_scores(served.model_dir, rows), rtol=1e-6)
        assert result.as_numpy("app_id").tolist() == ["app-risky", "app-safe"]
        flagged = result.as_numpy("flagged")
        assert flagged.dtype == np.bool_ and flagged.shape == (2,)
        assert flagged.tolist() == [
            bool(s >= result.get_response()["parameters"]["threshold"]) for s in result.as_numpy("score")
        ]
    finally:
        c.close()


def test_raw_spec_nan_is_one_instances_missing_value(served: Served) -> None:
    """Tensors have no null: a NaN in a float input is that instance's missing value (V1's null), in JSON and
    binary tensors alike, scored as training scores a missing value."""
    srv = served.server
    c = triton.InferenceServerClient(url=srv.url.removeprefix("http://"))
    rows = [RISKY, {**SAFE, "income": None}]  # the second instance's nullable income missing
    try:
        for binary in (False, True):
            inputs = []
            for name, datatype, values in (
                ("duration_months", "INT64", [r["duration_months"] for r in rows]),
                ("income", "FP64", [np.nan if r["income"] is None else r["income"] for r in rows]),
                ("purpose", "BYTES", [r["purpose"] for r in rows]),
                ("housing", "BYTES", [r["housing"] for r in rows]),
            ):
                t = triton.InferInput(name, [len(rows)], datatype)
                t.set_data_from_numpy(np.array(values, dtype=NP_DTYPE[datatype]), binary_data=binary)
                inputs.append(t)
            result = c.infer(RAW_MODEL, inputs, outputs=[triton.InferRequestedOutput("score", binary_data=binary)])
            np.testing.assert_allclose(result.as_numpy("score"), expected_scores(served.model_dir, rows), rtol=1e-6)
        v1_scores = [p["score"] for p in raw_v1(srv, rows).json()["predictions"]]
        np.testing.assert_allclose(result.as_numpy("score"), v1_scores, rtol=1e-6)
    finally:
        c.close()
