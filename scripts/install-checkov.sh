#!/usr/bin/env bash
# Install checkov (PyPI), which scans the rendered chart, into a virtualenv of its own: in the project's
# .venv it would downgrade boto3 (1.44 -> 1.35), packaging (26 -> 23) and networkx (3 -> 2), which the
# services and tests use. Pinned, so every machine scans with the same checks. Idempotent.
#
# usage: scripts/install-checkov.sh [VENV]    (default: .tools/checkov, relative to the repository root)
set -euo pipefail

CHECKOV_VERSION="3.3.30"

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.tools/checkov}"
python="${PYTHON:-python3}"

installed() {
    [[ -x "$venv/bin/checkov" ]] && [[ "$("$venv/bin/checkov" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]
}

if installed; then
    exit 0
fi
# One install at a time (parallel test workers may all find it missing); the others then find it there.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if installed; then
    exit 0
fi
echo "install-checkov: checkov $CHECKOV_VERSION into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
echo "install-checkov: $("$venv/bin/checkov" --version) at $venv/bin/checkov" >&2
