#!/usr/bin/env bash
# Build the two images: mlrollouts/operator (operator/Dockerfile) and mlrollouts/serving
# (serving_image/Dockerfile), then print their sizes.
#
# Builder: Docker where a daemon answers `docker info`; otherwise buildah (daemonless, images land in
# the store podman reads). Base image: pulled from its registry; where no registry answers (or with
# --local-base), a functional stand-in is made from Debian bookworm with mmdebstrap and imported
# under the Dockerfile's exact FROM name. The stand-in runs the same code on the same Python minor
# version; it is not a release base (see docs/install.md).
#
#   hack/images.sh [--local-base | --registry-base]
# Without a Docker daemon and without buildah+podman it says so with the install hint and exits 0;
# under CI=true that is an error.
#   IMAGE_TAG=0.1.0      tag of both images (default: the project version in pyproject.toml)
#   REGISTRY=host/path   prefix of the image names (default: none, i.e. mlrollouts/...)
#   IMAGES="operator"    build only some of them (default: "operator serving")
#   BUILDER=docker       force a builder: docker or buildah (default: detected)
#   LOCAL_BASE=1|0       same as --local-base / --registry-base (default: detected)
#   BUILD_ARGS           extra arguments of `docker build` / `buildah bud`
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/hack/containers.conf}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

die() { echo "images: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --local-base) LOCAL_BASE=1 ;;
    --registry-base) LOCAL_BASE=0 ;;
    *) die "unknown argument '$arg' (--local-base, --registry-base)" ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
tag=${IMAGE_TAG:-${version:-latest}}
prefix=${REGISTRY:+${REGISTRY%/}/}
images=${IMAGES:-operator serving}

INSTALL_HINT="install Docker Engine (https://docs.docker.com/engine/install/), or on Debian/Ubuntu: apt-get install buildah podman mmdebstrap uidmap runc"

no_builder() {
  if [ "${CI:-}" != true ]; then
    echo "images: $1; skipping the image builds."
    echo "        To build them: $INSTALL_HINT"
    exit 0
  fi
  die "$1; $INSTALL_HINT"
}

pick_builder() {
  case "${BUILDER:-}" in
    docker) docker info >/dev/null 2>&1 || no_builder "BUILDER=docker but no Docker daemon answers" ;;
    buildah)
      command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1 \
        || no_builder "BUILDER=buildah but buildah or podman is missing" ;;
    "")
      # A docker client without a daemon may come first on PATH, so ask the daemon instead of
      # looking for the binary.
      if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        BUILDER=docker
      elif command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1; then
        BUILDER=buildah
      else
        no_builder "neither a Docker daemon nor buildah+podman is available"
      fi ;;
    *) die "unknown BUILDER '$BUILDER' (docker, buildah)" ;;
  esac
}

# The base image a Dockerfile starts from, with a `FROM ${ARG}` resolved to the ARG's default.
base_image_of() {
  local dockerfile=$1 from var
  from=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$dockerfile")
  if [[ $from =~ ^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$ ]]; then
    var=${BASH_REMATCH[1]}
    from=$(sed -n "s/^ARG ${var}=\\(.*\\)$/\\1/p" "$dockerfile" | head -n 1)
  fi
  [ -n "$from" ] || die "cannot tell the base image of $dockerfile"
  echo "$from"
}

# The registry host that serves an image reference (Docker Hub for short names).
registry_of() {
  local first=${1%%/*}
  if [[ $1 == */* && ($first == *.* || $first == *:* || $first == localhost) ]]; then
    echo "$first"
  else
    echo registry-1.docker.io
  fi
}

registry_reachable() {
  # Any HTTP answer (a registry says 401 to an anonymous /v2/) means it is reachable.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "https://$(registry_of "$1")/v2/" || true)
  [ "${code:-000}" != "000" ]
}

make_local_base() {
  local name=$1 rootfs
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is needed to make a local base (apt-get install mmdebstrap)"
  rootfs=$(mktemp -d)/rootfs.tar
  echo "images: making a local stand-in for $name (Debian bookworm minbase + python3)"
  # merged-usr hook: /usr merged without the usrmerge package (which pulls in perl). The path
  # excludes are the trims of Debian's slim images: no documentation, manual pages or translations.
  mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$rootfs"
  podman import \
    --change 'LABEL org.opencontainers.image.description="Local stand-in made by hack/images.sh from Debian bookworm; not a release base"' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$rootfs" "$name" >/dev/null
  rm -rf "$(dirname "$rootfs")"
}

# Decides how buildah gets the base image; prints the --pull policy.
prepare_base() {
  local base=$1 local_base=${LOCAL_BASE:-}
  if [ -z "$local_base" ]; then
    if registry_reachable "$base"; then local_base=0; else local_base=1; fi
  fi
  if [ "$local_base" = 0 ]; then
    echo always
    return
  fi
  if podman image exists "$base"; then
    echo "images: using the local base $base already in the store" >&2
  else
    make_local_base "$base" >&2
  fi
  echo never
}

build_one() {
  local builder=$1 dockerfile=$2 name=$3 context=$4 pull
  if [ "$builder" = docker ]; then
    # shellcheck disable=SC2086 # BUILD_ARGS is a list of words
    docker build ${BUILD_ARGS:-} -f "$dockerfile" -t "$name" "$context"
    return
  fi
  pull=$(prepare_base "$(base_image_of "$dockerfile")")
  replaced=$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  # The host's CA bundle is mounted for pip only during the build; it is not part of the image.
  # shellcheck disable=SC2086
  buildah bud --isolation chroot --pull="$pull" --format docker \
    -v "$CA_BUNDLE:$CA_BUNDLE:ro" --build-arg "PIP_CERT=$CA_BUNDLE" \
    ${BUILD_ARGS:-} -f "$dockerfile" -t "$name" "$context"
  # The previous build of this name is now untagged; drop it unless a container still uses it.
  if [ -n "$replaced" ] && [ "$replaced" != "$(podman image inspect --format '{{.Id}}' "$name")" ]; then
    podman rmi "$replaced" >/dev/null 2>&1 || true
  fi
}

image_size() {
  if [ "$1" = docker ]; then
    docker image inspect --format '{{.Size}}' "$2"
  else
    podman image inspect --format '{{.Size}}' "$2"
  fi
}

pick_builder
builder=$BUILDER
echo "images: building with $builder"

# A minimal build context: the project metadata and the two source roots, nothing else
# (no .venv, no caches, no test data).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
tar --exclude='__pycache__' --exclude='*.pyc' -cf - pyproject.toml constraints.txt README.md \
  hack/image_check.py operator/mlrollouts serving_image/mlserving | tar -xf - -C "$context"

built=()
for image in $images; do
  case "$image" in
    operator) dockerfile=operator/Dockerfile ;;
    serving) dockerfile=serving_image/Dockerfile ;;
    *) die "unknown image '$image' (operator, serving)" ;;
  esac
  [ -f "$dockerfile" ] || die "$dockerfile is missing; cannot build mlrollouts/$image"
  name="${prefix}mlrollouts/${image}:${tag}"
  echo "images: building $name from $dockerfile"
  started=$SECONDS
  build_one "$builder" "$dockerfile" "$name" "$context"
  built+=("$name $((SECONDS - started))")
done

echo "images: done (tag $tag)"
printf '%-36s %10s %8s\n' IMAGE SIZE BUILD
for entry in "${built[@]}"; do
  read -r name seconds <<<"$entry"
  bytes=$(image_size "$builder" "$name")
  printf '%-36s %7s MB %7ds\n' "$name" "$(awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1e6 }')" "$seconds"
done
