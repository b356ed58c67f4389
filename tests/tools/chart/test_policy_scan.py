"""checkov over the rendered chart finds nothing, and every skip is a justified, conditional annotation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.tools.chart.chart import ROOT

SCRIPT = ROOT / "scripts" / "policy-scan.sh"
CHECKOV = ROOT / "tools" / "checkov" / ".venv" / "bin" / "checkov"
MAX_SKIPPED_CHECKS = 5  # issue 7: zero failed checks with at most 5 justified skips


def test_policy_scan_passes() -> None:
    if not CHECKOV.exists() and shutil.which("uv") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("checkov is missing and uv is not on PATH to create tools/checkov/.venv")
        pytest.skip("checkov is missing and uv is not on PATH to create it")
    result = subprocess.run([str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", output)
    assert summary, f"no checkov summary (exit {result.returncode}):\n{output[-4000:]}"
    passed, failed, _ = map(int, summary.groups())
    assert failed == 0 and result.returncode == 0, output[-8000:]
    assert passed > 500, f"checkov ran only {passed} checks: did it find the rendered objects?\n{output[-2000:]}"


def test_skips_are_few_and_justified(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    skipped: dict[str, set[str]] = {}
    for objs in objects_by_set.values():
        for o in objs:
            for key, value in (o["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_K8S_\d+", check), value
                    assert len(reason) > 20, f"{o['kind']}/{o['metadata']['name']}: {value} gives no reason"
                    skipped.setdefault(check, set()).add(reason)
    assert len(skipped) <= MAX_SKIPPED_CHECKS, sorted(skipped)
    # Each skip applies only where its reason holds: with digests and pull policy Always, none is rendered.
    from tests.tools.chart.chart import render_objects

    pinned = {"digest": "sha256:" + "0" * 64, "pullPolicy": "Always"}
    objs = render_objects({"image": pinned, "postgresql": {"image": pinned}, "redis": {"image": pinned}})
    assert not [
        o for o in objs if any(k.startswith("checkov.io/skip") for k in (o["metadata"].get("annotations") or {}))
    ]
