#!/usr/bin/env bash
# End-to-end test of compose.yaml on this machine's Docker engine (no registry):
#
#   1. scripts/build-images.sh (cached: fast when nothing changed);
#   2. `compose up -d` under a unique project name, wait for the gateway's /health;
#   3. smoke test through 127.0.0.1:$GATEWAY_PORT: lock acquire/inspect/release,
#      enqueue/dequeue/ack, cache set on one node and get through another;
#   3b. the monitoring profile: no Prometheus without it; `--profile
#      monitoring up -d` adds it (published on 127.0.0.1:$PROMETHEUS_PORT),
#      promtool (in its image) accepts monitoring/prometheus.yml and
#      alerts.yml, every rule is loaded and every target (3 lock, 3 queue,
#      3 cache, the gateway, Prometheus) is `up` in /api/v1/targets; from
#      here on every compose call names the profile;
#   4. `up -d --scale queue-service=5`: the gateway's /cluster must show 5 queue
#      members, and 20 queues must still enqueue and dequeue; then
#      `--scale cache-service=4`: 4 cache members, and a value written through
#      the new node is read (never an older one) through every other;
#      Prometheus finds the new replicas (DNS discovery): 14 targets, all up;
#      Prometheus accepts every query of the Grafana dashboard
#      ($__rate_interval as 1m) and evaluates every alert rule without error;
#   5. `docker kill` the lock leader: a lock call through the gateway must
#      still succeed;
#   6. `compose down -v` of this project only (in a trap, also on failure).
# Every wait is bounded; timings are printed at the end.
#
#   scripts/compose-test.sh
#   KEEP=1 scripts/compose-test.sh        # leave the project running (prints how to remove it)
#   GATEWAY_PORT=18080 PROMETHEUS_PORT=19090 scripts/compose-test.sh
# Needs: docker, `docker compose` or docker-compose, curl, jq.
set -euo pipefail
cd "$(dirname "$0")/.."

T0=$(date +%s.%N)
timings=()
phase_start=$T0
phase() { # record the time since the previous phase under $1
  local now
  now=$(date +%s.%N)
  timings+=("$(printf '%-34s %6.1f s' "$1" "$(elapsed "$phase_start" "$now")")")
  phase_start=$now
}
elapsed() { awk -v a="$1" -v b="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.2f", b - a }'; }
log() { printf '[compose-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

for tool in docker curl jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required"
done
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  fail "neither 'docker compose' nor docker-compose is installed"
fi

PROJECT="${PROJECT:-dstest$(date +%s)$$}"
export CLUSTER_TOKEN="${CLUSTER_TOKEN:-ct-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${GATEWAY_PORT:-}" ]; then
  GATEWAY_PORT=8080
  if port_busy 8080; then
    for p in $(seq 18080 18099); do
      if ! port_busy "$p"; then GATEWAY_PORT=$p; break; fi
    done
    log "127.0.0.1:8080 is in use here; publishing the gateway on 127.0.0.1:$GATEWAY_PORT"
  fi
fi
export GATEWAY_PORT
GW="http://127.0.0.1:$GATEWAY_PORT"
if [ -z "${PROMETHEUS_PORT:-}" ]; then
  PROMETHEUS_PORT=9090
  if port_busy 9090; then
    for p in $(seq 19090 19099); do
      if ! port_busy "$p"; then PROMETHEUS_PORT=$p; break; fi
    done
    log "127.0.0.1:9090 is in use here; publishing Prometheus on 127.0.0.1:$PROMETHEUS_PORT"
  fi
