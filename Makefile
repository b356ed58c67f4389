# riskloop — every verb is a line or two that calls a tool. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
TEST_WORKERS ?= 2  # pytest-xdist workers for make test (tests that share a session state stay on one)
PY := .venv/bin/python
RISKLOOP := .venv/bin/riskloop
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

help: ## list the verbs
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## create/sync .venv from uv.lock (installs uv if missing)
	@command -v uv >/dev/null || python3 -m pip install -q "uv==$(UV_VERSION)"
	# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on these machines) nothing would ever
	# write .pyc, and every pipeline step and server process would recompile mlflow/feast/kfp (2-5x imports)
	uv sync --frozen --quiet --compile-bytecode

run: setup ## the main job: data, training pipeline twice (champion, then gated challenger); KEEP=1 keeps state
	$(PY) -m riskloop.demo $(if $(KEEP),--keep,)

# services.sh run: starts what is not running (adopting servers an interrupted run left), runs pytest
# with their env, then stops what it started, also on Ctrl-C or TERM (docs/testing.md)
test: setup ## unit + tools + local + integration tests, with real services on loopback
	scripts/services.sh install
	scripts/services.sh run $(PY) -m pytest tests/unit tests/tools tests/local tests/integration -n $(TEST_WORKERS) --durations=25

test-unit: setup ## only the pure unit tests (seconds)
	$(PY) -m pytest tests/unit

test-tools: setup ## the checks that drive helm, kubectl, promtool, shellcheck and the deploy scripts
	$(PY) -m pytest tests/tools

serve: setup ## serve the champion on 127.0.0.1:8080 (after make run)
	$(RISKLOOP) features materialize
	$(RISKLOOP) serve --model-alias champion

lint: setup ## ruff check + format --check, mypy --strict, the layer contract (import-linter, pyproject.toml)
	.venv/bin/ruff check src components pipelines tests benchmarks
	.venv/bin/ruff format --check src components pipelines tests benchmarks
	.venv/bin/mypy --strict src  # src/riskloop/{components,pipelines} link the top-level folders
	.venv/bin/lint-imports

compile: setup ## compile the pipelines to KFP IR YAML under build/pipelines/
	$(RISKLOOP) compile --out build/pipelines

data-ulb: setup ## fetch the public ULB card-fraud set (ODbL) into the state dir
	$(RISKLOOP) data fetch-ulb

bench: setup ## data + feature benchmarks (results in benchmarks/README.md)
	$(PY) benchmarks/bench_data.py

bench-pipeline: setup ## the training pipeline vs the same steps as a bare script
	$(PY) benchmarks/bench_pipeline.py

bench-serving: setup ## load test: riskloop with/without features, MLServer, a bare ASGI ceiling
	scripts/services.sh install
	$(PY) benchmarks/serving/run.py

services-start: ## start Redis, PostgreSQL, Prometheus, Pushgateway on 127.0.0.1
	scripts/services.sh install
	scripts/services.sh start

services-stop: ## stop the test services
	scripts/services.sh stop

image: setup ## build the runtime image <repository>:<version>-<short sha> (needs Docker)
	docker build --build-arg RISKLOOP_GIT_COMMIT="$$(git rev-parse HEAD)" \
	  --build-arg RISKLOOP_IMAGE_REPOSITORY="$$($(RISKLOOP) version --repository)" -t "$$($(RISKLOOP) version --image)" .

deploy: setup ## prerequisites, image, chart, first training run; CLUSTER=kind creates a kind cluster; DRY_RUN=1 renders only
	CLUSTER="$(CLUSTER)" DRY_RUN="$(DRY_RUN)" scripts/deploy.sh up

undeploy: setup ## remove the release (CLUSTER=kind: delete the kind cluster)
	CLUSTER="$(CLUSTER)" scripts/deploy.sh down

test-e2e: setup ## opt-in: deploy to kind, train, canary, promote, roll back (needs Docker, kind, helm)
	$(PY) -m pytest tests/e2e -m e2e -p no:cacheprovider

node-up: ## a real single-node Kubernetes on this machine, as root (the first run builds it: ~5-10 min)
	scripts/node.sh up

node-down: ## stop the node and remove every trace of it (processes, mounts, iptables, netns, cgroups)
	scripts/node.sh down

test-cluster: setup ## node up; the suite on the real node (tests/cluster); node down, also on failure
	# the images are built before pytest: a cold build takes minutes, beyond a test's own timeout
	scripts/node.sh up && scripts/images.sh build && $(PY) -m pytest tests/cluster -p no:cacheprovider --durations=10; \
	  rc=$$?; scripts/node.sh down || rc=1; exit $$rc

clean: ## remove local state and build outputs
	rm -rf .riskloop build

.PHONY: help setup run test test-unit test-tools serve lint compile data-ulb bench bench-pipeline bench-serving services-start services-stop clean image deploy undeploy test-e2e node-up node-down test-cluster
