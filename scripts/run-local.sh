#!/usr/bin/env bash
# Run the whole system locally on 127.0.0.1 with embedded defaults (no Redis):
# 3 lock nodes (7001-7003), 3 queue nodes (7101-7103), 3 cache nodes
# (7201-7203) and the gateway (8080). Data lives under $RUN_DIR (default
# ./run). Ctrl-C stops everything this script started, and nothing else.
#
#   scripts/run-local.sh            # build (release) and run
#   SKIP_BUILD=1 scripts/run-local.sh
#   PROFILE=debug scripts/run-local.sh
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

mkdir -p "$RUN_DIR/logs"
pids=()

stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${#pids[@]} processes"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all INT TERM EXIT

start() { # name, then the command
  local name="$1"; shift
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  pids+=("$!")
  echo "started $name (pid $!) — log $RUN_DIR/logs/$name.log"
}

LOCK_PEERS="1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
QUEUE_PEERS="127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
CACHE_PEERS="127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"

for i in 1 2 3; do
  start "lock-$i" "$BIN/lock-service" --id "$i" --listen "127.0.0.1:700$i" \
    --peers "$LOCK_PEERS" --data-dir "$RUN_DIR/lock-$i" --worker-threads 1
done
for i in 1 2 3; do
  start "queue-$i" "$BIN/queue-service" --listen "127.0.0.1:710$i" \
    --peers "$QUEUE_PEERS" --data-dir "$RUN_DIR/queue-$i"
done
for i in 1 2 3; do
  start "cache-$i" "$BIN/cache-service" --listen "127.0.0.1:720$i" --peers "$CACHE_PEERS"
done
start gateway "$BIN/gateway" --listen 127.0.0.1:8080 \
  --lock-nodes "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003" \
  --queue-nodes "$QUEUE_PEERS" --cache-nodes "$CACHE_PEERS"

# Wait until the gateway reports every backend healthy (bounded).
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:8080/health >/dev/null 2>&1; then break; fi
  sleep 0.1
done

cat <<TXT

distributed-sync is up:
  gateway        http://127.0.0.1:8080   (docs: http://127.0.0.1:8080/docs)
  lock nodes     http://127.0.0.1:7001  :7002  :7003
  queue nodes    http://127.0.0.1:7101  :7102  :7103
  cache nodes    http://127.0.0.1:7201  :7202  :7203
  data and logs  $RUN_DIR
Ctrl-C stops everything.
TXT
curl -sS http://127.0.0.1:8080/health || true
echo
wait
