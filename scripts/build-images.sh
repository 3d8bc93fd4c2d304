#!/usr/bin/env bash
# Build the Docker images compose.yaml runs, using no registry at all:
#
#   1. release binaries (cargo build --release --bins);
#   2. distributed-sync/base:bookworm — a minimal Debian root file system made
#      with debootstrap from the mirror this machine's apt uses (upgraded from
#      bookworm-updates and bookworm-security), with
#      redis-server, curl (healthchecks) and iproute2 (the entrypoint reads the
#      container IP), loaded with `docker import`;
#   3. distributed-sync/services:local — FROM that base (docker build
#      --pull=false), the four binaries and docker/entrypoint.sh copied in;
#   4. distributed-sync/prometheus:local — for compose's `monitoring` profile:
#      that base plus Debian's `prometheus` package (apt-get in a chroot of
#      the base's file system, loaded with `docker import`; compose mounts
#      monitoring/ for its configuration). MONITORING=0 leaves it out.
#
# Idempotent and fast when nothing changed: the debootstrap tarball is cached
# under $IMAGES_DIR (default ./run/images, gitignored), the base image is only
# re-imported when its recipe changed, the service image only rebuilt when the
# binaries, Dockerfile or entrypoint changed, the Prometheus image only when
# the base image or its recipe changed.
#
#   scripts/build-images.sh
#   FORCE=1 scripts/build-images.sh          # re-import the base, rebuild the other images
#   REBOOTSTRAP=1 scripts/build-images.sh    # also re-run debootstrap (implies FORCE)
#   SKIP_CARGO=1 scripts/build-images.sh     # use target/release as it is
#   MONITORING=0 scripts/build-images.sh     # no Prometheus image
#   DEBIAN_MIRROR=http://… DEBIAN_SECURITY_MIRROR=http://… SUITE=bookworm
#                                            # override what is read from /etc/apt
#
# The Debian mirror comes only from the host's apt sources or from
# DEBIAN_MIRROR: no mirror host is written into this repository (a machine
# may reach only its own mirror). With neither, the script stops and says so.
# The security mirror likewise; without one the base is upgraded from
# $SUITE-updates only, and the log says so.
#
# Needs root (debootstrap, chroot) or sudo, and a Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

IMAGES_DIR="${IMAGES_DIR:-$ROOT/run/images}"
BASE_IMAGE="${BASE_IMAGE:-distributed-sync/base:bookworm}"
SERVICE_IMAGE="${DS_IMAGE:-distributed-sync/services:local}"
PROMETHEUS_IMAGE="${PROMETHEUS_IMAGE:-distributed-sync/prometheus:local}"
MONITORING="${MONITORING:-1}"
BINS=(lock-service queue-service cache-service gateway)
# What the containers need beyond debootstrap's minbase.
PACKAGES="redis-server,redis-tools,curl,iproute2"
FORCE="${FORCE:-}"
REBOOTSTRAP="${REBOOTSTRAP:-}"
if [ -n "$REBOOTSTRAP" ]; then FORCE=1; fi

export DOCKER_BUILDKIT=0 # the classic builder: no buildx plugin, no registry lookups

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
t_start=$(date +%s)

mkdir -p "$IMAGES_DIR"
# One build at a time per checkout (two compose-test runs may start together).
exec 9>"$IMAGES_DIR/.lock"
flock 9

# ---------------------------------------------------------------- binaries --
if [ -z "${SKIP_CARGO:-}" ]; then
  log "cargo build --release --bins"
  cargo build --release --bins
fi

# -------------------------------------------------------------- base image --
# The host's Debian release (so the container glibc matches the binaries built
# here) and the mirror its apt uses (deb822 .sources or one-line .list).
host_suite() {
  local s=""
  if [ -r /etc/os-release ]; then s=$(. /etc/os-release && echo "${VERSION_CODENAME:-}"); fi
  echo "${s:-bookworm}"
}

