#!/usr/bin/env bash
# Gets this machine ready for the testcontainers tests (issue 17):
#   1. a Docker engine: uses a running one; else, as root, installs Debian's docker.io when dockerd is
#      missing and starts dockerd (data-root, pid file and log under HOOKBRIDGE_DOCKER_DIR, see lib.sh),
#      recording that it did, so that stop.sh stops that dockerd and nothing else;
#   2. the local Postgres image (HOOKBRIDGE_TEST_PG_IMAGE, default hookbridge-test/postgres:15-local),
#      built once from Debian's packages with no registry: debootstrap -> `docker import` (the base,
#      cached by tag) -> `docker build` of postgres/Dockerfile on it (cached by a label holding the
#      hash of its recipe, so an edit of the entrypoint rebuilds that layer only).
#
# Usage: prepare.sh [all|engine|image]   (default all)
# Exit status: 0 ready; 3 no Docker engine can be had on this machine (not root, or no apt-get);
# anything else: something that should have worked failed (its log is named).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

readonly UNAVAILABLE=3
readonly DOCKERD_START_TIMEOUT_S=90

unavailable() {
  hb_say "no Docker engine can be had here: $*"
  exit "$UNAVAILABLE"
}

apt_install() {
  local log="$HB_DOCKER_DIR/apt.log"
  hb_say "installing Debian's $* with apt-get (log: $log)"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    hb_say "apt-get could not install $* (see $log)"
    return 1
  fi
}

start_dockerd() {
  local begin pid waited=0
  begin="$(hb_now)"
  mkdir -p "$HB_DOCKER_DIR/data"
  hb_say "starting dockerd (data-root $HB_DOCKER_DIR/data, log $HB_DOCKERD_LOG)"
  # setsid: its own session, so the end of this script (or of a terminal) does not take it down; 9>&-:
  # without the lock below, which it would otherwise hold for as long as it runs.
  setsid dockerd --data-root "$HB_DOCKER_DIR/data" --pidfile "$HB_DOCKER_DIR/dockerd.pid" \
    >>"$HB_DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$HB_STARTED_FILE"
  until docker info >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$HB_STARTED_FILE"
      tail -n 20 "$HB_DOCKERD_LOG" >&2
      hb_say "dockerd exited while starting (see $HB_DOCKERD_LOG)"
      exit 1
    fi
    if [ "$waited" -ge "$DOCKERD_START_TIMEOUT_S" ]; then
      tail -n 20 "$HB_DOCKERD_LOG" >&2
      hb_say "dockerd did not answer within ${DOCKERD_START_TIMEOUT_S}s (see $HB_DOCKERD_LOG); stopping it"
      "$here/stop.sh" || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  hb_say "dockerd $(docker version --format '{{.Server.Version}}') is up (pid $pid, $(($(hb_now) - begin))s); scripts/docker/stop.sh stops it"
}

ensure_engine() {
  if hb_engine_up; then
    hb_say "using the running Docker engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    return
  fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    # Someone chose an engine; starting another one would not be it.
    hb_say "DOCKER_HOST is set but no engine answers there; start it, or unset DOCKER_HOST"
    exit 1
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    hb_is_root || unavailable "dockerd is not installed, and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || unavailable "dockerd is not installed, and there is no apt-get to install Debian's docker.io"
    # debootstrap too, when the image will need it: one apt-get run instead of two.
    if command -v debootstrap >/dev/null 2>&1; then apt_install docker.io; else apt_install docker.io debootstrap; fi
  fi
  hb_is_root || unavailable "dockerd is installed but does not answer, and starting it needs root"
  if pgrep -x dockerd >/dev/null 2>&1; then
    hb_say "a dockerd runs but 'docker info' fails; not starting a second one:"
    docker info 2>&1 | tail -n 5 >&2 || true
    exit 1
  fi
  start_dockerd
}

# The hash of everything the final image is made of: a changed recipe means a rebuild.
recipe_hash() {
  {
    printf 'major=%s suite=%s\n' "$HB_PG_MAJOR" "$HB_DEBIAN_SUITE"
    cat "$here/postgres/Dockerfile" "$here/postgres/docker-entrypoint.sh"
  } | sha256sum | cut -c1-16
}

