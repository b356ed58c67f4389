"""The image's install path, run here: scripts/install.sh into a clean venv, then every entrypoint.

No container engine runs on this machine, so this is how the Dockerfile is checked: its
build stage runs exactly these two install.sh calls, and its final stage is that venv
plus the compiled pipelines. The venv is built from uv's shared cache offline (make setup
filled it), so nothing is resolved or downloaded; most of the ~35-70 s is bytecode
compilation, which the image needs too.

Everything runs with the working directory outside the checkout, so imports come from
the installed wheel, never from the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what `make image` bakes in as RISKLOOP_GIT_COMMIT
REPOSITORY = "registry.example/riskloop"


def modules(package: str) -> list[str]:
    return sorted(f"riskloop.{package}.{p.stem}" for p in (REPO / package).glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("uv") is None:
        pytest.fail("uv is not on PATH: `make setup` installs it; the image's install path cannot be checked")
    target = tmp_path_factory.mktemp("image") / "venv"
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON": sys._base_executable}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    for args in (["--deps-only"], []):  # the Dockerfile's two layers, in order
        r = subprocess.run(
            [str(REPO / "scripts/install.sh"), str(target), *args], capture_output=True, text=True, env=env, timeout=600
        )
        assert r.returncode == 0, f"install.sh {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    print(f"clean install: {time.monotonic() - started:.0f} s")
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def in_image(venv: Path, *cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command as the image would: the venv first on PATH, the commit baked in, no source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "RISKLOOP_IMAGE")}
    env |= {
        "PATH": f"{venv / 'bin'}:{env['PATH']}",
        "RISKLOOP_GIT_COMMIT": COMMIT,
        "RISKLOOP_IMAGE_REPOSITORY": REPOSITORY,
        "RISKLOOP_STATE_DIR": str(cwd / "state"),
        "COLUMNS": "200",
    }
    r = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def test_every_entrypoint_imports_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    names = [
        "riskloop.cli",
        "riskloop.serving.__main__",
        "riskloop.serving.server",
        "riskloop.components",
        "riskloop.pipelines",
        "boto3",  # boto3: MLflow on S3
        *modules("components"),
        *modules("pipelines"),
    ]
    assert "riskloop.components.training" in names and "riskloop.pipelines.monitoring" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    mod = importlib.import_module(name)\n"
        f"    assert mod.__file__.startswith({str(venv)!r}), (name, mod.__file__)\n"
        "print('imported', len(sys.modules))"
    )
    assert "imported" in in_image(venv, "python", "-c", code, cwd=tmp_path).stdout
    assert "riskloop" in in_image(venv, "riskloop", "--help", cwd=tmp_path).stdout
    # the dev group stays out of the image
    missing = in_image(
        venv,
        "python",
        "-c",
        "import importlib.util as u; print([m for m in ('pytest', 'ruff', "
        "'hypothesis', 'helm_python') if u.find_spec(m)])",
        cwd=tmp_path,
    ).stdout.strip()
    assert missing == "[]"
    # the wheel installs one import name: riskloop (components/ and pipelines/ land inside it)
    top_level = in_image(
        venv,
        "python",
        "-c",
        "import importlib.util as u; print([m for m in ('components', 'pipelines') if u.find_spec(m)])",
        cwd=tmp_path,
    ).stdout.strip()
    assert top_level == "[]"


def test_image_tag_components_and_compiled_pipelines_agree(venv: Path, tmp_path: Path) -> None:
    tag = in_image(venv, "riskloop", "version", "--tag", cwd=tmp_path).stdout.strip()
    image = in_image(venv, "riskloop", "version", "--image", cwd=tmp_path).stdout.strip()
    from riskloop import __version__

    assert tag == f"{__version__}-{COMMIT[:7]}" and image == f"{REPOSITORY}:{tag}"
    constant = in_image(
        venv, "python", "-c", "import riskloop.components as c; print(c.RUNTIME_IMAGE)", cwd=tmp_path
    ).stdout.strip()
    assert constant == image
    in_image(venv, "riskloop", "compile", "--out", str(tmp_path / "pipelines"), cwd=tmp_path)
    compiled = sorted((tmp_path / "pipelines").glob("*.yaml"))
    assert {p.stem for p in compiled} == {"training", "features", "batch_scoring", "delivery", "monitoring", "retrain"}
    for path in compiled:
        ir = next(yaml.safe_load_all(path.read_text()))
        images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
        assert images == {image}, path.name