host_mirror() { # SUITE; prints nothing when the host has none
  local suite="$1" f uri
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    # First stanza whose Suites include "$suite" itself (not -security/-updates only).
    uri=$(awk -v suite="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
        }
        if (ok && uris != "") { print uris; exit }
      }' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(awk -v suite="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  shopt -u nullglob
}

SUITE="${SUITE:-$(host_suite)}"
MIRROR="${DEBIAN_MIRROR:-$(host_mirror "$SUITE")}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-$(host_mirror "$SUITE-security")}"
ROOTFS_TAR="$IMAGES_DIR/rootfs-$SUITE.tar"
ROOTFS_KEY_FILE="$ROOTFS_TAR.key"
BASE_KEY_FILE="$IMAGES_DIR/base-$SUITE.imported"
# Changing the recipe (this line's inputs) rebuilds the rootfs and the base.
ROOTFS_KEY="v2 suite=$SUITE mirror=$MIRROR security=$SECURITY_MIRROR packages=$PACKAGES"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
# drop_replaced OLD_ID NAME: remove the image NAME pointed to before a rebuild
# (only that one, and only when nothing uses it any more).
drop_replaced() {
  if [ -n "$1" ] && [ "$1" != "$(docker image inspect -f '{{.Id}}' "$2" 2>/dev/null)" ]; then
    docker rmi "$1" >/dev/null 2>&1 || true
  fi
}

