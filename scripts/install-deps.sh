#!/usr/bin/env bash
# Install what the tests and local runs need that cargo does not bring:
# Redis (the queue and cache services' shared store, and the tests' real
# server); for the fault suite (scripts/chaos.sh) iproute2 and iptables
# (the lock nodes' network namespaces and partitions) and a C compiler (the
# disk fault shim); for the API conformance test (scripts/api-conformance.sh)
# schemathesis, pinned, from PyPI into a venv under the user's cache dir;
# for the web console's browser test (gateway/tests/ui.rs) Debian's chromium
# and chromium-driver (chromedriver).
# Idempotent; uses Debian's packages and PyPI.
set -euo pipefail
. "$(dirname "$0")/lib/apt-install.sh"
apt_install_once redis-server redis-server redis-server
apt_install_once iptables iptables iptables
apt_install_once cc gcc gcc
# Chromium's launcher script prints noise on stderr for --version.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "chromium present: $(chromium --version 2>/dev/null | head -n1)"
echo "chromedriver present: $(chromedriver --version 2>/dev/null | head -n1)"
if ! command -v ip >/dev/null 2>&1; then
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iproute2 >/dev/null
fi
echo "ip present: $(ip -V)"

# schemathesis (pinned; scripts/api-conformance.sh names the same version).
ST_VERSION=4.32.5
ST_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/distributed-sync/schemathesis-$ST_VERSION"
if ! "$ST_VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
echo "schemathesis present: $("$ST_VENV/bin/st" --version)"
