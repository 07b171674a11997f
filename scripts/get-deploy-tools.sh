#!/usr/bin/env bash
# The checkers tests/deploy.rs uses on deploy/: a Python venv under
# target/tools/pyenv with kubernetes-validate (Kubernetes OpenAPI schemas,
# offline; brings jsonschema and PyYAML) and scapy (the TRex profile's
# packets), and Debian's lua5.4 (luac -p and the pktgen mock). Idempotent.
#   scripts/get-deploy-tools.sh [DEST]      (default target/tools/pyenv)
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/target/tools/pyenv"}
if ! "$dest/bin/python" -c "import kubernetes_validate, scapy, jsonschema, yaml" 2>/dev/null; then
    python3 -m venv "$dest"
    "$dest/bin/pip" install -q --disable-pip-version-check "kubernetes-validate>=1.30" "scapy>=2.5"
fi
"$dest/bin/python" -c "import kubernetes_validate, scapy; print('deploy tools: kubernetes-validate', kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else '', 'scapy', scapy.VERSION)"
if ! command -v luac5.4 >/dev/null || ! command -v lua5.4 >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lua5.4
fi
luac5.4 -v
