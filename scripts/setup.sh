# Shared by scripts/test.sh and scripts/up.sh (source it from the repository root, as root):
# install_packages installs the Debian packages the project needs (once; quick when present),
# make_venv creates .venv with the project and its test extras (again only when pyproject changes).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(
  docker.io          # dockerd 20.10 + containerd + runc + docker-proxy: the test bed's engine
  mmdebstrap         # builds the Debian root filesystem of the bed's images (no registry here)
  nginx-light        # nginx -t / haproxy -c in the unit tests, same versions as in the images
  haproxy
  python3 python3-venv python3-pip
  iproute2           # ip: the bed's own Linux bridge
  curl wrk           # manual probes and load tests against 127.0.0.1
  prometheus         # the dashboard test queries a real Prometheus (run on 127.0.0.1 only)
  tmux               # `interlock top` is tested in a real terminal
  pebble             # an RFC 8555 test CA (and pebble-challtestsrv) for the ACME tests, on 127.0.0.1
  busybox            # the sh of Alpine-based proxy images: the kept shell's wire is tested in it
)


missing_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
      || echo "$pkg"
  done
}

install_packages() {
  local missing
  missing=$(missing_packages)
  if [ -z "$missing" ]; then
    echo "    all apt packages present"
    return
  fi
  # shellcheck disable=SC2086
  echo "    installing:" $missing
  # Package scripts must not start services (nginx on :80, a dockerd on the default socket):
  # policy-rc.d exit 101 tells invoke-rc.d "not now". Only ours is removed afterwards.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  fi
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing > /tmp/interlock-apt.log 2>&1 \
    || { tail -30 /tmp/interlock-apt.log; [ -n "$own_policy" ] && rm -f "$policy"; exit 1; }
  [ -n "$own_policy" ] && rm -f "$policy"
  return 0
}

venv_stamp() { sha256sum pyproject.toml | cut -c1-16; }

make_venv() {
  local python=/usr/bin/python3
  [ -x "$python" ] || python=python3
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
    rm -rf .venv
    "$python" -m venv .venv
  fi
  if [ "$(cat .venv/.interlock-installed 2>/dev/null)" = "$(venv_stamp)" ]; then
    echo "    .venv up to date"
    return
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  venv_stamp > .venv/.interlock-installed
}
