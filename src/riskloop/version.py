"""One version, one image, everywhere: ``<package version>-<short git sha>``.

The image tag drives the components' base image, the compiled pipelines, the
chart's default and the MLflow lineage tags. Inside the image the commit is
baked in as ``RISKLOOP_GIT_COMMIT``; in a checkout it is read from git.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from riskloop import __version__

IMAGE_REPOSITORY = os.environ.get("RISKLOOP_IMAGE_REPOSITORY", "ghcr.io/riskloop/riskloop")


@functools.cache
def git_commit() -> str:
    """The full commit the code comes from ('unknown' outside git and without the env var)."""
    baked = os.environ.get("RISKLOOP_GIT_COMMIT")
    if baked:
        return baked
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def image_tag() -> str:
    return f"{__version__}-{git_commit()[:7]}"


def runtime_image() -> str:
    """The project image every component and the predictor run on."""
    return os.environ.get("RISKLOOP_IMAGE") or f"{IMAGE_REPOSITORY}:{image_tag()}"
