# Sourced by scripts/run-local.sh and scripts/api-conformance.sh: start the
# whole system on 127.0.0.1 (3 lock, 3 queue, 3 cache nodes and the gateway,
# embedded stores) from $BIN, with data and logs under $RUN_DIR and every
# port shifted by $PORT_BASE (default 0: lock 7001-7003, queue 7101-7103,
# cache 7201-7203, gateway 8080). Only the processes started here are ever
# stopped, by their recorded PIDs.
#
#   system_start          start everything, stop it all on exit or Ctrl-C
#   system_wait_healthy N wait up to N tenths of a second for the gateway's 200 /health
#   system_port P         P shifted by $PORT_BASE; system_addr P: 127.0.0.1:that

PORT_BASE="${PORT_BASE:-0}"
system_pids=()

system_port() { echo $((PORT_BASE + $1)); }
system_addr() { echo "127.0.0.1:$(system_port "$1")"; }

system_stop() {
  trap - INT TERM EXIT
  for pid in "${system_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${system_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

system_spawn() { # name, then the command
  local name="$1"; shift
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  system_pids+=("$!")
  if [ -n "${SYSTEM_VERBOSE:-}" ]; then
    echo "started $name (pid $!) — log $RUN_DIR/logs/$name.log"
  fi
}

system_start() {
  mkdir -p "$RUN_DIR/logs"
  trap system_stop INT TERM EXIT
  local i p=system_addr
  local lock_peers="1=$($p 7001),2=$($p 7002),3=$($p 7003)"
  local lock_nodes="$($p 7001),$($p 7002),$($p 7003)"
  local queue_peers="$($p 7101),$($p 7102),$($p 7103)"
  local cache_peers="$($p 7201),$($p 7202),$($p 7203)"
  for i in 1 2 3; do
    system_spawn "lock-$i" "$BIN/lock-service" --id "$i" --listen "$($p 700$i)" \
      --peers "$lock_peers" --data-dir "$RUN_DIR/lock-$i" --worker-threads 1
  done
  for i in 1 2 3; do
    system_spawn "queue-$i" "$BIN/queue-service" --listen "$($p 710$i)" \
      --peers "$queue_peers" --data-dir "$RUN_DIR/queue-$i"
  done
  for i in 1 2 3; do
    system_spawn "cache-$i" "$BIN/cache-service" --listen "$($p 720$i)" --peers "$cache_peers"
  done
  system_spawn gateway "$BIN/gateway" --listen "$($p 8080)" \
    --lock-nodes "$lock_nodes" --queue-nodes "$queue_peers" --cache-nodes "$cache_peers"
}

system_wait_healthy() { # tenths of a second
  local _
  for _ in $(seq 1 "$1"); do
    if curl -fsS "http://127.0.0.1:$(system_port 8080)/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}
