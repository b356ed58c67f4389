"""The Dockerfile's structure, read as text (no container engine here).

What the build stage installs is checked by running the same script in
tests/integration/test_install.py; this checks what that test cannot see: the
stages, the user, what the final stage contains, and that the build context
(.dockerignore) holds everything the Dockerfile copies.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "clang", "cargo", "rustc", "uv", "pip install", "git")


def stages(text: str) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, list[str]] = {}
    current = "(preamble)"
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = line.split(" AS ")[-1].strip() if " AS " in line else line
        out.setdefault(current, []).append(line)
    return out


def test_two_stages_non_root_no_build_tools_in_runtime() -> None:
    s = stages((REPO / "Dockerfile").read_text())
    assert list(s)[-1] == "runtime" and "build" in s
    build, runtime = s["build"], s["runtime"]
    assert sum("scripts/install.sh /opt/riskloop/venv" in i for i in build) == 2  # deps layer, then the project
    assert any("riskloop compile --out /opt/riskloop/pipelines" in i for i in build)
    copies = [i for i in runtime if i.startswith("COPY")]
    assert "COPY --from=build /opt/riskloop /opt/riskloop" in copies
    assert all("--from=uv" not in i for i in runtime)
    for instruction in runtime:
        if instruction.startswith("RUN"):
            assert not any(re.search(rf"\b{re.escape(tool)}\b", instruction) for tool in BUILD_TOOLS), instruction
    users = [i for i in runtime if i.startswith("USER")]
    assert users == ["USER 10001:10001"], users  # numeric, so runAsNonRoot can check it
    env = " ".join(i for i in runtime if i.startswith("ENV"))
    assert "PATH=/opt/riskloop/venv/bin:" in env and "RISKLOOP_GIT_COMMIT=${RISKLOOP_GIT_COMMIT}" in env
    assert "ARG RISKLOOP_GIT_COMMIT" in runtime and "ARG RISKLOOP_GIT_COMMIT" in build
    # both stages on the same base: the venv's interpreter link must resolve in the final stage
    assert s["build"][0] == "FROM ${PYTHON_IMAGE} AS build" and s["runtime"][0] == "FROM ${PYTHON_IMAGE} AS runtime"
    pins = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", (REPO / "Dockerfile").read_text(), re.M))
    assert set(pins) == {"PYTHON_IMAGE", "UV_IMAGE"}
    assert all(re.search(r":\d+\.\d+\.\d+", ref) for ref in pins.values()), pins  # exact versions, no latest


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    copied = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(line.split()[1:-1])
    assert copied >= {
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "scripts/install.sh",
        "src",
        "components",
        "pipelines",
        "feature_repo",
    }
    allowed = {
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    assert copied <= allowed, copied - allowed
    for path in copied:
        assert (REPO / path).exists(), path


def test_make_image_tags_with_riskloop_version() -> None:
    r = subprocess.run(
        ["make", "-n", "image"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert r.returncode == 0, r.stderr
    cmd = r.stdout
    assert "docker build" in cmd and "version --image" in cmd and "RISKLOOP_GIT_COMMIT=" in cmd
