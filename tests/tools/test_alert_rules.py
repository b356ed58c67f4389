"""The alerting rules: promtool's check and unit tests, the PrometheusRule that wraps them, house rules per alert.

The rules live in ``helm/riskloop/files/monitoring/riskloop-alerts.rules.yaml`` (plain
Prometheus format, the source); ``riskloop-alerts.prometheusrule.yaml`` beside it is
generated from it by :func:`prometheus_rule`. Regenerate it after editing the rules with
``RISKLOOP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/tools/test_alert_rules.py`` and review the diff.

promtool comes with Debian's ``prometheus`` package (``scripts/services.sh install``).
Without it the promtool tests skip on a developer's machine and fail under ``CI=true``,
as the service fixtures in ``tests/services.py`` do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import REPO_ROOT, _unavailable

MONITORING_DIR = REPO_ROOT / "helm" / "riskloop" / "files" / "monitoring"
RULES = MONITORING_DIR / "riskloop-alerts.rules.yaml"
RULE_TESTS = (MONITORING_DIR / "riskloop-alerts.test.yaml", MONITORING_DIR / "riskloop-alerts.daily.test.yaml")
PROMETHEUS_RULE = MONITORING_DIR / "riskloop-alerts.prometheusrule.yaml"
SEVERITIES = {"critical", "warning"}
PROMTOOL_TIMEOUT_SECONDS = 120

_MANIFEST_HEADER = """\
# Generated from riskloop-alerts.rules.yaml by prometheus_rule() in tests/tools/test_alert_rules.py;
# do not edit: edit the rules file, then run
# RISKLOOP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/tools/test_alert_rules.py
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: riskloop-alerts
  labels:
    app.kubernetes.io/name: riskloop
    app.kubernetes.io/component: monitoring
    app.kubernetes.io/part-of: riskloop
spec:
"""


def prometheus_rule(rules_text: str) -> str:
    """The plain rule file ``rules_text`` as a PrometheusRule manifest (monitoring.coreos.com/v1).

    The file's leading comment block is dropped (it describes the file, not the rules);
    everything from ``groups:`` on is indented under ``spec:`` byte for byte, comments
    included, so the operator loads exactly what promtool checked.
    """
    start = re.search(r"^groups:", rules_text, flags=re.MULTILINE)
    if start is None:
        raise ValueError("the rule file has no top-level 'groups:'")
    body = rules_text[start.start() :]
    indented = "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))
    return _MANIFEST_HEADER + indented


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        _unavailable(
            "promtool is not on PATH; it comes with Debian's prometheus package: run scripts/services.sh install"
        )
    return path


def _run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_SECONDS, check=False
    )


def test_promtool_checks_the_rules(promtool: str) -> None:
    r = _run(promtool, "check", "rules", str(RULES), cwd=MONITORING_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in r.stdout, r.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    r = _run(promtool, "test", "rules", *(p.name for p in RULE_TESTS), cwd=MONITORING_DIR)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path) -> None:
    """The unit tests are not vacuous: drift share "at least 0.3" turned into "above 0.3" fails them."""
    rules = RULES.read_text(encoding="utf-8")
    assert rules.count("(riskloop_drift_share_ratio) >= 0.3") == 1
    (tmp_path / RULES.name).write_text(
        rules.replace("(riskloop_drift_share_ratio) >= 0.3", "(riskloop_drift_share_ratio) > 0.3"), encoding="utf-8"
    )
    shutil.copy(RULE_TESTS[0], tmp_path)
    r = _run(promtool, "test", "rules", RULE_TESTS[0].name, cwd=tmp_path)
    assert r.returncode != 0 and "RiskloopDriftHigh" in r.stdout + r.stderr, r.stdout + r.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = _load(path)
        assert doc["rule_files"] == [RULES.name], path
        for case in doc["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_has_severity_summary_description_and_a_wait() -> None:
    alerts = _alerts()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"Riskloop[A-Z][A-Za-z0-9]+", name), name
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description"} <= set(alert["annotations"]), name
        assert all(alert["annotations"][k].strip() for k in ("summary", "description")), name
        assert re.fullmatch(r"\d+[mh]", alert.get("for", "")), f"{name}: a `for:` in minutes or hours"
        assert "riskloop_" in alert["expr"], name


def test_prometheus_rule_wraps_the_rules_unchanged() -> None:
    rules_text = RULES.read_text(encoding="utf-8")
    text = prometheus_rule(rules_text)
    if os.environ.get("RISKLOOP_UPDATE_GOLDEN") == "1":
        PROMETHEUS_RULE.write_text(text, encoding="utf-8")
        pytest.skip(f"regenerated {PROMETHEUS_RULE.name}; review its diff before committing")
    if not PROMETHEUS_RULE.is_file():
        pytest.fail(f"{PROMETHEUS_RULE} is missing; create it with RISKLOOP_UPDATE_GOLDEN=1")
    assert PROMETHEUS_RULE.read_text(encoding="utf-8") == text, (
        f"{PROMETHEUS_RULE.name} is not generated from {RULES.name}: rerun with RISKLOOP_UPDATE_GOLDEN=1 "
        "and review the diff"
    )
    manifest = yaml.safe_load(text)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1" and manifest["kind"] == "PrometheusRule"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    assert manifest["spec"] == yaml.safe_load(rules_text)


def test_prometheus_rule_rejects_a_file_without_groups() -> None:
    with pytest.raises(ValueError, match="groups"):
        prometheus_rule("# nothing here\n")
