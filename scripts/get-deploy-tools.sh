#!/usr/bin/env bash
# The checkers tests/deploy.rs uses on deploy/: a Python venv under
# target/tools/pyenv with kubernetes-validate (Kubernetes OpenAPI schemas,
# offline; brings jsonschema and PyYAML), and Debian's lua5.4 (luac -p of
# the pktgen script). Idempotent.
#   scripts/get-deploy-tools.sh [DEST]      (default target/tools/pyenv)
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/target/tools/pyenv"}
if ! "$dest/bin/python" -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null; then
    python3 -m venv "$dest"
    "$dest/bin/pip" install -q --disable-pip-version-check "kubernetes-validate>=1.30"
fi
"$dest/bin/python" -c "import kubernetes_validate; print('deploy tools: kubernetes-validate', getattr(kubernetes_validate, '__version__', ''))"
if ! command -v luac5.4 >/dev/null || ! command -v lua5.4 >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lua5.4
fi
luac5.4 -v
