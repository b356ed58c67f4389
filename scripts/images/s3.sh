# shellcheck shell=bash disable=SC2034  # sourced by scripts/images.sh, which reads the CONFIG_* it sets
# Sourced by scripts/images.sh: riskloop.local/s3:moto-<version>, an S3-compatible object store for the
# node: moto's standalone server from tools/s3 (its pyproject.toml and uv.lock, the same store the test
# services run), on Debian bookworm's python3.11. Chosen over building SeaweedFS from the Go module proxy:
# it is the store the suite already tests against, it installs from locked wheels in seconds, and the
# 2-core machine's build time goes to Kubernetes. Its state is in memory: a restarted pod starts empty.
#
#   moto_server -H 0.0.0.0 -p 9000   (the default command; the pod's address, port 9000 as MinIO's)

recipe_ref() {
    local v
    v="$(awk '/^name = "moto"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$REPO_ROOT/tools/s3/uv.lock")"
    [[ -n "$v" ]] || die "s3: no moto version in tools/s3/uv.lock"
    echo "$REGISTRY/s3:moto-$v"
}

recipe_inputs() { repo_files tools/s3/pyproject.toml tools/s3/uv.lock; }

recipe_build() {
    local root="$1"
    python_runtime "$root"
    with_uv "$root"
    copy_repo_files "$root/tmp/src" tools/s3/pyproject.toml tools/s3/uv.lock
    in_root "$root" /bin/sh -c 'cd /tmp/src/tools/s3 && UV_PYTHON=/usr/bin/python3.11 UV_LINK_MODE=copy \
        UV_CACHE_DIR=/var/cache/uv-host UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/s3/venv \
        uv sync --frozen --no-dev --compile-bytecode --quiet'
    [[ -x "$root/opt/s3/venv/bin/moto_server" ]] || die "s3: moto_server is missing from the environment"
    in_root "$root" groupadd --gid 10001 s3
    in_root "$root" useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin s3
    CONFIG_USER="10001:10001"
    CONFIG_WORKDIR=/
    CONFIG_ENV=(
        "PATH=/opt/s3/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        "LANG=C.UTF-8"
        "PYTHONDONTWRITEBYTECODE=1"
        "PYTHONUNBUFFERED=1"
    )
    CONFIG_ENTRYPOINT=(moto_server)
    CONFIG_CMD=(-H 0.0.0.0 -p 9000)
    CONFIG_LABELS=("org.opencontainers.image.description=moto's S3 server (tools/s3/uv.lock) for riskloop's node")
}
