#!/usr/bin/env bash
# Install what the tests and local runs need that cargo does not bring:
# Redis (the queue and cache services' shared store, and the tests' real
# server). Idempotent; uses Debian's packages.
set -euo pipefail
. "$(dirname "$0")/lib/apt-install.sh"
apt_install_once redis-server redis-server redis-server
