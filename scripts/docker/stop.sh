#!/usr/bin/env bash
# Stops what prepare.sh started, and only that: the dockerd named in started.pid (see lib.sh), after
# removing the test containers left from our image (testcontainers' reaper is off, so a killed test
# run leaves its container). An engine that was already running when prepare.sh came is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

readonly STOP_TIMEOUT_S=30

if ! pid="$(hb_started_pid)"; then
  rm -f "$HB_STARTED_FILE"
  hb_say "no dockerd started by prepare.sh is running: nothing to stop"
  exit 0
fi

leftovers="$(docker ps -aq --filter label=org.testcontainers=true --filter "ancestor=$HB_PG_IMAGE" 2>/dev/null || true)"
if [ -n "$leftovers" ]; then
  hb_say "removing test containers left behind: $(printf '%s' "$leftovers" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  docker rm -f $leftovers >/dev/null || true
fi

hb_say "stopping dockerd (pid $pid), started by prepare.sh"
kill -TERM "$pid"
waited=0
while kill -0 "$pid" 2>/dev/null; do
  if [ "$waited" -ge "$STOP_TIMEOUT_S" ]; then
    hb_say "dockerd (pid $pid) still runs after ${STOP_TIMEOUT_S}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    break
  fi
  sleep 1
  waited=$((waited + 1))
done
rm -f "$HB_STARTED_FILE"
hb_say "dockerd stopped"
