#!/usr/bin/env bash
# The system packages a make target needs, checked before anything slow (venv build, model training).
# Missing Debian/Ubuntu packages are installed where apt-get can run (as root, or through passwordless
# sudo); otherwise the script stops at once and prints the exact command to run.
#
#   hack/prereqs.sh demo   the playground: prometheus
#   hack/prereqs.sh test   the test suites: prometheus, wrk, hey
#
# kubectl is optional (the tests that drive it are skipped without it, and fail under CI=true); it is
# not in every distribution's archive, so it is named with its own hint rather than installed.
set -euo pipefail

target="${1:-}"
case "$target" in
  demo) binaries=(prometheus) ;;
  test) binaries=(prometheus wrk hey) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

# binary -> Debian package (the same name for every binary needed today)
declare -A package_of=([prometheus]=prometheus [wrk]=wrk [hey]=hey)

missing=()
for binary in "${binaries[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${package_of[$binary]}")
done

# The venv is built with python3's venv module, which Debian ships separately (python3-venv).
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  if ! command -v "$python" >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
  elif ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "note: kubectl is not on PATH (optional; install kubectl 1.32 to use it against the playground)" >&2
fi

[ "${#missing[@]}" -eq 0 ] && exit 0

install_args=(install -y -qq --no-install-recommends "${missing[@]}")
command_line="sudo apt-get update && sudo apt-get install -y ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "make $target needs system packages that are not installed: ${missing[*]} (apt-get is not" \
    "available here: install them with your system's package manager)" >&2
  exit 1
fi

if [ "$(id -u)" = "0" ]; then
  runner=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  runner=(sudo -n)
else
  echo "make $target needs system packages that are not installed: ${missing[*]}" >&2
  echo "install them with:" >&2
  echo "  $command_line" >&2
  exit 1
fi

echo "make $target: installing ${missing[*]} with apt-get ..." >&2
if ! { "${runner[@]}" apt-get update -qq &&
  "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${install_args[@]}"; } >&2; then
  echo "installing ${missing[*]} failed; run: $command_line" >&2
  exit 1
fi
for binary in "${binaries[@]}"; do
  if ! command -v "$binary" >/dev/null 2>&1; then
    echo "$binary is still not on PATH after installing ${missing[*]}" >&2
    exit 1
  fi
done
