# shellcheck shell=bash disable=SC2034  # sourced by scripts/images.sh, which reads the CONFIG_* it sets
# Sourced by scripts/images.sh: riskloop.local/redis:7-bookworm, Debian bookworm's redis-server 7, run as
# helm/riskloop/templates/redis.yaml runs the official image: args ["redis-server", options...] after the
# image's entrypoint, any non-root UID, /data an emptyDir, readiness `redis-cli ping`.

recipe_ref() { echo "$REGISTRY/redis:7-bookworm"; }
recipe_inputs() { :; }

recipe_build() {
    local root="$1"
    apt_install "$root" redis-server
    install -m 755 "$RECIPES/redis-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/data"
    chmod 1777 "$root/data"
    # the package's config and state are for a system service, not for this image (started with options)
    rm -rf "$root/var/lib/redis" "$root/var/log/redis"
    CONFIG_USER="$(awk -F: '$1 == "redis" {print $3 ":" $4}' "$root/etc/passwd")"
    CONFIG_WORKDIR=/data
    CONFIG_ENV=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    CONFIG_ENTRYPOINT=(docker-entrypoint.sh)
    CONFIG_CMD=(redis-server)
    CONFIG_LABELS=("org.opencontainers.image.description=Debian bookworm redis-server for riskloop's node")
}
