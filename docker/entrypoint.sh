#!/bin/sh
# Entrypoint of the distributed-sync service image.
#
# A scaled compose service (queue-service, cache-service) has no fixed name
# per replica: its peers learn the replicas from DNS (the service name
# resolves to one address per container). A node's name in the ring must be
# exactly what DNS returns for it, so for those two commands, when
# ADVERTISE_ADDR is not set and the node listens on a wildcard address, this
# sets ADVERTISE_ADDR to the container's own IPv4 address plus the listen
# port. Then it runs the command.
set -eu

container_ip() {
  # The first global IPv4 address (compose attaches one network per service here).
  ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')
  if [ -z "$ip" ]; then
    ip=$(hostname -i 2>/dev/null | awk '{ print $1 }')
  fi
  printf '%s' "$ip"
}

case "${1:-}" in
  queue-service|cache-service|*/queue-service|*/cache-service) wants_advertise=1 ;;
  *) wants_advertise="" ;;
esac

if [ -n "$wants_advertise" ] && [ -z "${ADVERTISE_ADDR:-}" ] && [ -n "${LISTEN_ADDR:-}" ]; then
  case "$LISTEN_ADDR" in
    0.0.0.0:*|\[::\]:*)
      ip=$(container_ip)
      if [ -z "$ip" ]; then
        echo "entrypoint: cannot determine the container IP for ADVERTISE_ADDR" >&2
        exit 1
      fi
      ADVERTISE_ADDR="$ip:${LISTEN_ADDR##*:}"
      export ADVERTISE_ADDR
      echo "entrypoint: ADVERTISE_ADDR=$ADVERTISE_ADDR" >&2
      ;;
  esac
fi

exec "$@"
