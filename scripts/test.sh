#!/usr/bin/env bash
# The project's one test command (README, CI): format, lints, every test.
#
# Tests need a real `redis-server` on PATH (the queue and cache suites start
# throwaway servers on free ports); scripts/install-deps.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: run scripts/install-deps.sh first" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo nextest"
# Cluster tests start several nodes each; on a 2-core machine running too
# many at once only produces election timeouts, not coverage.
cargo nextest run --workspace --no-fail-fast --test-threads "${TEST_THREADS:-2}" "$@"
