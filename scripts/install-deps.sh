#!/usr/bin/env bash
# Install what the tests and local runs need that cargo does not bring:
# Redis (the queue and cache services' shared store, and the tests' real
# server). Idempotent; uses Debian's packages.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server present: $(redis-server --version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server >/dev/null
# Debian's package starts a system instance; the project never uses it.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
echo "installed: $(redis-server --version)"
