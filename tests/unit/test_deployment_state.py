"""The deployment record: validation, atomic revisions, and how the router splits by it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from riskloop.data.spec import load_spec
from riskloop.errors import ConfigError
from riskloop.registry.deployment import Deployment, Drill, deployment_path, read_deployment, update_deployment
from riskloop.serving.router import Routes, route_key


def test_record_rules() -> None:
    Deployment(model_name="m", champion_version="1")
    Deployment(model_name="m", champion_version="1", challenger_version="2", canary_percent=30)
    Deployment(model_name="m", champion_version="1", challenger_version="2", mode="shadow")
    with pytest.raises(ValueError, match="need a challenger_version"):
        Deployment(model_name="m", champion_version="1", canary_percent=10)
    with pytest.raises(ValueError, match="both version 1"):
        Deployment(model_name="m", champion_version="1", challenger_version="1")
    with pytest.raises(ValueError, match="canary_percent must be 0"):
        Deployment(model_name="m", champion_version="1", challenger_version="2", mode="shadow", canary_percent=5)
    with pytest.raises(ValueError, match="less than or equal to 100"):
        Deployment(model_name="m", champion_version="1", challenger_version="2", canary_percent=101)
    with pytest.raises(ValueError, match="Extra inputs"):
        Deployment.model_validate({"model_name": "m", "champion_version": "1", "canary": 5})
    with pytest.raises(ValueError):
        Drill(error_rate=1.5)


def test_revisions_increase_under_concurrent_writers(tmp_path: Path) -> None:
    path = deployment_path(tmp_path, "m")
    assert read_deployment(path) is None
    update_deployment(path, lambda cur: Deployment(model_name="m", champion_version="1"))

    def bump() -> None:
        for _ in range(10):
            update_deployment(
                path,
                lambda cur: cur.model_copy(  # type: ignore[union-attr]
                    update={"reason": f"r{cur.revision}"}
                ),
            )  # type: ignore[union-attr]

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = read_deployment(path)
    assert final is not None and final.revision == 41 and final.reason == "r40"
    assert not list(path.parent.glob("*.tmp*"))


def test_a_broken_record_is_a_clear_error_and_is_kept(tmp_path: Path) -> None:
    path = deployment_path(tmp_path, "m")
    path.parent.mkdir(parents=True)
    path.write_text('{"model_name": "m", "champion_version": "1", "canary_percent": 7}')
    with pytest.raises(ConfigError, match="need a challenger_version") as err:
        read_deployment(path)
    assert str(path) in str(err.value) and "fix" in str(err.value)
    with pytest.raises(ConfigError):
        update_deployment(path, lambda cur: Deployment(model_name="m", champion_version="1"))
    assert json.loads(path.read_text())["canary_percent"] == 7  # nothing overwritten


class _Named:
    def __init__(self, role: str) -> None:
        self.role = role


def _routes(**kw: Any) -> Routes:
    d = Deployment(model_name="m", champion_version="1", challenger_version="2", **kw)
    return Routes(d, _Named("champion"), _Named("challenger"))  # type: ignore[arg-type]


def _v1(card: str) -> str:
    return card  # the route key: the first instance's card_id


def test_sticky_split_keeps_a_card_on_one_model_and_matches_the_share() -> None:
    routes = _routes(canary_percent=20, sticky=True)
    picks = [routes.pick(_v1(f"C{i:06d}")).role for i in range(5000)]
    share = picks.count("challenger") / len(picks)
    assert 0.18 < share < 0.22
    assert {routes.pick(_v1("C000042")).role for _ in range(50)} == {routes.pick(_v1("C000042")).role}


def test_random_split_share_and_edges() -> None:
    routes = _routes(canary_percent=30, sticky=False)
    share = sum(routes.pick(_v1("C1")).role == "challenger" for _ in range(5000)) / 5000
    assert 0.27 < share < 0.33
    assert {_routes(canary_percent=0).pick(_v1(f"C{i}")).role for i in range(200)} == {"champion"}
    assert {_routes(canary_percent=100).pick(_v1(f"C{i}")).role for i in range(200)} == {"challenger"}
    assert {_routes(mode="shadow").pick(_v1(f"C{i}")).role for i in range(200)} == {"champion"}


def test_route_key_is_the_first_instances_entity_and_none_for_garbage() -> None:
    fraud, credit = load_spec("synthetic-fraud"), load_spec("german-credit")
    assert route_key(fraud, {"card_id": "C7", "transaction_id": "T1"}) == "C7"
    assert route_key(credit, {"credit_id": "L9"}) == "L9"  # no entity column: its id
    for bad in (None, 5, "x", [], {}, {"card_id": 5}, {"card_id": None}):
        assert route_key(fraud, bad) is None
