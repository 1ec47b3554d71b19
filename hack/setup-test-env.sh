#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (or CI) for the whole test suite, idempotently:
#   - apt: nginx, haproxy, redis-server, prometheus, wrk (real servers the tests run on loopback),
#     cmake/ninja/g++ (to build llama.cpp's llama-server);
#   - pip: torch 2.13.0 CPU first (so nothing pulls a multi-GB CUDA build), then this package
#     with its test and semantic-cache extras;
#   - Helm 3 and Helm 4 (chart tests), llama-server and the tiny GGUF models (real-engine tests),
#     all cached under ${LLMFLEET_CACHE:-~/.cache/llmfleet}, outside the checkout.
# Re-running it skips whatever is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup-test-env: $*" >&2; }

APT_PACKAGES=(nginx haproxy redis-server prometheus wrk cmake ninja-build g++ make)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Helm comes from the npm registry (hack/get-helm.sh); Node.js is usually preinstalled.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "installing with apt: ${missing[*]}"
    # The tests start their own servers on loopback; keep the packages' services from starting.
    policy_added=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [[ -n "$policy_added" ]] && $SUDO rm -f /usr/sbin/policy-rc.d
fi

PIP=(python3 -m pip install --quiet --disable-pip-version-check)
if ! python3 -c "import torch" 2>/dev/null; then
    log "installing torch 2.13.0 (CPU)"
    "${PIP[@]}" torch==2.13.0
fi
log "installing llmfleet with test extras"
"${PIP[@]}" -e '.[test,semantic]'

log "fetching Helm 3 and Helm 4"
hack/get-helm.sh >/dev/null
log "building llama-server (first time: several minutes)"
hack/build-llama-server.sh >/dev/null
log "writing the tiny test models"
python3 hack/make-tiny-model.py all >/dev/null
log "ready"
