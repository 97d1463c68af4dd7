#!/usr/bin/env bash
# Build the two images: mlrollouts/operator (operator/Dockerfile) and mlrollouts/serving
# (serving_image/Dockerfile). Without a working Docker it says so and exits 0.
#
#   IMAGE_TAG=0.1.0      tag of both images (default: the project version in pyproject.toml)
#   REGISTRY=host/path   prefix of the image names (default: none, i.e. mlrollouts/...)
#   IMAGES="operator"    build only some of them (default: "operator serving")
#   DOCKER_BUILD_ARGS    extra arguments of `docker build`, e.g. "--platform linux/arm64"
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1; then
  echo "images: docker not found; skipping the image builds."
  echo "        Install Docker Engine (https://docs.docker.com/engine/install/) to build them."
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "images: the Docker daemon is not reachable (docker info failed); skipping the image builds."
  exit 0
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
tag=${IMAGE_TAG:-${version:-latest}}
prefix=${REGISTRY:+${REGISTRY%/}/}
images=${IMAGES:-operator serving}

# A minimal build context: the project metadata and the two source roots, nothing else
# (no .venv, no caches, no test data).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
tar --exclude='__pycache__' --exclude='*.pyc' -cf - pyproject.toml constraints.txt README.md \
  operator/mlrollouts serving_image/mlserving | tar -xf - -C "$context"

for image in $images; do
  case "$image" in
    operator) dockerfile=operator/Dockerfile ;;
    serving) dockerfile=serving_image/Dockerfile ;;
    *) echo "images: unknown image '$image' (operator, serving)" >&2; exit 2 ;;
  esac
  if [ ! -f "$dockerfile" ]; then
    echo "images: $dockerfile is missing; cannot build mlrollouts/$image" >&2
    exit 1
  fi
  name="${prefix}mlrollouts/${image}:${tag}"
  echo "images: building $name from $dockerfile"
  # shellcheck disable=SC2086 # DOCKER_BUILD_ARGS is a list of words
  docker build ${DOCKER_BUILD_ARGS:-} -f "$dockerfile" -t "$name" "$context"
done
echo "images: done ($images, tag $tag)"
