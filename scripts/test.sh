#!/usr/bin/env bash
# The one test command: on a fresh Debian 12 machine, as root, from anywhere in the repo:
#   bash scripts/test.sh [pytest args...]     (default: all tests; e.g. `tests/swarm -k reload`)
# Installs what the suite needs (apt, once), a venv at .venv with the project and its test extras,
# brings up the private Docker Swarm test bed (python -m tests.bed up; reused when already up) and
# its 3-node Swarm of node containers for the multi-node tests (up --nodes 3; INTERLOCK_BED_NODES=0
# leaves it out, and then those tests skip, except under CI where they fail), then runs pytest.
# Any failure, including "no tests collected" (pytest exit 5), exits non-zero.
set -euo pipefail

cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }
elapsed() { echo "    ($(( $(date +%s) - $1 ))s)"; }

# shellcheck source=scripts/setup.sh
source scripts/setup.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root (it installs packages and runs a private dockerd)" >&2
  exit 1
fi

t=$(date +%s); step "apt packages"; install_packages; elapsed "$t"
t=$(date +%s); step "python venv (.venv)"; make_venv; elapsed "$t"
t=$(date +%s); step "test bed (python -m tests.bed up)"; .venv/bin/python -m tests.bed up; elapsed "$t"
nodes=${INTERLOCK_BED_NODES:-3}
if [ "$nodes" != 0 ]; then
  t=$(date +%s); step "multi-node bed (python -m tests.bed up --nodes $nodes)"
  .venv/bin/python -m tests.bed up --nodes "$nodes"; elapsed "$t"
fi
.venv/bin/python -m tests.bed clean --older-than 3600

step "layers (lint-imports: the pure core imports no engine; layers run one way)"
.venv/bin/lint-imports --no-cache

step "pytest"
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec .venv/bin/python -m pytest -v --durations=25 "$@"
