#!/usr/bin/env bash
# Real test services on loopback: Redis, PostgreSQL, Prometheus, Pushgateway, and an S3-compatible
# object store (moto's server, from the locked tool environment tools/s3; see its pyproject.toml).
#
#   scripts/services.sh install   install missing Debian packages (as root), else only check
#   scripts/services.sh start     start what is not running, wait until each answers,
#                                 write .riskloop/services/env
#   scripts/services.sh stop [NAME...]  stop what start started (all, or the named ones);
#                                 never fails if already stopped
#   scripts/services.sh status    one line per service; exit 3 if any is down
#   scripts/services.sh run CMD   start, run CMD with the env loaded, then stop what this run started,
#                                 also when CMD fails or INT/TERM arrives (forwarded to CMD first)
#
# A server that start finds on its own port, running our command line, is one an earlier start
# left behind (its run interrupted, or its pid file removed with .riskloop): start adopts it
# (writes its pid file) instead of failing on the busy port.
#
# Everything binds 127.0.0.1 on fixed non-default ports, so a developer's own
# servers on the default ports are never touched. State and logs live under
# .riskloop/services/<name>/ of this repository (PostgreSQL may live elsewhere,
# see pg_dir_for). The start timeout is RISKLOOP_SERVICES_TIMEOUT_SECONDS (30).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$REPO_ROOT/.riskloop/services"
ENV_FILE="$STATE_DIR/env"
HOST=127.0.0.1
REDIS_PORT=6399
PG_PORT=55432
PROM_PORT=9099
PUSH_PORT=9098
S3_PORT=9097
# the object store's fixed test credentials and the bucket tests use (created at start)
S3_KEY=riskloop-test
S3_SECRET=riskloop-test-secret
S3_BUCKET=riskloop-test
PG_USER=postgres
TIMEOUT_SECONDS="${RISKLOOP_SERVICES_TIMEOUT_SECONDS:-30}"
SERVICES=(redis postgres prometheus pushgateway s3)

# Other project tools (benchmarks, lint) need wrk, hey and shellcheck: installed in
# the same apt step so CI pays for one `apt-get update`.
APT_PACKAGES=(redis-server postgresql prometheus prometheus-pushgateway wrk hey shellcheck curl)

log() { printf '%s\n' "$*"; }
die() { printf 'services.sh: %s\n' "$*" >&2; exit 1; }

pg_bin_dir() {
    local dir
    dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then
        printf '%s\n' "$dir"
    fi
}

# Prints the package of every missing tool, one per line; with "all" also
# the tools that other project scripts need (wrk, shellcheck).
missing_packages() {
    local -A tool_package=(
        [redis-server]=redis-server [redis-cli]=redis-server
        [prometheus]=prometheus [prometheus-pushgateway]=prometheus-pushgateway
        [curl]=curl [psql]=postgresql
    )
    if [[ "${1:-}" == all ]]; then
        tool_package[wrk]=wrk
        tool_package[hey]=hey
        tool_package[shellcheck]=shellcheck
    fi
    local tool
    for tool in "${!tool_package[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || printf '%s\n' "${tool_package[$tool]}"
    done
    [[ -n "$(pg_bin_dir)" ]] || printf '%s\n' postgresql
}

cmd_install() {
    local missing
    missing="$(missing_packages all | sort -u | tr '\n' ' ')"
    if [[ -z "${missing// /}" ]]; then
        log "all packages present: ${APT_PACKAGES[*]}"
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        die "missing packages: $missing- run as root: apt-get install ${APT_PACKAGES[*]}"
    fi
    log "installing: ${APT_PACKAGES[*]} (missing: $missing)"
    # No service starts during the install: containers have no init system and
    # Debian's policy-rc.d refuses starts; our servers are started by `start`.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    missing="$(missing_packages all | sort -u | tr '\n' ' ')"
    [[ -z "${missing// /}" ]] || die "still missing after apt-get install: $missing"
    log "installed: ${APT_PACKAGES[*]}"
}

require_binaries() {
    local missing
    missing="$(missing_packages | sort -u | tr '\n' ' ')"
    [[ -z "${missing// /}" ]] || die "missing packages: $missing- run scripts/services.sh install"
}

# The pid listening on loopback port $1, if any (needs ss from iproute2; none without it).
listener_pid() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}

# A server we started earlier but whose pid file is gone or stale (an interrupted run, `make clean`):
# if the listener on port $3 runs command $2 (e.g. redis-server), its pid goes into pidfile $1 and
# start adopts it. A listener running anything else is a foreign server: start stops with its name.
adopt_listener() {
    local pidfile="$1" expected="$2" port="$3" pid
    pid="$(listener_pid "$port")"
    [[ -n "$pid" ]] || return 1
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expected"; then
        printf '%s\n' "$pid" >"$pidfile"
        return 0
    fi
    die "port $HOST:$port is held by pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)), not by $expected; stop it"
}

