#!/usr/bin/env bash
# The main job: bring Interlock up.
#   bash scripts/up.sh           with a Swarm manager at DOCKER_HOST (or the default socket):
#                                `docker stack deploy -c stack.yml interlock` there.
#                                With none: as root on Debian, bring up the local test-bed Swarm
#                                (a private dockerd), build the images locally, deploy stack.yml
#                                and the demo app, and print the curl line that shows routing.
#   bash scripts/up.sh --local   always the local test-bed Swarm.
# Environment: STACK_NAME (interlock), HTTP_PORT and HTTPS_PORT (80 and 443 on a real Swarm, 8000
# and 8443 locally), AGENT_TOKEN_SECRET (<stack>-agent-token: the secret the controller and its
# agents share, made here with a random token unless it exists), ACME_ACCOUNT_SECRET
# (<stack>-acme-account: the ACME account key, made here unless it exists), and every
# variable stack.yml names (INTERLOCK_IMAGE, NGINX_IMAGE, INTERLOCK_MODE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${STACK_NAME:-interlock}
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || echo docker)}

export AGENT_TOKEN_SECRET=${AGENT_TOKEN_SECRET:-$STACK-agent-token}
export ACME_ACCOUNT_SECRET=${ACME_ACCOUNT_SECRET:-$STACK-acme-account}

manager_present() {
  [ "$("$DOCKER" info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = "true" ]
}

# The token the controller and its agents share: random, made once, kept in a Docker secret.
ensure_agent_token() {
  if ! "$DOCKER" secret inspect "$AGENT_TOKEN_SECRET" >/dev/null 2>&1; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' \
      | "$DOCKER" secret create "$AGENT_TOKEN_SECRET" - >/dev/null
    echo "created Docker secret $AGENT_TOKEN_SECRET (the agents' token)"
  fi
}

# The ACME account's key (EC P-256), made once, kept in a Docker secret only the controller
# mounts: certificates ordered with it are the account's; never printed, never in a config.
ensure_acme_account() {
  if ! "$DOCKER" secret inspect "$ACME_ACCOUNT_SECRET" >/dev/null 2>&1; then
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt \
      | "$DOCKER" secret create "$ACME_ACCOUNT_SECRET" - >/dev/null
    echo "created Docker secret $ACME_ACCOUNT_SECRET (the ACME account key)"
  fi
}

if [ "${1:-}" != "--local" ] && command -v "$DOCKER" >/dev/null && manager_present; then
  ensure_agent_token
  ensure_acme_account
  "$DOCKER" stack deploy -c stack.yml "$STACK"
  echo "Deployed stack $STACK. Route a service: join it to network ${PROXY_NETWORK:-interlock-proxy}"
  echo "and label it (deploy.labels) interlock.hostname / interlock.domain / interlock.port."
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "no Swarm manager found; the local test-bed Swarm needs root (sudo bash scripts/up.sh)" >&2
  exit 1
fi
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
install_packages
make_venv
.venv/bin/python -m tests.bed up
eval "$(.venv/bin/python -m tests.bed env)"

export INTERLOCK_IMAGE=interlock-bed/controller:1
BASE=$INTERLOCK_BED_PYTHON_IMAGE IMAGE=$INTERLOCK_IMAGE PYTHON=.venv/bin/python \
  DOCKER="$DOCKER" bash scripts/build-image.sh
export NGINX_IMAGE=$INTERLOCK_BED_NGINX_IMAGE DEMO_IMAGE=$INTERLOCK_BED_BACKEND_IMAGE DEMO_PORT=8080
export DOCKER_SOCKET=${DOCKER_HOST#unix://} HTTP_PORT=${HTTP_PORT:-8000} HTTPS_PORT=${HTTPS_PORT:-8443}
ensure_agent_token
ensure_acme_account
"$DOCKER" stack deploy --resolve-image never -c stack.yml "$STACK"
"$DOCKER" stack deploy --resolve-image never -c manifests/demo.yml "$STACK-demo"

curl_line="curl -s -H 'Host: demo.example.com' http://127.0.0.1:$HTTP_PORT/"
for _ in $(seq 1 120); do
  if answer=$(curl -sf -H 'Host: demo.example.com' "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null) \
      && [[ "$answer" == task=* ]]; then
    echo
    echo "Interlock is routing on the local Swarm (DOCKER_HOST=$DOCKER_HOST):"
    echo "  \$ $curl_line"
    echo "  $answer"
    exit 0
  fi
  sleep 1
done
echo "the demo app did not answer through the proxy within 120 s; see:" >&2
echo "  DOCKER_HOST=$DOCKER_HOST $DOCKER service logs ${STACK}_controller" >&2
exit 1
