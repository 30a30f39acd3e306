#!/usr/bin/env bash
# Installs Go and Debian's govmomi sources, then builds the vcsim conformance
# harness (tests/vcsim/main.go) offline into target/vcsim/coffer-vcsim.
# Idempotent: packages already installed are not asked for again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in golang-go golang-github-vmware-govmomi-dev; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need+=("$pkg")
    fi
done
if ((${#need[@]})); then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

out="${VCSIM_BIN:-${CARGO_TARGET_DIR:-target}/vcsim/coffer-vcsim}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# Debian's golang-*-dev packages put their sources in a GOPATH tree; build
# with modules off so nothing is fetched.
GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="${GOCACHE:-$(dirname "$out")/gocache}" \
    go build -o "$out" ./tests/vcsim/main.go
echo "built $out"
