#!/bin/sh
# The entrypoint of riskloop.local/redis (scripts/images/redis.sh). The official redis image's Redis is
# built with protected mode off, so clients from other pods may connect without a password when no
# config file says otherwise; Debian's redis-server keeps it on and would answer them "DENIED". Started
# as `redis-server [config-file] [options]`, protected mode goes off right after the config file, where
# a later `--protected-mode yes` among the options still wins. Anything else is run as given.
set -eu
first="${1:-}"
if [ "$first" = redis-server ] || [ "${first#-}" != "$first" ]; then
    [ "$first" = redis-server ] && shift
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
        conf="$1"; shift
        exec redis-server "$conf" --protected-mode no "$@"
    fi
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
