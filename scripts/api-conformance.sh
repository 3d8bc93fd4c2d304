#!/usr/bin/env bash
# API conformance: start the whole system on 127.0.0.1 (as scripts/run-local.sh
# does: 3 lock, 3 queue, 3 cache nodes and the gateway, embedded stores), then
# run schemathesis against the gateway's own /openapi.json with every check,
# a fixed seed and a bounded time. Fails on any failure (a request valid by
# the document refused, an invalid one accepted, an undocumented status or
# body, a 5xx, …).
#
# Pinned: schemathesis 4.32.5 from PyPI, installed by scripts/install-deps.sh
# into a venv under ${XDG_CACHE_HOME:-~/.cache}/distributed-sync. The command:
#
#   st run http://127.0.0.1:8080/openapi.json --url http://127.0.0.1:8080 \
#     --checks all --seed 22 --max-examples 40 --max-time 120 --workers 1 \
#     --request-timeout 40 --max-response-time 40 --generation-database none --no-color
#
#   scripts/api-conformance.sh                  # build (debug), start, run, stop
#   SKIP_BUILD=1 scripts/api-conformance.sh     # use the binaries already built
#   PORT_BASE=10000 scripts/api-conformance.sh  # every port + 10000 (gateway 18080), beside another system
#
# A request may take as long as its long poll (queue `wait_ms` up to 20 s),
# hence `--request-timeout 40 --max-response-time 40`. One worker: with two, hypothesis parses its
# lambdas' source in two threads at once, which CPython 3.11's AST
# constructor is not safe for ("AST constructor recursion depth mismatch"),
# and the run reports errors that are not the API's.
#
# Only the processes this script started are stopped (by recorded PID).
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
ST_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/distributed-sync/schemathesis-$ST_VERSION"
ST="$ST_VENV/bin/st"
PROFILE="${PROFILE:-debug}"
BIN="target/$PROFILE"
SEED="${SEED:-22}"
MAX_EXAMPLES="${MAX_EXAMPLES:-40}"
MAX_TIME="${MAX_TIME:-120}"
RUN_DIR="${RUN_DIR:-$PWD/run/api-conformance}"

if [ ! -x "$ST" ]; then
  echo "schemathesis $ST_VERSION is not installed; run scripts/install-deps.sh" >&2
  exit 1
fi

if [ -z "${SKIP_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then cargo build --release --bins; else cargo build --bins; fi
fi

. scripts/lib/system.sh
GW="127.0.0.1:$(system_port 8080)"
rm -rf "$RUN_DIR"
system_start
# Every backend healthy (bounded: 30 s).
if ! system_wait_healthy 300; then
  echo "the system did not become healthy; logs in $RUN_DIR/logs" >&2
  curl -sS "http://$GW/health" >&2 || true
  exit 1
fi

echo "== schemathesis $ST_VERSION against http://$GW/openapi.json (seed $SEED)"
# `timeout` bounds the step even if schemathesis' own budget overruns.
timeout --signal=INT $((MAX_TIME + 60)) "$ST" run "http://$GW/openapi.json" --url "http://$GW" \
  --checks all --seed "$SEED" --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" \
  --workers 1 --request-timeout 40 --max-response-time 40 \
  --generation-database none --no-color \
  --report junit --report-dir "$RUN_DIR/report"