image_label() {
  docker image inspect --format '{{ index .Config.Labels "org.hookbridge.recipe" }}' "$1" 2>/dev/null || true
}

build_base() {
  if docker image inspect "$HB_PG_BASE_IMAGE" >/dev/null 2>&1; then
    hb_say "base image $HB_PG_BASE_IMAGE is there (cached)"
    return
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    hb_is_root && command -v apt-get >/dev/null 2>&1 || { hb_say "building $HB_PG_BASE_IMAGE needs debootstrap (apt-get install debootstrap, as root)"; exit 1; }
    apt_install debootstrap
  fi
  hb_is_root || { hb_say "building $HB_PG_BASE_IMAGE runs debootstrap, which needs root"; exit 1; }
  local begin rootfs log
  begin="$(hb_now)"
  rootfs="$HB_DOCKER_DIR/build/rootfs-$HB_DEBIAN_SUITE"
  log="$HB_DOCKER_DIR/debootstrap.log"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  hb_say "debootstrap $HB_DEBIAN_SUITE with postgresql-$HB_PG_MAJOR from $HB_DEBIAN_MIRROR (about 80 s; log $log)"
  if ! debootstrap --variant=minbase --include="postgresql-$HB_PG_MAJOR" "$HB_DEBIAN_SUITE" "$rootfs" ${HB_DEBIAN_MIRROR:+"$HB_DEBIAN_MIRROR"} >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -rf "$rootfs"
    hb_say "debootstrap failed (see $log)"
    exit 1
  fi
  if [ ! -f "$rootfs/usr/share/postgresql/$HB_PG_MAJOR/extension/dblink.control" ]; then
    rm -rf "$rootfs"
    hb_say "postgresql-$HB_PG_MAJOR of $HB_DEBIAN_SUITE has no dblink extension; the filter path needs it"
    exit 1
  fi
  # The package's own cluster and the downloaded .debs are dead weight in the image.
  rm -rf "$rootfs/var/lib/postgresql/$HB_PG_MAJOR" "$rootfs/etc/postgresql/$HB_PG_MAJOR" \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change "LABEL org.hookbridge.base=postgresql-$HB_PG_MAJOR/$HB_DEBIAN_SUITE" - "$HB_PG_BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  hb_say "base image $HB_PG_BASE_IMAGE built ($(($(hb_now) - begin))s)"
}

ensure_image() {
  local want begin
  want="$(recipe_hash)"
  if [ "$(image_label "$HB_PG_IMAGE")" = "$want" ]; then
    hb_say "image $HB_PG_IMAGE is up to date (cached, recipe $want)"
    return
  fi
  begin="$(hb_now)"
  build_base
  # The legacy builder: it needs no BuildKit nor buildx, and FROM a local image pulls nothing.
  local log="$HB_DOCKER_DIR/build.log"
  if ! DOCKER_BUILDKIT=0 docker build \
    --build-arg "BASE=$HB_PG_BASE_IMAGE" --build-arg "PG_MAJOR=$HB_PG_MAJOR" \
    --label "org.hookbridge.recipe=$want" -t "$HB_PG_IMAGE" "$here/postgres" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    hb_say "docker build of $HB_PG_IMAGE failed (see $log)"
    exit 1
  fi
  hb_say "image $HB_PG_IMAGE built (recipe $want, $(($(hb_now) - begin))s)"
}

what="${1:-all}"
case "$what" in
  all | engine | image) ;;
  *) hb_say "usage: prepare.sh [all|engine|image]"; exit 2 ;;
esac
# Decided before anything is written: without root, there is nowhere of ours to write either.
if [ "$what" != image ] && ! hb_engine_up && ! hb_is_root; then
  if command -v dockerd >/dev/null 2>&1; then
    unavailable "dockerd is installed but does not answer, and starting it needs root"
  fi
  unavailable "dockerd is not installed, and installing it needs root"
fi
mkdir -p "$HB_DOCKER_DIR"
# One prepare at a time per machine: two would start two dockerds or build the image twice.
exec 9>"$HB_DOCKER_DIR/prepare.lock"
flock 9
if [ "$what" != image ]; then ensure_engine; fi
if [ "$what" != engine ]; then
  hb_engine_up || { hb_say "no Docker engine answers: run prepare.sh engine first"; exit 1; }
  ensure_image
fi
