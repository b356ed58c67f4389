# shellcheck shell=bash disable=SC2034  # sourced by scripts/images.sh, which reads the CONFIG_* it sets
# Sourced by scripts/images.sh: riskloop.local/postgres:15-bookworm, Debian bookworm's PostgreSQL 15, run
# as helm/riskloop/templates/postgresql.yaml runs the official postgres image. That chart relies on the
# official image's entrypoint (initdb on an empty $PGDATA with POSTGRES_USER, POSTGRES_DB and
# POSTGRES_PASSWORD[_FILE], then the *.sql/*.sh of /docker-entrypoint-initdb.d), so this image has a small
# entrypoint of its own with that behaviour: scripts/images/postgres-entrypoint.sh.

recipe_ref() { echo "$REGISTRY/postgres:15-bookworm"; }
recipe_inputs() { :; }

recipe_build() {
    local root="$1"
    # the package would create and start a "main" cluster; the entrypoint makes the one in $PGDATA instead
    apt_install "$root" postgresql-common
    sed -ri 's/^#?\s*create_main_cluster\s*=.*$/create_main_cluster = false/' "$root/etc/postgresql-common/createcluster.conf"
    grep -q '^create_main_cluster = false' "$root/etc/postgresql-common/createcluster.conf" \
        || die "postgres: could not turn off create_main_cluster"
    # libnss-wrapper: initdb needs a passwd entry for its UID, which an arbitrary runAsUser has not
    apt_install "$root" postgresql-15 libnss-wrapper
    # listen on the pod's address, as the official image does (the chart's Service targets it)
    sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$root/usr/share/postgresql/15/postgresql.conf.sample"
    grep -q "^listen_addresses = '\*'" "$root/usr/share/postgresql/15/postgresql.conf.sample" \
        || die "postgres: could not set listen_addresses in the sample configuration"
    install -m 755 "$RECIPES/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/docker-entrypoint-initdb.d" "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
    # any UID may create its data directory and socket here (the chart mounts volumes over both)
    chmod 1777 "$root/var/lib/postgresql/data"
    chmod 3777 "$root/var/run/postgresql"
    in_root "$root" chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
    CONFIG_USER="$(awk -F: '$1 == "postgres" {print $3 ":" $4}' "$root/etc/passwd")"
    CONFIG_WORKDIR=/
    CONFIG_ENV=(
        "PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        "LANG=C.UTF-8"
        "PGDATA=/var/lib/postgresql/data"
    )
    CONFIG_ENTRYPOINT=(docker-entrypoint.sh)
    CONFIG_CMD=(postgres)
    CONFIG_LABELS=("org.opencontainers.image.description=Debian bookworm postgresql-15 for riskloop's node")
}
