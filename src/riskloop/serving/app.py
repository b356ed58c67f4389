"""The predictor's HTTP API: a raw ASGI app serving KServe's V1 and the Open Inference Protocol (V2 REST).

Why raw ASGI and not KServe's Python server (FastAPI on uvicorn): that stack cost 0.40 ms of CPU per request
on this project's 2-core benchmark machine, more than the whole request of a bare ASGI endpoint scoring the
same model (``benchmarks/README.md``, serving). The routes are few and fixed, so they are matched here by
string (the served name is known at start) and every body is decoded once, by orjson or the OIP codec.
On the cluster KServe still provides the InferenceService, the storage initializer, canary revisions and
probes: a custom predictor container is "HTTP on the port", and this app is what listens there.

Routes (``{name}`` is the served model name; ``/versions/{v}`` may follow it in every V2 model route):

* V1 (KServe): ``GET /v1/models``, ``GET /v1/models/{name}`` (ready or 503),
  ``POST /v1/models/{name}:predict``, ``POST /v1/models/{name}:explain`` (each instance's top
  contributions, as ``"explain": true`` in a predict body);
* V2 (Open Inference Protocol): ``GET /v2`` (server metadata), ``GET /v2/health/live``,
  ``GET /v2/health/ready``, ``GET /v2/models/{name}`` (metadata: every input tensor from the data
  contract, every output), ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (JSON
  tensors whatever the content type, or the binary tensor extension);
* ``GET /metrics`` (Prometheus; aggregated across worker processes), ``GET /`` (alive).

Every error is ``{"error": "..."}`` with its status: 400 for a request that breaks the schema or the
protocol (naming the field or input), 404 for an unknown model, version or route, 405 for a wrong method,
413 for a body over the limit, 503 when the model is not ready or its feature store is down, 500 for a
failure inside the server (the traceback in its log; the connection stays usable).
"""

from __future__ import annotations

import logging
import random
import re
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import orjson

from riskloop import __version__
from riskloop.serving.metrics import render_metrics
from riskloop.serving.oip import (
    InferRequest,
    ProtocolError,
    TensorSpec,
    check_requested_outputs,
    encode_infer_response,
    model_metadata,
    parse_infer_request,
    spec_inputs,
)
from riskloop.serving.predictor import InvalidRequest, NotFound, Scored, ScoringModel, ServingError
from riskloop.serving.schema import ID_PATTERN, RequestError, parse_envelope, reasons_parameter

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1 << 20
JSON_TYPE = (b"content-type", b"application/json")
V1_PREFIX, V2_PREFIX = "/v1/models/", "/v2/models/"
_ID = re.compile(ID_PATTERN)


