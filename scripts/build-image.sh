#!/usr/bin/env bash
# Build the controller's image on the engine DOCKER_HOST points at.
#   BASE   base image with Python >= 3.10 (default python:3.12-slim)
#   IMAGE  the tag to build            (default interlock-swarm/controller:0.1.0)
# The wheels of the project and its dependencies are built here first (pip reaches PyPI from this
# machine), so the image build needs no network of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-python:3.12-slim}
IMAGE=${IMAGE:-interlock-swarm/controller:0.1.0}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}

# The wheels must fit the base image's Python (pydantic-core is compiled): ask the base.
read -r version machine < <("$DOCKER" run --rm --network none --entrypoint python3 "$BASE" -c \
  'import sys, platform; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine())')
rm -rf build/wheels
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir build/wheels .
"$PYTHON" -m pip download -q --only-binary=:all: --python-version "$version" \
  --platform "manylinux2014_$machine" --implementation cp --dest build/wheels \
  build/wheels/interlock_swarm-*.whl
DOCKER_BUILDKIT=0 "$DOCKER" build -q --build-arg "BASE=$BASE" -t "$IMAGE" . >/dev/null
# The previous build of the same tag is left untagged: remove such leftovers of ours only.
"$DOCKER" image prune -f --filter "label=org.opencontainers.image.title=interlock-swarm" >/dev/null
echo "built $IMAGE (base $BASE)"
