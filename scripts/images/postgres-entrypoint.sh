#!/bin/bash
# The entrypoint of riskloop.local/postgres (scripts/images/postgres.sh): the part of the official postgres
# image's contract that riskloop's chart relies on, written for Debian's postgresql-15.
#   POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE   the superuser's password (required on first start,
#                                                 unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER (postgres), POSTGRES_DB (= user) the superuser and the database created on first start
#   PGDATA                                        the data directory; initialised when it has no PG_VERSION
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (scram-sha-256)
#   /docker-entrypoint-initdb.d/*.sql|*.sql.gz|*.sh   run once, in name order, after initdb
# Runs as any non-root UID (initdb gets a passwd entry from nss_wrapper); as root it drops to postgres.
# Arguments: `postgres [options]` (the default) or options alone start the server; anything else is run.
set -Eeuo pipefail

fail() { echo "docker-entrypoint.sh: error: $*" >&2; exit 1; }

if [[ "${1:0:1}" == - ]]; then set -- postgres "$@"; fi
[[ "${1:-}" == postgres ]] || exec "$@"

: "${PGDATA:?PGDATA must be set}"
if [[ "$(id -u)" == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
    [[ -z "${POSTGRES_PASSWORD:-}" ]] || fail "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, not both"
    [[ -r "$POSTGRES_PASSWORD_FILE" ]] || fail "POSTGRES_PASSWORD_FILE=$POSTGRES_PASSWORD_FILE cannot be read"
    POSTGRES_PASSWORD="$(< "$POSTGRES_PASSWORD_FILE")"
fi
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

mkdir -p "$PGDATA"
chmod 700 "$PGDATA" 2>/dev/null || :

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    [[ -n "${POSTGRES_PASSWORD:-}" || "$auth" == trust ]] \
        || fail "the database is uninitialised and no superuser password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (or POSTGRES_HOST_AUTH_METHOD=trust, not for anything that matters)"
    # initdb looks its user up; an arbitrary runAsUser has no passwd entry: give it one for initdb only
    if ! getent passwd "$(id -u)" >/dev/null; then
        NSS_WRAPPER_PASSWD="$(mktemp)" NSS_WRAPPER_GROUP="$(mktemp)"
        echo "postgres:x:$(id -u):$(id -g):PostgreSQL:$PGDATA:/bin/false" > "$NSS_WRAPPER_PASSWD"
        echo "postgres:x:$(id -g):" > "$NSS_WRAPPER_GROUP"
        export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD=libnss_wrapper.so
    fi
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        ${POSTGRES_INITDB_ARGS:-}
    unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    # initdb trusts local connections; every other host authenticates
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

    # a server on the socket only, for the first-start scripts
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --no-password)
    if [[ "$POSTGRES_DB" != postgres ]]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        # shellcheck disable=SC1090  # the init scripts are the user's
        case "$f" in
            *.sh) echo "docker-entrypoint.sh: running $f" >&2; . "$f" ;;
            *.sql) echo "docker-entrypoint.sh: running $f" >&2; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "docker-entrypoint.sh: running $f" >&2; gzip -dc "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
            *) echo "docker-entrypoint.sh: ignoring $f" >&2 ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "docker-entrypoint.sh: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)" >&2
fi

exec "$@"
