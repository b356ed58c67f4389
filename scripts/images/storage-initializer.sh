# shellcheck shell=bash disable=SC2034  # sourced by scripts/images.sh, which reads the CONFIG_* it sets
# Sourced by scripts/images.sh: riskloop.local/kserve-storage-initializer:v0.21.0, shaped as KServe's own
# storage-initializer image (python/storage-initializer.Dockerfile at v0.21.0): a venv at /prod_venv with
# PyPI's kserve-storage==0.21.0 (locked in scripts/images/storage-initializer/), the entrypoint
# /storage-initializer/scripts/initializer-entrypoint taking `<src uri> <dest dir>` pairs (the arguments
# KServe's injector passes, e.g. s3://bucket/model /mnt/models), WORKDIR /work, USER 1000.

recipe_ref() {
    local v
    v="$(awk '/^name = "kserve-storage"$/ { getline; gsub(/"/, "", $3); print $3; exit }' \
        "$RECIPES/storage-initializer/uv.lock")"
    [[ -n "$v" ]] || die "storage-initializer: no kserve-storage version in scripts/images/storage-initializer/uv.lock"
    echo "$REGISTRY/kserve-storage-initializer:v$v"
}

recipe_inputs() { repo_files scripts/images/storage-initializer; }

recipe_build() {
    local root="$1"
    python_runtime "$root"
    with_uv "$root"
    copy_repo_files "$root/tmp/src" scripts/images/storage-initializer/pyproject.toml scripts/images/storage-initializer/uv.lock
    in_root "$root" /bin/sh -c 'cd /tmp/src/scripts/images/storage-initializer && UV_PYTHON=/usr/bin/python3.11 \
        UV_LINK_MODE=copy UV_CACHE_DIR=/var/cache/uv-host UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/prod_venv \
        uv sync --frozen --no-dev --compile-bytecode --quiet'
    mkdir -p "$root/storage-initializer/scripts" "$root/work"
    install -m 755 "$RECIPES/storage-initializer/initializer-entrypoint" "$root/storage-initializer/scripts/initializer-entrypoint"
    in_root "$root" useradd --uid 1000 --create-home --home-dir /home/kserve --shell /usr/sbin/nologin kserve
    CONFIG_USER="1000"
    CONFIG_WORKDIR=/work
    CONFIG_ENV=(
        "PATH=/prod_venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        "VIRTUAL_ENV=/prod_venv"
        "LANG=C.UTF-8"
        "PYTHONDONTWRITEBYTECODE=1"
        "PYTHONUNBUFFERED=1"
    )
    CONFIG_ENTRYPOINT=(/storage-initializer/scripts/initializer-entrypoint)
    CONFIG_LABELS=("org.opencontainers.image.description=KServe's storage initializer (kserve-storage from PyPI) for riskloop's node")
}
