#!/bin/sh
# Run the controller as the unprivileged user 'interlock' (uid 10001) with the Docker socket's
# group, which is all it needs. It stays root only when it cannot drop privileges (no setpriv).
set -eu
socket="${DOCKER_HOST:-unix:///var/run/docker.sock}"
socket="${socket#unix://}"
if [ "$(id -u)" = 0 ] && [ -S "$socket" ] && command -v setpriv >/dev/null 2>&1; then
  group=$(stat -c %g "$socket")
  exec setpriv --reuid=10001 --regid=10001 --groups="$group" --inh-caps=-all \
    /opt/interlock/bin/interlock "$@"
fi
exec /opt/interlock/bin/interlock "$@"
