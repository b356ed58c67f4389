"""Thousands of generated requests against the real server: client input never causes a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.serving.conftest import MODEL, Server, Trained, instance

CATEGORIES = {
    "currency": ["EUR", "GBP", "USD", "BRL", "NGN", "PLN"],
    "merchant_category": [
        "grocery",
        "restaurant",
        "fuel",
        "fashion",
        "pharmacy",
        "entertainment",
        "travel",
        "electronics",
        "digital_goods",
        "jewelry",
    ],
    "channel": ["pos", "contactless", "online"],
    "country": ["DE", "FR", "NL", "ES", "IT", "PL", "GB", "US", "BR", "NG"],
    "device_type": ["terminal", "mobile", "desktop"],
}
ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@st.composite
def valid_instance(draw: st.DrawFn) -> dict[str, Any]:
    inst: dict[str, Any] = {
        "transaction_id": draw(ids),
        "card_id": draw(st.sampled_from(["HC000001", "HC000002"]) | ids.map(lambda s: "H" + s)),
        "merchant_id": draw(ids),
        "amount": draw(st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)),
        "distance_from_home_km": draw(st.floats(min_value=0, max_value=20_100, allow_nan=False)),
        "card_age_days": draw(st.integers(0, 36_500)),
        "event_timestamp": draw(
            st.datetimes(
                min_value=__import__("datetime").datetime(2026, 1, 1),
                max_value=__import__("datetime").datetime(2026, 3, 1),
                timezones=st.just(__import__("datetime").timezone.utc),
            )
        ).isoformat(),
    }
    for k, values in CATEGORIES.items():
        inst[k] = draw(st.sampled_from(values))
    return inst


bad_values = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([-1, -0.0, 0, 1e309, -1e309, 10**30, "NaN", "1e309", 5e6]),
)
_not_json_types = st.one_of(
    st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
_not_numbers = st.one_of(st.text(max_size=5), _not_json_types, st.none())
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "amount": st.one_of(_not_numbers, st.sampled_from([0, -0.0, -1, -1e-9, 1e309, -1e309, 10**30, 5e6, "12.5"])),
    "distance_from_home_km": st.one_of(_not_numbers, st.sampled_from([-1, -0.5, 1e309, 30_000, "3"])),
    "card_age_days": st.one_of(_not_numbers, st.sampled_from([-1, 1.5, 10**12, "10"])),
    "event_timestamp": st.one_of(
        st.integers(),
        _not_json_types,
        st.sampled_from(["2026-01-01T00:00:00", "yesterday", "", "2026-13-01T00:00:00Z"]),
    ),
    **{
        k: st.one_of(st.none(), st.integers(), _not_json_types, st.sampled_from(["", " ", "x" * 65, "a b"]))
        for k in ("transaction_id", "card_id", "merchant_id")
    },
    **{
        k: st.one_of(
            st.none(), st.integers(), _not_json_types, st.text(max_size=8).filter(lambda v, k=k: v not in CATEGORIES[k])
        )
        for k in CATEGORIES
    },
}


@st.composite
def broken_instance(draw: st.DrawFn) -> dict[str, Any]:
    inst = draw(valid_instance())
    action = draw(st.sampled_from(["drop", "replace", "extra"]))
    key = draw(st.sampled_from(sorted(inst)))
    if action == "drop" and key == "event_timestamp":  # optional: dropping it is valid
        action = "replace"
    if action == "drop":
        inst.pop(key)
    elif action == "replace":
        inst[key] = draw(INVALID[key])
    else:
        inst[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in inst))] = draw(bad_values)
    return inst


def body_text(payload: Any) -> str:
    # allow_nan=True writes NaN/Infinity literals: hostile JSON a real client could send
    return json.dumps(payload, allow_nan=True, default=str)


def post(server: Server, text: str) -> httpx.Response:
    return server.client.post(
        f"{server.url}/v1/models/{MODEL}:predict", content=text.encode(), headers={"content-type": "application/json"}
    )


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(valid_instance(), min_size=1, max_size=8))
def test_valid_requests_score_in_unit_interval(server: Server, instances: list[dict[str, Any]]) -> None:
    r = post(server, body_text({"instances": instances}))
    assert r.status_code == 200, r.text
    scores = [p["score"] for p in r.json()["predictions"]]
    assert len(scores) == len(instances) and all(0.0 <= s <= 1.0 for s in scores)


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(valid_instance(), min_size=0, max_size=3), broken_instance())
def test_broken_instances_get_a_4xx_naming_the_field(
    server: Server, good: list[dict[str, Any]], bad: dict[str, Any]
) -> None:
    r = post(server, body_text({"instances": [*good, bad]}))
    assert r.status_code in (400, 422), (r.status_code, r.text)
    error = r.json()["error"]
    # NaN/Infinity literals are not JSON: the body is refused before any field exists, naming the position
    assert f"instances[{len(good)}]" in error or ("the body is not JSON" in error and "column" in error), error


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.text(max_size=50),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=10,
        ).map(body_text),
        st.builds(
            lambda n: body_text({"instances": []}) if n == 0 else body_text({"instances": [{}] * n}), st.integers(0, 3)
        ),
    )
)
def test_arbitrary_bodies_never_cause_a_5xx(server: Server, text: str) -> None:
    r = post(server, text)
    assert r.status_code in (400, 413, 422), (r.status_code, r.text, text)


def test_limits_too_many_instances_and_body_size(server: Server, trained: Trained) -> None:
    one = instance(trained.held_out.iloc[0])
    r = post(server, body_text({"instances": [one] * 257}))
    assert r.status_code == 400 and "at most 256" in r.json()["error"]
    huge = body_text({"instances": [one | {"transaction_id": "x" * 2_000_000}]})
    assert post(server, huge).status_code == 413
    r = post(server, body_text({"instances": [one | {"amount": -5}]}))
    assert r.status_code == 400 and "instances[0].amount" in r.json()["error"]
    r = post(server, '{"instances": [{"amount": NaN}]}')
    assert r.status_code == 400


def test_server_still_healthy_after_the_storm(server: Server, trained: Trained) -> None:
    assert server.process.poll() is None
    r = post(server, body_text({"instances": [instance(trained.held_out.iloc[1])]}))
    assert r.status_code == 200


@pytest.mark.parametrize("kind", ["redis-gone", "redis-hung"])
def test_feature_store_gone_answers_a_fast_5xx(trained: Trained, redis_url: str, kind: str) -> None:
    """A server fault (its Redis online store killed, or hung: SIGSTOP) is a clear 5xx within the 2 s socket
    timeout; never a hang, and the server answers again once Redis does."""
    import signal
    import time

    from tests.integration.serving.conftest import redis_online_store, start_server

    s = trained.settings
    with redis_online_store(s, "redis-gone") as (redis, env):
        srv = start_server(s, "--model-alias", "champion", env=env)
        try:
            assert post(srv, body_text({"instances": [instance(trained.held_out.iloc[0])]})).status_code == 200
            if kind == "redis-gone":
                redis.terminate()
                redis.wait(timeout=10)
            else:
                redis.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            r = post(srv, body_text({"instances": [instance(trained.held_out.iloc[1])]}))
            assert time.monotonic() - t0 < 5  # the socket timeout is 2 s
            assert r.status_code == 503 and "feature store unavailable" in r.text, r.text
            assert r.headers.get("retry-after") == "1"
            assert httpx.get(f"{srv.url}/metrics", timeout=5).status_code == 200  # the server itself is fine
            if kind == "redis-hung":
                redis.send_signal(signal.SIGCONT)
                r = post(srv, body_text({"instances": [instance(trained.held_out.iloc[2])]}))
                assert r.status_code == 200, r.text
        finally:
            srv.stop()