# Services this invocation started (not adopted, not already running): `run` stops only these.
STARTED=()

# True if the pid in pidfile $1 is alive and its command line contains $2
# (guards against a recycled pid).
pid_alive() {
    local pidfile="$1" expected="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expected"
}

# Runs "$@" as the PostgreSQL user: postgres refuses to run as root. From /,
# since that user may not be allowed into the current directory.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

# PostgreSQL's directory. When root runs this, the server runs as the
# `postgres` user, which must be able to traverse every component of the
# path. A checkout under a private home (e.g. /root, mode 700) is not, so the
# cluster then lives in /tmp/riskloop-services-<uid>/postgres and
# .riskloop/services/postgres is a symlink to it.
pg_dir_for() {
    local dir="$STATE_DIR/postgres"
    if [[ $EUID -eq 0 ]] && ! runuser -u "$PG_USER" -- test -x "$STATE_DIR" 2>/dev/null; then
        local fallback="/tmp/riskloop-services-$EUID"
        mkdir -p "$fallback"
        chmod 0755 "$fallback"
        dir="$fallback/postgres"
        mkdir -p "$dir"
        if [[ ! -e "$STATE_DIR/postgres" || -L "$STATE_DIR/postgres" ]]; then
            ln -sfn "$dir" "$STATE_DIR/postgres"
        fi
    fi
    printf '%s\n' "$dir"
}

# Waits until "$@" succeeds. With a pidfile, fails as soon as that process
# has exited (e.g. its port is held by a server we did not start).
wait_until() {
    local name="$1" logfile="$2" pidfile="$3" expected="$4"
    shift 4
    local deadline=$((SECONDS + TIMEOUT_SECONDS))
    until "$@" >/dev/null 2>&1; do
        # only "still running" here: right after the fork the child's cmdline is still this script's until
        # it execs the server (seen under load); who holds the port is checked once it answers
        if [[ -n "$pidfile" ]] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name exited during start (log: $logfile)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name did not answer within ${TIMEOUT_SECONDS}s (log: $logfile)"
        fi
        sleep 0.2
    done
    if [[ -n "$pidfile" ]] && ! pid_alive "$pidfile" "$expected"; then
        tail -n 20 "$logfile" >&2 2>/dev/null || true
        die "$name exited, yet its port answers: another server holds it (log: $logfile)"
    fi
}

