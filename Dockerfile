# syntax=docker/dockerfile:1.7
# THE riskloop runtime image: every KFP component, the predictor and the chart's Jobs run on it.
#
#   make image     (= docker build --build-arg RISKLOOP_GIT_COMMIT=$(git rev-parse HEAD)
#                                  -t $(riskloop version --image) .)
#
# Two stages: `build` has uv and installs uv.lock through scripts/install.sh (the same
# script tests/integration/test_install.py runs in a clean venv); `runtime` gets only
# the finished venv and the compiled pipelines. Nothing here compiles C: every locked
# dependency ships a wheel except kfp-server-api, a pure-Python sdist.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON=/usr/local/bin/python3.11 UV_LINK_MODE=copy
WORKDIR /src
# dependencies alone first: this layer is rebuilt only when the lock changes
COPY pyproject.toml uv.lock README.md ./
COPY scripts/install.sh scripts/install.sh
RUN --mount=type=cache,target=/root/.cache/uv scripts/install.sh /opt/riskloop/venv --deps-only
COPY src src
COPY components components
COPY pipelines pipelines
RUN --mount=type=cache,target=/root/.cache/uv scripts/install.sh /opt/riskloop/venv
ARG RISKLOOP_GIT_COMMIT
ARG RISKLOOP_IMAGE_REPOSITORY=ghcr.io/riskloop/riskloop
# the compiled pipelines name this image (repository:version-sha) as every step's image;
# the chart's publish Job uploads them from /opt/riskloop/pipelines
RUN test -n "${RISKLOOP_GIT_COMMIT}" \
      || { echo "build with --build-arg RISKLOOP_GIT_COMMIT=\$(git rev-parse HEAD) (make image does)" >&2; exit 1; } \
    && /opt/riskloop/venv/bin/riskloop compile --out /opt/riskloop/pipelines

FROM ${PYTHON_IMAGE} AS runtime
ARG RISKLOOP_GIT_COMMIT
ARG RISKLOOP_IMAGE_REPOSITORY=ghcr.io/riskloop/riskloop
LABEL org.opencontainers.image.source="https://github.com/riskloop/riskloop" \
      org.opencontainers.image.revision="${RISKLOOP_GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 riskloop \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/riskloop --shell /usr/sbin/nologin riskloop
COPY --from=build /opt/riskloop /opt/riskloop
# the Feast repo as `feast apply` expects it, for the chart's feature server
COPY feature_repo /opt/riskloop/feature_repo
ENV PATH=/opt/riskloop/venv/bin:${PATH} \
    RISKLOOP_GIT_COMMIT=${RISKLOOP_GIT_COMMIT} \
    RISKLOOP_IMAGE_REPOSITORY=${RISKLOOP_IMAGE_REPOSITORY} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /home/riskloop
# numeric, so Pod Security `restricted` (runAsNonRoot) can verify it without /etc/passwd
USER 10001:10001
# KFP sets each step's command (python3 -m kfp.dsl.executor_main, found on PATH in the venv);
# the InferenceService sets the predictor's (python -m riskloop.serving --model-dir /mnt/models ...)
CMD ["riskloop", "--help"]
