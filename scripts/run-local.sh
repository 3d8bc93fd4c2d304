#!/usr/bin/env bash
# Run the whole system locally on 127.0.0.1 with embedded defaults (no Redis):
# 3 lock nodes (7001-7003), 3 queue nodes (7101-7103), 3 cache nodes
# (7201-7203) and the gateway (8080). Data lives under $RUN_DIR (default
# ./run). Ctrl-C stops everything this script started, and nothing else.
#
#   scripts/run-local.sh            # build (release) and run
#   SKIP_BUILD=1 scripts/run-local.sh
#   PROFILE=debug scripts/run-local.sh
#   PORT_BASE=1000 scripts/run-local.sh   # every port + 1000 (gateway 9080), beside another system
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-release}"
RUN_DIR="${RUN_DIR:-$PWD/run}"
BIN="target/$PROFILE"

if [ -z "${SKIP_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release --bins
  else
    cargo build --bins
  fi
fi

. scripts/lib/system.sh
SYSTEM_VERBOSE=1 system_start
# Wait until the gateway reports every backend healthy (bounded: 10 s).
system_wait_healthy 100 || echo "not every backend is healthy yet:"

GW="http://$(system_addr 8080)"
cat <<TXT

distributed-sync is up:
  gateway        $GW   (docs: $GW/docs)
  lock nodes     http://$(system_addr 7001)  :$(system_port 7002)  :$(system_port 7003)
  queue nodes    http://$(system_addr 7101)  :$(system_port 7102)  :$(system_port 7103)
  cache nodes    http://$(system_addr 7201)  :$(system_port 7202)  :$(system_port 7203)
  data and logs  $RUN_DIR
Ctrl-C stops everything.
TXT
curl -sS "$GW/health" || true
echo
wait
