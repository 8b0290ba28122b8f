#!/usr/bin/env bash
# install-deps.sh -- install every build and test dependency from Debian packages.
# Idempotent: packages already present are skipped; uses sudo when not root.
# Usage: scripts/install-deps.sh [--check]   (--check: exit 1 if anything is missing, install nothing)
set -euo pipefail

PKGS=(
  build-essential pkg-config zlib1g-dev
  libzmq3-dev libmsgpack-dev
  libnifti2-dev libniftiio-dev libznz-dev
  libjansson-dev libpng-dev libssl-dev
  clang libclang-rt-14-dev valgrind iproute2 procps
  python3 python3-numpy python3-nibabel python3-zmq python3-msgpack python3-torch python3-sklearn
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${1:-}" = "--check" ]; then
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && { echo "install-deps: all ${#PKGS[@]} packages present"; exit 0; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
