#!/usr/bin/env bash
# The entrypoint of hookbridge's local test image: PostgreSQL from Debian's packages, behaving like the
# official `postgres` image as far as its users (and @testcontainers/postgresql) rely on it:
#   - POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
#     POSTGRES_DB (default: the user's name), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD
#     (default scram-sha-256, for connections from other hosts);
#   - `docker run IMAGE -c name=value ...` or `... postgres -c name=value ...`: settings as arguments;
#   - initdb on the first start of an empty PGDATA, then /docker-entrypoint-initdb.d/*.sql|.sql.gz|.sh
#     run on a server that listens on its socket alone (so nothing connects over TCP half-initialised);
#   - the real server listens on all interfaces, port 5432, and runs as the postgres user, PID 1.
# Written for this project from that contract (it is not the official image's script).
set -Eeuo pipefail

if [ $# -eq 0 ] || [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  chown postgres:postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql "${BASH_SOURCE[0]}" "$@"
fi

fail() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

run_init_files() {
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          printf '%s: running %s\n' "$0" "$f"
          "$f"
        else
          printf '%s: sourcing %s\n' "$0" "$f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) printf '%s: running %s\n' "$0" "$f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) printf '%s: running %s\n' "$0" "$f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
      *) printf '%s: ignoring %s\n' "$0" "$f" ;;
    esac
  done
}

init_cluster() {
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  export POSTGRES_USER POSTGRES_DB
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    fail 'the database is not initialised and POSTGRES_PASSWORD is not set: set it (or POSTGRES_HOST_AUTH_METHOD=trust, which lets anyone in)'
  fi

  # Word-split on purpose, as the official image does: POSTGRES_INITDB_ARGS="--data-checksums -E UTF8".
  # shellcheck disable=SC2206
  local initdb=(initdb --username="$POSTGRES_USER" -D "$PGDATA" ${POSTGRES_INITDB_ARGS:-})
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    # Through a pipe, never a file or the command line (where `ps` would show it).
    "${initdb[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
  else
    "${initdb[@]}"
  fi

  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  # The settings given as arguments apply to this first server too (an init script may need them).
  local temp_args=("$@" -c "listen_addresses=" -p 5432)
  pg_ctl -D "$PGDATA" -o "$(printf '%q ' "${temp_args[@]}")" -w start

  export PGPASSWORD="${POSTGRES_PASSWORD:-}"
  psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  if [ "$POSTGRES_DB" != postgres ]; then
    "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  run_init_files
  unset PGPASSWORD

  pg_ctl -D "$PGDATA" -m fast -w stop
  printf '\nPostgreSQL init process complete; ready for start up.\n\n'
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  shift
  init_cluster "$@"
  set -- postgres "$@"
else
  printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
fi

exec "$@"