http_ready() { curl -fsS --max-time 1 "http://$HOST:$1/-/ready"; }
s3_ready() { curl -fsS --max-time 1 "http://$HOST:$S3_PORT/moto-api/" >/dev/null; }
redis_ready() { [[ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
pg_ready() { "$(pg_bin_dir)/pg_isready" -q -h "$HOST" -p "$PG_PORT"; }

# Starts "$@" detached (own session, so it outlives this script and the
# caller's process group) and records its pid.
spawn() {
    local pidfile="$1" logfile="$2"
    shift 2
    setsid "$@" >>"$logfile" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$pidfile"
}

start_redis() {
    local dir="$STATE_DIR/redis" state=started
    mkdir -p "$dir"
    if pid_alive "$dir/pid" redis-server; then
        state="already running"
    elif adopt_listener "$dir/pid" redis-server "$REDIS_PORT"; then
        state="adopted, left by an earlier start"
    else
        STARTED+=(redis)
        spawn "$dir/pid" "$dir/redis.log" redis-server \
            --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
            --dir "$dir" --save '' --appendonly no --daemonize no
    fi
    wait_until redis "$dir/redis.log" "$dir/pid" redis-server redis_ready
    log "redis        up  redis://$HOST:$REDIS_PORT/0  pid $(cat "$dir/pid")  ($state)"
}

start_postgres() {
    local dir bin state=started
    dir="$(pg_dir_for)"
    bin="$(pg_bin_dir)"
    mkdir -p "$dir"
    if [[ $EUID -eq 0 ]]; then
        chown "$PG_USER:" "$dir"
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        rm -rf "$dir/data"
        as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        # No unix socket (its default directory may not exist and paths are
        # length-limited); loopback TCP only. Durability is pointless for a
        # throwaway test cluster, speed is not.
        as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    if as_pg "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
        state="already running"
    else
        [[ -z "$(listener_pid "$PG_PORT")" ]] \
            || die "port $HOST:$PG_PORT is held by pid $(listener_pid "$PG_PORT"), not by the cluster in $dir/data; stop it"
        STARTED+=(postgres)
        as_pg "$bin/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w \
            -t "$TIMEOUT_SECONDS" >/dev/null \
            || { tail -n 20 "$dir/postgres.log" >&2; die "postgres did not start (log: $dir/postgres.log)"; }
    fi
    wait_until postgres "$dir/postgres.log" "" "" pg_ready
    local psql=(psql -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'riskloop'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE ROLE riskloop LOGIN CREATEDB"
    fi
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'riskloop'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE riskloop OWNER riskloop"
    fi
    log "postgres     up  postgresql://riskloop@$HOST:$PG_PORT/riskloop  pid $(head -n 1 "$dir/data/postmaster.pid")  ($state; dir $dir)"
}

write_prometheus_config() {
    local dir="$1"
    cat >"$dir/prometheus.yml" <<EOF
# Written by scripts/services.sh start; edits are overwritten.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['$HOST:$PROM_PORT']
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ['$HOST:$PUSH_PORT']
  # Tests add targets by writing targets/<name>.json (file_sd format).
  - job_name: riskloop
    file_sd_configs:
      - files: ['$dir/targets/*.json']
        refresh_interval: 1s
EOF
}

start_prometheus() {
    local dir="$STATE_DIR/prometheus" state=started
    mkdir -p "$dir/targets" "$dir/data"
    write_prometheus_config "$dir"
    if pid_alive "$dir/pid" prometheus || adopt_listener "$dir/pid" "prometheus --config.file=$dir/" "$PROM_PORT"; then
        state="already running"
        curl -fsS --max-time 5 -X POST "http://$HOST:$PROM_PORT/-/reload" >/dev/null \
            || die "prometheus is running but did not reload its config"
    else
        STARTED+=(prometheus)
        spawn "$dir/pid" "$dir/prometheus.log" prometheus \
            --config.file="$dir/prometheus.yml" \
            --web.listen-address="$HOST:$PROM_PORT" \
            --storage.tsdb.path="$dir/data" \
            --storage.tsdb.retention.time=1d \
            --web.enable-lifecycle
    fi
    wait_until prometheus "$dir/prometheus.log" "$dir/pid" prometheus http_ready "$PROM_PORT"
    log "prometheus   up  http://$HOST:$PROM_PORT  pid $(cat "$dir/pid")  ($state; targets $dir/targets)"
}

start_pushgateway() {
    local dir="$STATE_DIR/pushgateway" state=started
    mkdir -p "$dir"
    if pid_alive "$dir/pid" prometheus-pushgateway; then
        state="already running"
    elif adopt_listener "$dir/pid" prometheus-pushgateway "$PUSH_PORT"; then
        state="adopted, left by an earlier start"
    else
        STARTED+=(pushgateway)
        # Empty persistence file: Debian's default writes under /var/lib, and
        # tests want an empty gateway after each start.
        spawn "$dir/pid" "$dir/pushgateway.log" prometheus-pushgateway \
            --web.listen-address="$HOST:$PUSH_PORT" \
            --persistence.file= \
            --web.enable-admin-api
    fi
    wait_until pushgateway "$dir/pushgateway.log" "$dir/pid" prometheus-pushgateway http_ready "$PUSH_PORT"
    log "pushgateway  up  http://$HOST:$PUSH_PORT  pid $(cat "$dir/pid")  ($state)"
}

start_s3() {
    local dir="$STATE_DIR/s3" state=started venv="$REPO_ROOT/tools/s3/.venv"
    mkdir -p "$dir"
    if [[ ! -x "$venv/bin/moto_server" ]]; then
        command -v uv >/dev/null 2>&1 || die "uv is needed to create tools/s3/.venv (make setup installs it)"
        log "s3           creating the tool environment (uv sync --frozen --project tools/s3)"
        uv sync --frozen --quiet --project "$REPO_ROOT/tools/s3" || die "uv sync of tools/s3 failed"
    fi
    if pid_alive "$dir/pid" moto_server; then
        state="already running"
    elif adopt_listener "$dir/pid" moto_server "$S3_PORT"; then
        state="adopted, left by an earlier start"
    else
        STARTED+=(s3)
        # in-memory: every start is an empty store
        spawn "$dir/pid" "$dir/s3.log" "$venv/bin/moto_server" -H "$HOST" -p "$S3_PORT"
    fi
    wait_until s3 "$dir/s3.log" "$dir/pid" moto_server s3_ready
    # the test bucket (PUT on an existing bucket answers 200 too); S3 v2 signing is not needed by moto
    curl -fsS --max-time 5 -X PUT "http://$HOST:$S3_PORT/$S3_BUCKET" >/dev/null \
        || die "s3: could not create the bucket $S3_BUCKET (log: $dir/s3.log)"
    log "s3           up  http://$HOST:$S3_PORT  bucket $S3_BUCKET  pid $(cat "$dir/pid")  ($state)"
}

write_env() {
    cat >"$ENV_FILE" <<EOF
RISKLOOP_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT/0
RISKLOOP_TEST_POSTGRES_DSN=postgresql://riskloop@$HOST:$PG_PORT/riskloop
RISKLOOP_TEST_PROMETHEUS_URL=http://$HOST:$PROM_PORT
RISKLOOP_TEST_PUSHGATEWAY_URL=http://$HOST:$PUSH_PORT
RISKLOOP_TEST_PROMETHEUS_TARGETS_DIR=$STATE_DIR/prometheus/targets
RISKLOOP_TEST_S3_ENDPOINT=http://$HOST:$S3_PORT
RISKLOOP_TEST_S3_BUCKET=$S3_BUCKET
RISKLOOP_TEST_S3_ACCESS_KEY=$S3_KEY
RISKLOOP_TEST_S3_SECRET_KEY=$S3_SECRET
EOF
    log "env          $ENV_FILE"
}

cmd_start() {
    require_binaries
    mkdir -p "$STATE_DIR"
    start_redis
    start_postgres
    start_pushgateway
    start_prometheus
    start_s3
    write_env
}

# Sends TERM to the pid in pidfile $2 (if it is $3), waits, then KILL.
stop_pidfile() {
    local name="$1" pidfile="$2" expected="$3" pid i
    if ! pid_alive "$pidfile" "$expected"; then
        rm -f "$pidfile"
        log "$(printf '%-12s' "$name") stopped (was not running)"
        return 0
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    log "$(printf '%-12s' "$name") stopped (pid $pid)"
}

stop_postgres() {
    local dir bin
    dir="$(pg_dir_for)"
    bin="$(pg_bin_dir)"
    if [[ -n "$bin" && -f "$dir/data/PG_VERSION" ]] \
        && as_pg "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null 2>&1 || true
        log "postgres     stopped"
    else
        log "postgres     stopped (was not running)"
    fi
}

# Stops the named services ("$@"), or all of them.
cmd_stop() {
    mkdir -p "$STATE_DIR"
    local name names=("$@")
    ((${#names[@]})) || names=("${SERVICES[@]}")
    for name in prometheus pushgateway redis s3 postgres; do
        [[ " ${names[*]} " == *" $name "* ]] || continue
        case "$name" in
            prometheus) stop_pidfile prometheus "$STATE_DIR/prometheus/pid" prometheus ;;
            pushgateway) stop_pidfile pushgateway "$STATE_DIR/pushgateway/pid" prometheus-pushgateway ;;
            redis) stop_pidfile redis "$STATE_DIR/redis/pid" redis-server ;;
            s3) stop_pidfile s3 "$STATE_DIR/s3/pid" moto_server ;;
            postgres) stop_postgres ;;
        esac
    done
    if ((${#names[@]} == ${#SERVICES[@]})); then
        rm -f "$ENV_FILE"
    fi
}

# start; CMD in its own process group with the env loaded; then stop what this start started (services
# that were already running stay up). INT and TERM go to CMD's group once, so pytest tears its fixtures
# down; whatever way CMD ends, even by a signal to us, the EXIT trap stops our services. Exit: CMD's.
cmd_run() {
    (($#)) || die "run needs a command: scripts/services.sh run CMD [ARGS...]"
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'if ((${#STARTED[@]})); then cmd_stop "${STARTED[@]}"; fi' EXIT
    cmd_start
    set -a
    # shellcheck disable=SC1090  # written by cmd_start just now
    . "$ENV_FILE"
    set +a
    # job control: CMD gets a process group of its own and does not inherit an ignored SIGINT
    set -m
    "$@" &
    local child=$! rc
    trap 'kill -INT -- "-$child" 2>/dev/null || true' INT
    trap 'kill -TERM -- "-$child" 2>/dev/null || true' TERM
    while :; do
        rc=0
        wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break  # a trapped signal ends wait early: wait again
    done
    return "$rc"
}

cmd_status() {
    local down=0 name answers
    for name in "${SERVICES[@]}"; do
        case "$name" in
            redis) answers=redis_ready ;;
            postgres) answers=pg_ready ;;
            prometheus) answers="http_ready $PROM_PORT" ;;
            pushgateway) answers="http_ready $PUSH_PORT" ;;
            s3) answers=s3_ready ;;
        esac
        # $answers is a function name plus an optional port: split on purpose.
        # shellcheck disable=SC2086
        if $answers >/dev/null 2>&1; then
            log "$(printf '%-12s' "$name") up"
        else
            log "$(printf '%-12s' "$name") down"
            down=1
        fi
    done
    if ((down)); then
        return 3
    fi
}

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
    case "${1:-}" in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) shift; cmd_stop "$@" ;;
        status) cmd_status ;;
        run) shift; cmd_run "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
