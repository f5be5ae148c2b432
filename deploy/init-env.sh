#!/bin/sh
# Write the .env that compose.yaml needs: a random password per NATS user, a random API token,
# and the group id of the Docker socket (runners join that group instead of running as root).
# Usage: deploy/init-env.sh [FILE]   (default: .env next to compose.yaml; never overwritten)
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
file="${1:-$root/.env}"
if [ -e "$file" ]; then
  echo "$file exists; not overwriting it (delete it first to start over)" >&2
  exit 1
fi
# A letter first: nats-server reads these through its config parser, which would turn a value
# that looks like a number (123456, 1e5) into one and refuse it as a password.
secret() { printf 'tm%s' "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"; }
socket="${DOCKER_SOCKET:-/var/run/docker.sock}"
# GNU stat, then BSD stat; 0 (root's group) when the socket is not visible from here.
gid="$(stat -c %g "$socket" 2>/dev/null || stat -f %g "$socket" 2>/dev/null || echo 0)"
umask 077
cat > "$file" <<END
# Written by deploy/init-env.sh. Secrets: keep this file private.
TASKMESH_API_TOKEN=$(secret)
TASKMESH_NATS_GATEWAY_PASSWORD=$(secret)
TASKMESH_NATS_STORE_PASSWORD=$(secret)
TASKMESH_NATS_SCHEDULER_PASSWORD=$(secret)
TASKMESH_NATS_RUNNER_PASSWORD=$(secret)
TASKMESH_NATS_ADMIN_PASSWORD=$(secret)
# seals secret values at rest (gateway and runners): base64 of 32 random bytes; README "Secrets" on rotation
TASKMESH_SECRETS_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
# user `client`: submit and follow tasks over NATS (README, "NATS")
TASKMESH_NATS_CLIENT_PASSWORD=$(secret)
# the 3-node cluster only (compose.cluster.yaml): what nodes present to each other, and the system account
TASKMESH_NATS_ROUTE_PASSWORD=$(secret)
TASKMESH_NATS_SYSTEM_PASSWORD=$(secret)
# group of $socket (runners need it to start sandboxes)
TASKMESH_DOCKER_GID=$gid
END
echo "wrote $file (API token: TASKMESH_API_TOKEN in it)"
