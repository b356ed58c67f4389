# shellcheck shell=bash disable=SC2034  # sourced by scripts/images.sh, which reads the CONFIG_* it sets
# Sourced by scripts/images.sh: riskloop.local/riskloop:<riskloop version --tag>, from the Dockerfile's
# inputs and steps: Debian bookworm's python3.11 (the Dockerfile's python:3.11-slim-bookworm is the same
# Debian release with its own CPython build), uv.lock installed into /opt/riskloop/venv by
# scripts/install.sh, the pipelines compiled into /opt/riskloop/pipelines naming this image, the Feast
# repo under /opt/riskloop/feature_repo, user 10001:10001 with home /home/riskloop, the Dockerfile's ENV,
# WORKDIR, USER, CMD and labels.

RISKLOOP_REPOSITORY="$REGISTRY/riskloop"

# read once: the tag, the cache key and the baked-in commit must agree even if HEAD moves during a build.
# RISKLOOP_GIT_COMMIT (the Dockerfile's build argument) pins it across several calls, e.g. build, import
# and list in a tree where others commit meanwhile.
RISKLOOP_COMMIT="${RISKLOOP_GIT_COMMIT:-$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || true)}"
if [[ -n "${RISKLOOP_GIT_COMMIT:-}" && ! "$RISKLOOP_GIT_COMMIT" =~ ^[0-9a-f]{40}$ ]]; then
    die "riskloop: RISKLOOP_GIT_COMMIT=$RISKLOOP_GIT_COMMIT is not a full commit id; use RISKLOOP_GIT_COMMIT=\$(git rev-parse HEAD)"
fi
riskloop_commit() {
    [[ -n "$RISKLOOP_COMMIT" ]] || die "riskloop: not a git checkout (the image tag is <version>-<short sha>)"
    echo "$RISKLOOP_COMMIT"
}

# the tag as `riskloop version --tag` gives it for this commit (once: it imports riskloop)
[[ -x "$REPO_ROOT/.venv/bin/riskloop" ]] \
    || die "riskloop: .venv is missing: run make setup first (the tag comes from riskloop version --tag)"
RISKLOOP_TAG="$(RISKLOOP_IMAGE_REPOSITORY="$RISKLOOP_REPOSITORY" RISKLOOP_GIT_COMMIT="$(riskloop_commit)" \
    "$REPO_ROOT/.venv/bin/riskloop" version --tag)" || die "riskloop: riskloop version --tag failed"

recipe_ref() { echo "$RISKLOOP_REPOSITORY:$RISKLOOP_TAG"; }

# what the Dockerfile copies into the build, plus the Feast repo and the commit the pipelines name
recipe_inputs() {
    repo_files pyproject.toml uv.lock README.md scripts/install.sh src components pipelines feature_repo
}

recipe_build() {
    local root="$1" commit
    commit="$(riskloop_commit)"
    # as `docker build` does, the working tree is built; the tag names HEAD, so say when they differ
    local dirty
    dirty="$(git -C "$REPO_ROOT" status --porcelain -- pyproject.toml uv.lock README.md scripts/install.sh src \
        components pipelines feature_repo | wc -l)"
    if [[ "$dirty" != 0 ]]; then
        log "riskloop: warning: $dirty input file(s) differ from HEAD ${commit:0:7}; the image carries the working tree"
    fi
    python_runtime "$root"
    with_uv "$root"
    copy_repo_files "$root/tmp/src" pyproject.toml uv.lock README.md scripts/install.sh src components pipelines
    # the Dockerfile's build stage: UV_PYTHON, UV_LINK_MODE=copy, the uv cache mounted (here: the host's)
    in_root "$root" /bin/sh -c 'cd /tmp/src && export UV_PYTHON=/usr/bin/python3.11 UV_LINK_MODE=copy UV_CACHE_DIR=/var/cache/uv-host \
        && scripts/install.sh /opt/riskloop/venv'
    in_root "$root" /usr/bin/env RISKLOOP_GIT_COMMIT="$commit" RISKLOOP_IMAGE_REPOSITORY="$RISKLOOP_REPOSITORY" \
        /opt/riskloop/venv/bin/riskloop compile --out /opt/riskloop/pipelines >&2
    copy_repo_files "$root/opt/riskloop" feature_repo
    in_root "$root" groupadd --gid 10001 riskloop
    in_root "$root" useradd --uid 10001 --gid 10001 --create-home --home-dir /home/riskloop \
        --shell /usr/sbin/nologin riskloop
    CONFIG_USER="10001:10001"
    CONFIG_WORKDIR=/home/riskloop
    CONFIG_ENV=(
        "PATH=/opt/riskloop/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        "LANG=C.UTF-8"
        "RISKLOOP_GIT_COMMIT=$commit"
        "RISKLOOP_IMAGE_REPOSITORY=$RISKLOOP_REPOSITORY"
        "PYTHONDONTWRITEBYTECODE=1"
        "PYTHONUNBUFFERED=1"
        "DO_NOT_TRACK=1"
        "MLFLOW_DISABLE_TELEMETRY=true"
    )
    CONFIG_CMD=(riskloop --help)
    CONFIG_LABELS=(
        "org.opencontainers.image.source=https://github.com/riskloop/riskloop"
        "org.opencontainers.image.revision=$commit"
        "org.opencontainers.image.licenses=Apache-2.0"
    )
}