make_rootfs() {
  if [ -z "$MIRROR" ]; then
    log "no Debian mirror for '$SUITE': the host's apt sources (/etc/apt/sources.list," \
      "/etc/apt/sources.list.d/*.sources|*.list) name none for that suite, and DEBIAN_MIRROR" \
      "is not set. Set DEBIAN_MIRROR=http://<mirror>/debian (and DEBIAN_SECURITY_MIRROR)."
    exit 1
  fi
  if [ -z "$SECURITY_MIRROR" ]; then
    log "no security mirror for '$SUITE-security' in the host's apt sources and" \
      "DEBIAN_SECURITY_MIRROR unset: the base gets $SUITE-updates only"
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap (apt-get)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
      { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  fi
  local dir="$IMAGES_DIR/rootfs-$SUITE" debs="$IMAGES_DIR/debs-$SUITE"
  $SUDO rm -rf "$dir"
  mkdir -p "$debs"
  log "debootstrap $SUITE from $MIRROR (+ $PACKAGES)"
  $SUDO debootstrap --variant=minbase --components=main --include="$PACKAGES" \
    --cache-dir="$debs" "$SUITE" "$dir" "$MIRROR" >"$IMAGES_DIR/debootstrap.log" 2>&1 || {
    log "debootstrap failed; last lines of $IMAGES_DIR/debootstrap.log:"
    tail -n 30 "$IMAGES_DIR/debootstrap.log" >&2
    exit 1
  }
  # debootstrap installs the release as published; add $SUITE-updates and
  # $SUITE-security and upgrade, so the base carries the current fixes (the
  # same point the host's apt follows). policy-rc.d keeps package scripts
  # from starting services (redis) inside the chroot.
  log "apt-get upgrade in the rootfs ($SUITE-updates${SECURITY_MIRROR:+, $SUITE-security})"
  $SUDO sh -c "cat > '$dir/etc/apt/sources.list'" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
SOURCES
  if [ -n "$SECURITY_MIRROR" ]; then
    $SUDO sh -c "echo 'deb $SECURITY_MIRROR $SUITE-security main' >> '$dir/etc/apt/sources.list'"
  fi
  $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > '$dir/usr/sbin/policy-rc.d' && chmod 755 '$dir/usr/sbin/policy-rc.d'"
  {
    $SUDO chroot "$dir" apt-get update -qq &&
      $SUDO chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq \
        -o Dpkg::Options::=--force-confold upgrade
  } >>"$IMAGES_DIR/debootstrap.log" 2>&1 || {
    log "apt-get upgrade in the rootfs failed; last lines of $IMAGES_DIR/debootstrap.log:"
    tail -n 30 "$IMAGES_DIR/debootstrap.log" >&2
    exit 1
  }
  $SUDO rm -f "$dir/usr/sbin/policy-rc.d"
  # Slim it down: package caches, indexes, docs, logs.
  $SUDO chroot "$dir" apt-get clean
  $SUDO rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/tmp/*
  # Docker provides these at run time.
  $SUDO sh -c ": > '$dir/etc/resolv.conf'; : > '$dir/etc/hostname'"
  log "packing $ROOTFS_TAR"
  $SUDO tar --numeric-owner -C "$dir" -cf "$ROOTFS_TAR.tmp" .
  $SUDO rm -rf "$dir"
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  echo "$ROOTFS_KEY" >"$ROOTFS_KEY_FILE"
}

base_current() {
  image_exists "$BASE_IMAGE" && [ -f "$BASE_KEY_FILE" ] &&
    [ "$(cat "$BASE_KEY_FILE")" = "$ROOTFS_KEY $(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" ]
}

if [ -z "$FORCE" ] && base_current; then
  log "$BASE_IMAGE is current"
else
  if [ -n "$REBOOTSTRAP" ] || [ ! -f "$ROOTFS_TAR" ] || [ ! -f "$ROOTFS_KEY_FILE" ] ||
    [ "$(cat "$ROOTFS_KEY_FILE")" != "$ROOTFS_KEY" ]; then
    make_rootfs
  else
    log "using cached $ROOTFS_TAR"
  fi
  old_base=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
  log "docker import -> $BASE_IMAGE"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap $SUITE minbase + $PACKAGES from $MIRROR" \
    "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
  echo "$ROOTFS_KEY $(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" >"$BASE_KEY_FILE"
  drop_replaced "$old_base" "$BASE_IMAGE"
fi

# -------------------------------------------------------- prometheus image --
# Debian's prometheus package on the base: the base image's file system
# (docker export) in a chroot on this host, `apt-get install prometheus` from
# the mirror the base was made from (the rootfs's own sources.list; the
# chroot uses this host's network, as debootstrap did), loaded with
# `docker import`. Rebuilt only when the base image or this recipe changed.
PROM_PACKAGES="prometheus"
PROM_KEY_FILE="$IMAGES_DIR/prometheus-$SUITE.imported"

prometheus_key() {
  echo "v2 base=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE") packages=$PROM_PACKAGES"
}

prometheus_current() {
  image_exists "$PROMETHEUS_IMAGE" && [ -f "$PROM_KEY_FILE" ] &&
    [ "$(cat "$PROM_KEY_FILE")" = "$(prometheus_key) $(docker image inspect -f '{{.Id}}' "$PROMETHEUS_IMAGE")" ]
}

make_prometheus() {
  local dir="$IMAGES_DIR/rootfs-prometheus-$SUITE" cid plog="$IMAGES_DIR/prometheus.log"
  $SUDO rm -rf "$dir"
  mkdir -p "$dir"
  log "apt-get install $PROM_PACKAGES in a chroot of $BASE_IMAGE"
  cid=$(docker create "$BASE_IMAGE" /bin/true)
  docker export "$cid" | $SUDO tar --numeric-owner -C "$dir" -xf -
  docker rm "$cid" >/dev/null
  $SUDO rm -f "$dir/.dockerenv"
  $SUDO cp /etc/resolv.conf "$dir/etc/resolv.conf"
  $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > '$dir/usr/sbin/policy-rc.d' && chmod 755 '$dir/usr/sbin/policy-rc.d'"
  {
    $SUDO chroot "$dir" apt-get update -qq &&
      $SUDO chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $PROM_PACKAGES
  } >"$plog" 2>&1 || {
    log "apt-get install $PROM_PACKAGES failed; last lines of $plog:"
    tail -n 30 "$plog" >&2
    $SUDO rm -rf "$dir"
    exit 1
  }
  $SUDO rm -f "$dir/usr/sbin/policy-rc.d"
  $SUDO chroot "$dir" apt-get clean
  # The package's own config stays as an example; compose mounts monitoring/.
  $SUDO mkdir -p "$dir/var/lib/prometheus/metrics2"
  $SUDO chroot "$dir" chown -R prometheus:prometheus /var/lib/prometheus
  # Slim it down as the base; also moment-timezone's unpacked zone data
  # (~190 MB of JSON for node.js users: the web UI loads the bundled .js).
  $SUDO rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/var/log/*.log \
    "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/tmp/* \
    "$dir"/usr/share/javascript/moment-timezone/data/unpacked
  $SUDO sh -c ": > '$dir/etc/resolv.conf'; : > '$dir/etc/hostname'; : > '$dir/etc/hosts'"
  local old
  old=$(docker image inspect -f '{{.Id}}' "$PROMETHEUS_IMAGE" 2>/dev/null || true)
  log "docker import -> $PROMETHEUS_IMAGE"
  $SUDO tar --numeric-owner -C "$dir" -cf - . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'USER prometheus' \
    -c 'WORKDIR /var/lib/prometheus' \
    -c 'EXPOSE 9090' \
    -c 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    -c 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/var/lib/prometheus/metrics2", "--web.listen-address=0.0.0.0:9090"]' \
    -m "$BASE_IMAGE + Debian's $PROM_PACKAGES" \
    - "$PROMETHEUS_IMAGE" >/dev/null
  $SUDO rm -rf "$dir"
  echo "$(prometheus_key) $(docker image inspect -f '{{.Id}}' "$PROMETHEUS_IMAGE")" >"$PROM_KEY_FILE"
  drop_replaced "$old" "$PROMETHEUS_IMAGE"
}

built="$BASE_IMAGE"
if [ "$MONITORING" = 0 ]; then
  log "MONITORING=0: $PROMETHEUS_IMAGE not built"
elif [ -z "$FORCE" ] && prometheus_current; then
  log "$PROMETHEUS_IMAGE is current"
  built="$built, $PROMETHEUS_IMAGE"
else
  make_prometheus
  built="$built, $PROMETHEUS_IMAGE"
fi

# ----------------------------------------------------------- service image --
for b in "${BINS[@]}"; do
  [ -x "target/release/$b" ] || { log "missing target/release/$b"; exit 1; }
done
CTX="$IMAGES_DIR/context"
rm -rf "$CTX"
mkdir -p "$CTX/bin"
for b in "${BINS[@]}"; do cp "target/release/$b" "$CTX/bin/$b"; done
# The release profile keeps debug info (~60 MB a binary); the image gets the
# binaries without it (symbols stay, so backtraces still name functions).
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$CTX"/bin/*; fi
cp docker/Dockerfile docker/entrypoint.sh "$CTX/"
CONTENT=$({
  docker image inspect -f '{{.Id}}' "$BASE_IMAGE"
  cd "$CTX" && find . -type f | LC_ALL=C sort | xargs sha256sum
} | sha256sum | cut -d' ' -f1)

have=""
if image_exists "$SERVICE_IMAGE"; then
  have=$(docker image inspect -f '{{index .Config.Labels "org.distributed-sync.content"}}' "$SERVICE_IMAGE")
fi
if [ -z "$FORCE" ] && [ "$have" = "$CONTENT" ]; then
  log "$SERVICE_IMAGE is current"
else
  old_service=$(docker image inspect -f '{{.Id}}' "$SERVICE_IMAGE" 2>/dev/null || true)
  log "docker build -> $SERVICE_IMAGE"
  docker build --pull=false \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.distributed-sync.content=$CONTENT" \
    -t "$SERVICE_IMAGE" "$CTX" >"$IMAGES_DIR/docker-build.log" 2>&1 || {
    log "docker build failed:"
    tail -n 30 "$IMAGES_DIR/docker-build.log" >&2
    exit 1
  }
  drop_replaced "$old_service" "$SERVICE_IMAGE"
fi
rm -rf "$CTX"

log "done in $(($(date +%s) - t_start)) s: $built, $SERVICE_IMAGE"