class Served(Protocol):
    """What the app serves: a :class:`~riskloop.serving.router.Router` or a pinned model."""

    name: str

    @property
    def ready(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def versions(self) -> list[str]: ...

    def champion(self) -> ScoringModel: ...

    async def predict(
        self,
        instances: list[Any],
        *,
        request_id: str,
        explain: bool = False,
        reasons: int = 0,
        version: str | None = None,
        started: float | None = None,
        where: str = "instances",
    ) -> tuple[ScoringModel, list[Scored]]: ...


class PayloadTooLarge(ServingError):
    status = 413


class MethodNotAllowed(ServingError):
    status = 405


class UnsupportedEncoding(ServingError):
    status = 415


class _Gone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class App:
    """The ASGI application serving ``served`` (picklable: each worker process gets a copy before it starts)."""

    def __init__(self, served: Served, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.served, self.name, self.max_body_bytes = served, served.name, max_body_bytes
        champion = served.champion()
        self.inputs = {t.name: t for t in spec_inputs(champion.spec)}
        self.outputs = champion.outputs()
        self._float_inputs = frozenset(t.name for t in self.inputs.values() if t.datatype.startswith("FP"))
        self._v1_predict = f"{V1_PREFIX}{self.name}:predict"
        self._v1_explain = f"{V1_PREFIX}{self.name}:explain"
        self._v2_infer = f"{V2_PREFIX}{self.name}/infer"

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.served.start()  # this process's runtime and record watcher, before the first request
                except Exception as exc:
                    log.exception("serving could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    self.served.stop()  # flushes this process's prediction log
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        headers: list[tuple[bytes, bytes]] = []
        try:
            if path == self._v1_predict or path == self._v1_explain:
                _allow(method, "POST")
                status, body, headers = await self._v1(scope, receive, started, explain=path == self._v1_explain)
            elif path == self._v2_infer:
                _allow(method, "POST")
                status, body, headers = await self._v2_infer_route(scope, receive, started, None)
            else:
                status, body, headers = await self._route(scope, receive, started, path, method)
        except _Gone:
            return
        except ServingError as exc:
            status, body, headers = exc.status, _error(exc.message), exc.headers
        except ProtocolError as exc:
            status, body = exc.status, _error(exc.message)
        except Exception:  # never let an exception reach uvicorn: it would close the keep-alive connection
            log.exception("request %s %s failed", method, path)
            status, body = 500, _error("internal error; see the server log")
        await _respond(send, status, body, headers)

    async def _route(
        self, scope: Scope, receive: Receive, started: float, path: str, method: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if path.startswith(V2_PREFIX):
            name, _, rest = path[len(V2_PREFIX) :].partition("/")
            self._known(name)
            version: str | None = None
            if rest.startswith("versions/"):
                version, _, rest = rest[len("versions/") :].partition("/")
                if version not in self.served.versions():
                    raise NotFound(
                        f"model {name} has no version {version!r} served here; served: "
                        f"{', '.join(self.served.versions())}"
                    )
            if rest == "infer":
                _allow(method, "POST")
                return await self._v2_infer_route(scope, receive, started, version)
            if rest == "":
                _allow(method, "GET")
                return 200, orjson.dumps(self._metadata()), []
            if rest == "ready":
                _allow(method, "GET")
                return self._ready_body({"name": name, "ready": self.served.ready})
        elif path.startswith(V1_PREFIX):
            name = path[len(V1_PREFIX) :]
            if ":" in name:
                name, _, verb = name.partition(":")
                self._known(name)
                raise NotFound(f"no verb {verb!r}: POST {V1_PREFIX}{name}:predict or :explain")
            self._known(name)
            _allow(method, "GET")
            return self._ready_body({"name": name, "ready": self.served.ready})
        elif path == "/metrics":
            _allow(method, "GET")
            content, content_type = render_metrics(accept=_header(scope, b"accept"))
            return 200, content, [(b"content-type", content_type.encode())]
        elif path in ("/v1/models", "/v1/models/"):
            _allow(method, "GET")
            return 200, orjson.dumps({"models": [self.name]}), []
        elif path == "/v2":
            _allow(method, "GET")
            return (
                200,
                orjson.dumps({"name": "riskloop", "version": __version__, "extensions": ["binary_tensor_data"]}),
                [],
            )
        elif path == "/v2/health/live":
            _allow(method, "GET")
            return 200, b'{"live":true}', []
        elif path == "/v2/health/ready":
            _allow(method, "GET")
            return self._ready_body({"ready": self.served.ready})
        elif path == "/":
            _allow(method, "GET")
            return 200, b'{"status":"alive"}', []
        raise NotFound(
            f"no route {method} {path}: see /v1/models/{self.name}:predict, /v2/models/{self.name}/infer, "
            f"/v2/models/{self.name} (metadata), /metrics"
        )

    def _known(self, name: str) -> None:
        if name != self.name:
            raise NotFound(f"model {name!r} is not served here; served: {self.name}")

    @staticmethod
    def _ready_body(body: dict[str, Any]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        return (200 if body["ready"] else 503), orjson.dumps(body), []

    def _metadata(self) -> dict[str, Any]:
        return model_metadata(self.name, self.served.versions(), "xgboost", list(self.inputs.values()), self.outputs)

    # ------------------------------------------------------------------ V1
    async def _v1(
        self, scope: Scope, receive: Receive, started: float, *, explain: bool
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        body = await self._body(scope, receive)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            content_type = _header(scope, b"content-type") or "none"
            raise InvalidRequest(
                f"the body is not JSON ({exc}; Content-Type: {content_type}): send a JSON object with an "
                "'instances' list, with the header Content-Type: application/json "
                "(curl -H 'Content-Type: application/json' -d @request.json ...)"
            ) from None
        try:
            envelope = parse_envelope(payload)
        except RequestError as exc:
            self._count_invalid(exc, started)
            raise InvalidRequest(str(exc)) from exc
        request_id = _header(scope, b"x-request-id") or _new_request_id()
        model, scored = await self.served.predict(
            envelope.instances,
            request_id=request_id,
            explain=explain or envelope.explain,
            reasons=envelope.reasons,
            started=started,
        )
        predictions = [model.v1_item(s, request_id, envelope.reasons) for s in scored]
        return 200, orjson.dumps({"predictions": predictions}), [(b"x-request-id", request_id.encode())]

    # ------------------------------------------------------------------ V2
    async def _v2_infer_route(
        self, scope: Scope, receive: Receive, started: float, version: str | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        body = await self._body(scope, receive)
        try:
            req = parse_infer_request(body, _header(scope, b"inference-header-content-length"), self.inputs)
            check_requested_outputs(req, self.outputs)
            reasons = reasons_parameter(req.parameters)
            instances = _rows(req.inputs, self._float_inputs)
        except (ProtocolError, RequestError) as exc:
            self._count_invalid(exc, started)
            raise InvalidRequest(exc.message if isinstance(exc, ProtocolError) else str(exc)) from exc
        # the client's id, when it is one, is the request id the prediction log and lineage know it by
        client_id = req.id if req.id is not None and _ID.fullmatch(req.id) else None
        request_id = _header(scope, b"x-request-id") or client_id or _new_request_id()
        model, scored = await self.served.predict(
            instances, request_id=request_id, reasons=reasons, version=version, started=started, where="inputs"
        )
        content, headers = _encode_v2(model, req, request_id, scored, reasons)
        return 200, content, [*headers, (b"x-request-id", request_id.encode())]

    # ------------------------------------------------------------------ helpers
    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                encoding = _header(scope, b"content-encoding")
                return (
                    body if encoding is None or encoding.lower() == "identity" else _decompress(body, encoding, limit)
                )

    def _count_invalid(self, exc: Exception, started: float) -> None:
        """A request refused before it reached a model is counted on the champion (the name's answer)."""
        fields = [f.split(".")[-1] for f, _ in exc.problems] if isinstance(exc, RequestError) else ["<body>"]
        self.served.champion().count_invalid(fields, time.perf_counter() - started)


def _encode_v2(
    model: ScoringModel, req: InferRequest, request_id: str, scored: list[Scored], reasons: int
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    return encode_infer_response(
        model_name=model.name,
        model_version=model.model_version,
        request_id=req.id if req.id is not None else request_id,
        parameters={"request_id": request_id, "threshold": model.bundle.threshold},
        outputs=model.v2_outputs(scored, reasons),
        request=req,
    )


def _rows(columns: dict[str, list[Any]], floats: frozenset[str]) -> list[dict[str, Any]]:
    """Columnar V2 inputs (one tensor per field) as one dict per instance.

    A NaN in a floating-point input is that instance's missing value (``None``, as ``null`` is in a V1
    body): tensors have no null, and NaN is how XGBoost and numpy mark one. The schema then refuses it
    where the field is required.
    """
    if not columns:
        raise RequestError([("inputs", "at least one input is required (see the model's metadata for the inputs)")])
    sizes = {name: len(values) for name, values in columns.items()}
    n = max(sizes.values())
    short = sorted(name for name, size in sizes.items() if size != n)
    if short:
        raise RequestError(
            [
                (f"inputs.{name}", f"has {sizes[name]} values, other inputs have {n}: one value per instance")
                for name in short
            ]
        )
    if n == 0:
        raise RequestError([("inputs", "the inputs hold no instance")])
    for name in floats.intersection(columns):
        values = columns[name]
        if any(v != v for v in values):  # NaN is the only value unequal to itself
            columns[name] = [None if v != v else v for v in values]
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body (tritonclient's ``request_compression_algorithm``), at most ``limit`` bytes decoded."""
    if encoding.lower() not in ("gzip", "deflate"):
        raise UnsupportedEncoding(
            f"Content-Encoding: {encoding} is not supported; send the body as is, gzip or deflate",
            headers=[(b"accept-encoding", b"gzip, deflate")],
        )
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or zlib header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"Content-Encoding: {encoding}, but the body does not decode ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    if not inflater.eof:
        raise InvalidRequest(f"Content-Encoding: {encoding}, but the body is truncated")
    return out


def _new_request_id() -> str:
    """128 random bits as 32 hex digits, the form of ``uuid4().hex``.

    From ``random`` (seeded from the OS at start and again in every forked child), not ``uuid4``:
    ``os.urandom`` is a system call per request, 13-50 µs on the benchmark machine, and a request id
    needs to be unique, not unpredictable.
    """
    return f"{random.getrandbits(128):032x}"


def _allow(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed(f"{method} is not allowed here; use {allowed}", headers=[(b"allow", allowed.encode())])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over the {limit} byte limit; send fewer instances per request")


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if not any(key == b"content-type" for key, _ in headers):
        headers = [JSON_TYPE, *headers]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["DEFAULT_MAX_BODY_BYTES", "App", "Served", "TensorSpec"]
