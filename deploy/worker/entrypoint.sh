#!/bin/sh
# The worker's container entrypoint. Unless LEADSCORE_ADVERTISED_URL is set (Kubernetes sets
# it to the pod's stable DNS name), advertise this container's own address: with several
# replicas (`docker compose up --scale worker=N`), each forwards look-ups for contacts it does
# not own to the owner's advertised URL, and a shared service name would reach any replica.
set -eu
if [ -z "${LEADSCORE_ADVERTISED_URL:-}" ]; then
  address=$(python -c 'import socket; print(socket.gethostbyname(socket.gethostname()))')
  LEADSCORE_ADVERTISED_URL="http://${address}:${LEADSCORE_WEB_PORT:-6066}"
  export LEADSCORE_ADVERTISED_URL
fi
exec python -m streams.worker "$@"
