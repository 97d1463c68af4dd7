#!/usr/bin/env bash
# The canary of `make demo` on the playground with every pod a container of the built images, and
# the operator installed from the chart (`make e2e-images`).
#
# 1. Builds the images (hack/images.sh with buildah) unless both are already in podman's store.
# 2. Starts the playground with --runtime podman and without its own operator: the API emulator,
#    Prometheus and the kubelet run as host processes; every pod runs as a podman container.
# 3. Applies the chart's rendered objects (namespace, ServiceAccount, RBAC, settings ConfigMap,
#    operator Deployment; charts/mlrollouts rendered offline with helm-python-sdk): the operator
#    runs as a container of mlrollouts/operator under a kubeconfig of its ServiceAccount.
# 4. Runs the canary scenario (v1 up, v2 promoted, broken v3 rolled back): model servers and the
#    router run as containers of mlrollouts/serving. Prints the report and the total time.
#
# Without podman it says so with the install hint and exits 0; under CI=true that is an error.
#   IMAGE_TAG, REGISTRY   as for hack/images.sh
#   E2E_ROOT=DIR          work directory (default: a new temporary one, kept for its logs)
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/hack/containers.conf}
PY=${PY:-.venv/bin/python}
INSTALL_HINT="apt-get install -y buildah podman mmdebstrap uidmap runc"
started=$SECONDS

if ! command -v podman >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then
    echo "e2e-images: podman is missing; $INSTALL_HINT" >&2
    exit 1
  fi
  echo "e2e-images: podman is missing; skipping. To run it: $INSTALL_HINT"
  exit 0
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
tag=${IMAGE_TAG:-${version:-latest}}
prefix=${REGISTRY:+${REGISTRY%/}/}
missing=()
for image in operator serving; do
  podman image exists "${prefix}mlrollouts/${image}:${tag}" || missing+=("$image")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "e2e-images: building ${missing[*]}"
  IMAGES="${missing[*]}" BUILDER=buildah bash hack/images.sh
else
  echo "e2e-images: images ${prefix}mlrollouts/{operator,serving}:${tag} already built"
fi

root=${E2E_ROOT:-$(mktemp -d -t mlrollouts-e2e-images-XXXXXX)}
echo "e2e-images: work directory $root (playground logs in $root/state/logs, pod logs in $root/state/work/pods)"
PYTHONPATH="tests${PYTHONPATH:+:$PYTHONPATH}" "$PY" tests/images/playground_containers.py --operator-from-chart --root "$root"
echo "e2e-images: total $((SECONDS - started)) s"
