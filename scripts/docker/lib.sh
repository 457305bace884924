# Shared by prepare.sh, stop.sh and test.sh (sourced, not run).
#
# Where things live (HOOKBRIDGE_DOCKER_DIR, default ~/.cache/hookbridge/docker), outside the checkout
# so that every clone on a machine shares one engine's images:
#   data/            dockerd's data-root, when we start dockerd (images, containers)
#   dockerd.pid      its pid file
#   dockerd.log      its output
#   started.pid      present only while a dockerd that prepare.sh started runs: stop.sh stops that one
#   build/           scratch for the debootstrap of the image's base (removed after the import)

HB_DOCKER_DIR="${HOOKBRIDGE_DOCKER_DIR:-${XDG_CACHE_HOME:-${HOME:-/var/tmp}/.cache}/hookbridge/docker}"
HB_STARTED_FILE="$HB_DOCKER_DIR/started.pid"
HB_DOCKERD_LOG="$HB_DOCKER_DIR/dockerd.log"

# The image the testcontainers tests run (HOOKBRIDGE_TEST_PG_IMAGE), and what it is built from.
HB_PG_MAJOR="${HOOKBRIDGE_PG_MAJOR:-15}"
HB_DEBIAN_SUITE="${HOOKBRIDGE_DEBIAN_SUITE:-bookworm}"
# The Debian mirror this machine's apt uses (its first non-security source), unless one is named;
# empty (debootstrap's own default) when none can be read. Never fails: callers run under `set -e`.
hb_debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '/^[[:space:]]*(deb[[:space:]]|URIs:)/ { for (i = 1; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) print $i }' "$f"
  done | grep -v -- '-security' | head -n 1 || true
}
HB_DEBIAN_MIRROR="${HOOKBRIDGE_DEBIAN_MIRROR:-$(hb_debian_mirror)}"
HB_PG_IMAGE="${HOOKBRIDGE_TEST_PG_IMAGE:-hookbridge-test/postgres:${HB_PG_MAJOR}-local}"
HB_PG_BASE_IMAGE="hookbridge-test/postgres-base:${HB_PG_MAJOR}-${HB_DEBIAN_SUITE}"

hb_say() { printf '[docker] %s\n' "$*" >&2; }

hb_is_root() { [ "$(id -u)" = 0 ]; }

# `docker info` answers: an engine is running and this user may use it.
hb_engine_up() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# The pid in started.pid, if that process is still the dockerd we started.
hb_started_pid() {
  [ -f "$HB_STARTED_FILE" ] || return 1
  local pid
  pid="$(cat "$HB_STARTED_FILE" 2>/dev/null || true)"
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = dockerd ] || return 1
  printf '%s\n' "$pid"
}

# Seconds since the epoch, for the timings printed along the way.
hb_now() { date +%s; }