fi
export PROMETHEUS_PORT
PROM="http://127.0.0.1:$PROMETHEUS_PORT"
# Compose calls name the monitoring profile once it is up (PROFILES), so a
# later `up --scale` keeps Prometheus as it is; teardown always names it.
PROFILES=()
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f compose.yaml ${PROFILES[@]+"${PROFILES[@]}"} "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  rm -f "${OUT:-}"
  if [ "$rc" -ne 0 ]; then
    log "failed (exit $rc); container states and the last log lines:"
    dc ps >&2 || true
    dc logs --no-color --tail=25 >&2 2>&1 || true
  fi
  if [ -n "${KEEP:-}" ]; then
    log "KEEP set: project $PROJECT left running; remove it with:"
    log "  ${COMPOSE[*]} -p $PROJECT -f compose.yaml --profile monitoring down -v"
  else
    local t
    t=$(date +%s.%N)
    PROFILES=(--profile monitoring)
    dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || log "compose down failed (project $PROJECT)"
    log "compose down -v (project $PROJECT): $(elapsed "$t") s; whole run $(elapsed "$T0") s"
  fi
  exit "$rc"
}

# --------------------------------------------------------------- helpers --
J='content-type: application/json'
BODY=""
STATUS=""
# call METHOD PATH [JSON] [extra curl args...]: sets STATUS and BODY.
call() {
  local method="$1" path="$2" data="${3:-}"
  shift 2; [ $# -gt 0 ] && shift
  local out
  if [ -n "$data" ]; then
    out=$(curl -sS --max-time 15 -X "$method" -H "$J" "$@" -d "$data" -w '\n%{http_code}' "$GW$path") || out=$'\n000'
  else
    out=$(curl -sS --max-time 15 -X "$method" "$@" -w '\n%{http_code}' "$GW$path") || out=$'\n000'
  fi
  STATUS="${out##*$'\n'}"
  BODY="${out%$'\n'*}"
}
# expect STATUS WHAT: fail unless the last call answered STATUS.
expect() {
  [ "$STATUS" = "$1" ] || fail "$2: expected HTTP $1, got $STATUS: $BODY"
}
# wait_for SECONDS WHAT COMMAND...: run COMMAND every 0.5 s until it succeeds.
# A check may set LAST to what it last saw; a timeout prints it (WHAT is
# expanded before the first try, so it cannot say what the last try saw).
wait_for() {
  local secs="$1" what="$2"; shift 2
  local deadline=$(($(date +%s) + secs))
  LAST=""
  while :; do
    if "$@"; then return 0; fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${secs}s${LAST:+ (last: $LAST)}"
    sleep 0.5
  done
}
gateway_healthy() { curl -fsS --max-time 3 -o /dev/null "$GW/health" 2>/dev/null; }
queue_members() { curl -fsS --max-time 5 "$GW/cluster" 2>/dev/null | jq -r '.queue.members | length' 2>/dev/null || echo 0; }
has_queue_members() { local n; n=$(queue_members); LAST="$n members"; [ "$n" = "$1" ]; }
cache_members() { curl -fsS --max-time 5 "$GW/cluster" 2>/dev/null | jq -r '.cache.members | length' 2>/dev/null || echo 0; }
has_cache_members() { local n; n=$(cache_members); LAST="$n members"; [ "$n" = "$1" ]; }
# targets_up N: Prometheus has exactly N active targets, every one `up`
# (LAST: each job's health counts).
targets_up() {
  local doc
  doc=$(curl -fsS --max-time 3 "$PROM/api/v1/targets?state=active" 2>/dev/null) || { LAST="no answer from $PROM"; return 1; }
  LAST=$(jq -c '[.data.activeTargets[] | "\(.labels.job)=\(.health)"] | group_by(.) | map("\(.[0]) x\(length)")' <<<"$doc")
  jq -e --argjson n "$1" '(.data.activeTargets | length) == $n and all(.data.activeTargets[]; .health == "up")' \
    <<<"$doc" >/dev/null
}

# ------------------------------------------------------------------ build --
log "building images (scripts/build-images.sh)"
scripts/build-images.sh
phase "build images"

# --------------------------------------------------------------------- up --
trap cleanup EXIT INT TERM
OUT=$(mktemp)
log "compose up -d (project $PROJECT, gateway on $GW)"
dc up -d >"$OUT" 2>&1 || { cat "$OUT" >&2; fail "compose up"; }
phase "compose up -d"
wait_for 120 "gateway /health 200" gateway_healthy
phase "until gateway healthy"

# ------------------------------------------------------------------ smoke --
RES="compose-smoke-$$"
call POST /api/lock/acquire "{\"resource\":\"$RES\",\"owner\":\"worker-1\",\"ttl_ms\":30000}"
expect 200 "lock acquire"
TOKEN=$(jq -r '.token' <<<"$BODY")
[ "$(jq -r '.granted' <<<"$BODY")" = true ] || fail "lock acquire not granted: $BODY"
call POST /api/lock/acquire "{\"resource\":\"$RES\",\"owner\":\"worker-2\"}"
expect 409 "second exclusive acquire"
call GET "/api/lock/$RES"
expect 200 "lock inspect"
jq -e --arg t "$TOKEN" '[.. | objects | select(.owner? == "worker-1" and ((.token? | tostring) == $t))] | length > 0' \
  <<<"$BODY" >/dev/null || fail "lock inspect does not show worker-1 with token $TOKEN: $BODY"
call POST /api/lock/release "{\"resource\":\"$RES\",\"owner\":\"worker-1\",\"token\":$TOKEN}"
expect 200 "lock release"
log "lock ok (token $TOKEN)"

Q="smoke-$$"
call POST /api/queue/enqueue "{\"queue\":\"$Q\",\"payload\":{\"n\":42}}"
expect 201 "enqueue"
MID=$(jq -r '.id' <<<"$BODY")
call POST /api/queue/dequeue "{\"queue\":\"$Q\",\"visibility_ms\":30000}"
expect 200 "dequeue"
[ "$(jq -r '.messages[0].id' <<<"$BODY")" = "$MID" ] || fail "dequeue returned another message: $BODY"
[ "$(jq -c '.messages[0].payload' <<<"$BODY")" = '{"n":42}' ] || fail "dequeue payload: $BODY"
RECEIPT=$(jq -r '.messages[0].receipt' <<<"$BODY")
call POST /api/queue/ack "{\"queue\":\"$Q\",\"receipt\":\"$RECEIPT\"}"
expect 200 "ack"
call POST /api/queue/dequeue "{\"queue\":\"$Q\"}"
expect 200 "dequeue after ack"
[ "$(jq '.messages | length' <<<"$BODY")" = 0 ] || fail "acked message came back: $BODY"
log "queue ok (message $MID)"

call GET /cluster
expect 200 "cluster"
mapfile -t CACHE_NODES < <(jq -r '.cache.members[]' <<<"$BODY")
[ "${#CACHE_NODES[@]}" -ge 2 ] || fail "need 2 cache nodes for the coherence check, gateway sees: ${CACHE_NODES[*]:-none}"
KEY="greeting-$$"
call POST /api/cache/set "{\"key\":\"$KEY\",\"value\":{\"hello\":\"compose\"}}" -H "x-cache-node: ${CACHE_NODES[0]}"
expect 200 "cache set on ${CACHE_NODES[0]}"
call GET "/api/cache/get?key=$KEY&node=${CACHE_NODES[1]}"
expect 200 "cache get on ${CACHE_NODES[1]}"
[ "$(jq -c '.value' <<<"$BODY")" = '{"hello":"compose"}' ] || fail "cache get via ${CACHE_NODES[1]}: $BODY"
call POST /api/cache/set "{\"key\":\"$KEY\",\"value\":2}" -H "x-cache-node: ${CACHE_NODES[1]}"
expect 200 "cache overwrite on ${CACHE_NODES[1]}"
call GET "/api/cache/get?key=$KEY&node=${CACHE_NODES[0]}"
expect 200 "cache get on ${CACHE_NODES[0]}"
[ "$(jq -c '.value' <<<"$BODY")" = '2' ] || fail "stale read via ${CACHE_NODES[0]} after a write via ${CACHE_NODES[1]}: $BODY"
log "cache ok (set/get across ${CACHE_NODES[0]} and ${CACHE_NODES[1]})"
phase "smoke test"

# ------------------------------------------------------------- monitoring --
[ -z "$(dc ps -q prometheus 2>/dev/null)" ] || fail "Prometheus runs without the monitoring profile"
log "compose --profile monitoring up -d (Prometheus on $PROM)"
PROFILES=(--profile monitoring)
dc up -d >"$OUT" 2>&1 || { cat "$OUT" >&2; fail "compose --profile monitoring up"; }
PROM_CID=$(dc ps -q prometheus)
[ -n "$PROM_CID" ] || fail "no Prometheus container with the monitoring profile"
docker exec "$PROM_CID" promtool check config /etc/prometheus/ds/prometheus.yml >"$OUT" 2>&1 ||
  { cat "$OUT" >&2; fail "promtool check config monitoring/prometheus.yml"; }
docker exec "$PROM_CID" promtool check rules /etc/prometheus/ds/alerts.yml >"$OUT" 2>&1 ||
  { cat "$OUT" >&2; fail "promtool check rules monitoring/alerts.yml"; }
phase "monitoring up, promtool"
RULES=$(grep -c '^ *- alert:' monitoring/alerts.yml)
rules_loaded() {
  local n
  n=$(curl -fsS --max-time 3 "$PROM/api/v1/rules" 2>/dev/null | jq '[.data.groups[].rules[]] | length' 2>/dev/null) || n=none
  LAST="$n rules loaded"
  [ "$n" = "$RULES" ]
}
wait_for 60 "Prometheus loading the $RULES rules of monitoring/alerts.yml" rules_loaded
wait_for 60 "Prometheus: 11 targets (3 lock, 3 queue, 3 cache, gateway, itself), every one up" targets_up 11
log "Prometheus: $RULES alert rules, every target up: $LAST"
phase "until every target up"

# ------------------------------------------------------------------ scale --
log "compose up -d --scale queue-service=5"
dc up -d --scale queue-service=5 >"$OUT" 2>&1 || { cat "$OUT" >&2; fail "compose up --scale"; }
phase "compose up --scale queue=5"
wait_for 60 "gateway /cluster showing 5 queue members" has_queue_members 5
# Every replica must be in the ring under the name DNS gives it, and see the
# same ring as the gateway (asked from inside the network, via the gateway's container).
GW_CID=$(dc ps -q gateway)
rings_agree() {
  local want m doc
  want=$(curl -fsS --max-time 5 "$GW/cluster" | jq -c '.queue.members') || return 1
  for m in $(jq -r '.[]' <<<"$want"); do
    doc=$(docker exec "$GW_CID" curl -fsS --max-time 3 "http://$m/cluster" 2>/dev/null) || return 1
    [ "$(jq -r '.node' <<<"$doc")" = "$m" ] || return 1
    [ "$(jq -c '.members' <<<"$doc")" = "$want" ] || return 1
  done
}
wait_for 30 "every queue replica advertising its DNS address and seeing the gateway's ring" rings_agree
phase "until 5 queue members"
for i in $(seq 1 20); do
  q="scaled-$$-$i"
  call POST /api/queue/enqueue "{\"queue\":\"$q\",\"payload\":$i}"
  expect 201 "enqueue on $q after scaling"
  call POST /api/queue/dequeue "{\"queue\":\"$q\",\"visibility_ms\":30000}"
  expect 200 "dequeue on $q after scaling"
  [ "$(jq -c '.messages[0].payload' <<<"$BODY")" = "$i" ] || fail "dequeue on $q after scaling: $BODY"
  r=$(jq -r '.messages[0].receipt' <<<"$BODY")
  call POST /api/queue/ack "{\"queue\":\"$q\",\"receipt\":\"$r\"}"
  expect 200 "ack on $q after scaling"
done
call GET /cluster
owners=$(for i in $(seq 1 20); do curl -fsS --max-time 5 "$GW/api/queue/scaled-$$-$i" | jq -r '.node' || true; done | sort -u | wc -l)
log "20 queues served after scaling ($(jq -r '.queue.members | join(" ")' <<<"$BODY"); answered by $owners distinct nodes)"
phase "20 queues after scaling"

# Cache nodes act only in a view a majority has confirmed, so a fourth
# replica joins the views before it serves; until then calls may answer
# 503, never an older value. A view change moves about a quarter of the
# keys to the new node and drops their lines (a miss, which the contract
# allows; under write-back an exclusive line is the key's only value), so
# the writes below wait until every node acts in the same confirmed
# 4-node view: from then on each acknowledged write must read back.
log "compose up -d --scale queue-service=5 --scale cache-service=4"
dc up -d --scale queue-service=5 --scale cache-service=4 >"$OUT" 2>&1 || { cat "$OUT" >&2; fail "compose up --scale cache"; }
wait_for 60 "gateway /cluster showing 4 cache members" has_cache_members 4
call GET /cluster
mapfile -t CACHE_NODES < <(jq -r '.cache.members[]' <<<"$BODY")
cache_views_settled() { # every cache node in one confirmed view of all of them
  local m doc ids=""
  for m in "${CACHE_NODES[@]}"; do
    doc=$(docker exec "$GW_CID" curl -fsS --max-time 3 "http://$m/cluster" 2>/dev/null) || { LAST="$m: no /cluster"; return 1; }
    LAST="$m: $(jq -c '.view | {id, live, confirmed}' <<<"$doc")"
    [ "$(jq -r '.view.confirmed' <<<"$doc")" = true ] || return 1
    [ "$(jq -r '.view.live | length' <<<"$doc")" = "${#CACHE_NODES[@]}" ] || return 1
    ids="$ids $(jq -c '.view.id' <<<"$doc" | tr -d ' ')"
  done
  [ "$(tr ' ' '\n' <<<"$ids" | grep . | sort -u | wc -l)" = 1 ]
}
wait_for 60 "every cache node acting in one confirmed view of ${#CACHE_NODES[@]}" cache_views_settled
CKEY="scaled-$$"
cache_set_through() { # node value
  call POST /api/cache/set "{\"key\":\"$CKEY\",\"value\":$2}" -H "x-cache-node: $1"
  LAST="HTTP $STATUS $BODY"
  [ "$STATUS" = 200 ]
}
cache_reads() { # node value: the node answers the value (a miss or a 503 is retried; an older value fails)
  call GET "/api/cache/get?key=$CKEY&node=$1"
  LAST="HTTP $STATUS $BODY"
  [ "$STATUS" = 200 ] || return 1
  [ "$(jq -c '.value' <<<"$BODY")" = "$2" ] || fail "stale read through $1 after $2 was acknowledged: $BODY"
}
# Each node in turn writes a new value, which every node must then read.
v=10
for n in "${CACHE_NODES[@]}"; do
  v=$((v + 1))
  wait_for 30 "cache set through $n after scaling" cache_set_through "$n" "$v"
  for m in "${CACHE_NODES[@]}"; do
    wait_for 30 "cache get through $m of $v, written through $n" cache_reads "$m" "$v"
  done
done
log "cache ok after scaling to ${#CACHE_NODES[@]} nodes (${CACHE_NODES[*]})"
phase "cache after scaling to 4"
wait_for 60 "Prometheus: 14 targets after scaling (3 lock, 5 queue, 4 cache, gateway, itself), every one up" targets_up 14
log "Prometheus after scaling, every target up: $LAST"
phase "until scaled targets up"
# The dashboard's queries, as Grafana would send them (promtool checks only
# the rules): each must parse and evaluate; how many found data is logged.
nq=0
with_data=0
while IFS= read -r expr; do
  nq=$((nq + 1))
  doc=$(curl -sS --max-time 5 -G "$PROM/api/v1/query" --data-urlencode "query=$expr" 2>&1) || doc="$doc"
  [ "$(jq -r '.status' <<<"$doc" 2>/dev/null)" = success ] || fail "Prometheus rejects the dashboard query $expr: $doc"
  if [ "$(jq '.data.result | length' <<<"$doc")" -gt 0 ]; then with_data=$((with_data + 1)); fi
done < <(jq -r '.. | objects | .expr? // empty' monitoring/grafana/distributed-sync.json | sed 's/\$__rate_interval/1m/g')
[ "$nq" -gt 0 ] || fail "no queries found in monitoring/grafana/distributed-sync.json"
rules_evaluated() {
  local doc
  doc=$(curl -fsS --max-time 3 "$PROM/api/v1/rules" 2>/dev/null) || return 1
  LAST=$(jq -c '[.data.groups[].rules[] | select(.health != "ok") | "\(.name): \(.health) \(.lastError // "")"]' <<<"$doc")
  [ "$LAST" = "[]" ]
}
wait_for 30 "every alert rule evaluated without error" rules_evaluated
FIRING=$(curl -fsS --max-time 3 "$PROM/api/v1/alerts" | jq -r '[.data.alerts[] | "\(.labels.alertname)(\(.state))"] | join(" ")')
log "dashboard: $nq queries accepted, $with_data with data; every rule evaluated ok; alerts now: ${FIRING:-none}"
phase "dashboard queries, rules"

# ------------------------------------------------------------- lock kill --
call GET /cluster
LEADER_ID=$(jq -r '.lock.leader_id // empty' <<<"$BODY")
[ -n "$LEADER_ID" ] || fail "no lock leader in /cluster: $BODY"
VICTIM="lock-$LEADER_ID"
CID=$(dc ps -q "$VICTIM")
[ -n "$CID" ] || fail "no container for $VICTIM"
log "docker kill $VICTIM (the lock leader, container ${CID:0:12})"
docker kill "$CID" >/dev/null
phase "kill lock leader"
t_kill=$(date +%s.%N)
RES2="compose-failover-$$"
attempts=0
acquired=""
deadline=$(($(date +%s) + 30))
while [ "$(date +%s)" -lt "$deadline" ]; do
  attempts=$((attempts + 1))
  call POST /api/lock/acquire "{\"resource\":\"$RES2\",\"owner\":\"worker-3\",\"ttl_ms\":10000,\"request_id\":\"failover-$$\"}"
  if [ "$STATUS" = 200 ]; then acquired=1; break; fi
  log "acquire after kill: HTTP $STATUS $BODY (retrying)"
  sleep 0.5
done
[ -n "$acquired" ] || fail "lock acquire after killing $VICTIM: HTTP $STATUS $BODY"
log "lock acquire after killing $VICTIM: 200 in $(elapsed "$t_kill") s, $attempts attempt(s) through the gateway"
T2=$(jq -r '.token' <<<"$BODY")
call POST /api/lock/release "{\"resource\":\"$RES2\",\"owner\":\"worker-3\",\"token\":$T2}"
expect 200 "lock release after the kill"
call GET /cluster
log "new lock leader: $(jq -r '.lock.leader_id' <<<"$BODY") (term $(jq -r '.lock.term' <<<"$BODY"))"
phase "lock call after kill"

log "PASS"
echo
echo "compose-test timings (project $PROJECT, $("${COMPOSE[@]}" version --short 2>/dev/null || echo compose)):"
for t in "${timings[@]}"; do echo "  $t"; done
printf '  %-34s %6.1f s\n' "total (before teardown)" "$(elapsed "$T0")"
