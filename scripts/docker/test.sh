#!/usr/bin/env bash
# `npm run test:testcontainers`: prepares Docker and the local Postgres image (prepare.sh), runs the
# testcontainers subset (vitest.testcontainers.config.ts) against it, and stops the dockerd that this
# run started, if it started one. Extra arguments go to vitest (e.g. a test file to run alone).
#
# --skip-without-docker (first argument; .ci/run passes it): where no Docker engine can be had at all
# (not root, or no apt-get), print a loud line and exit 0 instead of failing. With an engine, every
# failure fails.
# HOOKBRIDGE_SKIP_BUILD=1: dist/ is fresh already (the CLI tests run it), skip `npm run build`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

skip_without_docker=0
if [ "${1:-}" = --skip-without-docker ]; then
  skip_without_docker=1
  shift
fi

# Only a dockerd that this run starts is this run's to stop (another run may be using an earlier one).
already_started=0
if hb_started_pid >/dev/null; then already_started=1; fi
stop_ours() {
  if [ "$already_started" = 0 ] && hb_started_pid >/dev/null; then "$here/stop.sh"; fi
}

begin="$(hb_now)"
status=0
"$here/prepare.sh" || status=$?
if [ "$status" = 3 ]; then
  printf '\n%s\n' '################################################################################' >&2
  if [ "$skip_without_docker" = 1 ]; then verdict=SKIPPED; else verdict=FAILED; fi
  printf '##  %s: the testcontainers tests did not run. No Docker engine can be had\n' "$verdict" >&2
  printf '%s\n' '##  on this machine (see the line above): they need a running engine, or root' >&2
  printf '%s\n' '##  and apt-get to install and start one (scripts/docker/prepare.sh).' >&2
  printf '%s\n\n' '################################################################################' >&2
  [ "$skip_without_docker" = 1 ] && exit 0
  exit 1
fi
if [ "$status" != 0 ]; then
  stop_ours
  exit "$status"
fi
trap stop_ours EXIT
hb_say "Docker and $HB_PG_IMAGE ready in $(($(hb_now) - begin))s"

cd "$repo"
if [ "${HOOKBRIDGE_SKIP_BUILD:-}" != 1 ]; then npm run --silent build; fi
export HOOKBRIDGE_TEST_PG=testcontainers
export HOOKBRIDGE_TEST_PG_IMAGE="$HB_PG_IMAGE"
# The reaper (ryuk) is an image of its own that only a registry has; each test stops its containers,
# and stop.sh removes what a killed run left.
export TESTCONTAINERS_RYUK_DISABLED=true
# An engine on this machine publishes ports on our loopback. testcontainers takes a /.dockerenv for "we
# run inside a container" and would go through the bridge network's gateway instead; machines of this
# kind carry one from their making.
if [ -z "${DOCKER_HOST:-}" ] && [ -f /.dockerenv ] && pgrep -x dockerd >/dev/null 2>&1; then
  export TESTCONTAINERS_HOST_OVERRIDE="${TESTCONTAINERS_HOST_OVERRIDE:-127.0.0.1}"
fi
tests_begin="$(hb_now)"
npx --no-install vitest run -c vitest.testcontainers.config.ts "$@"
hb_say "testcontainers subset passed in $(($(hb_now) - tests_begin))s"
