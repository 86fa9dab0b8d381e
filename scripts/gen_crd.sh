#!/usr/bin/env bash
# Regenerate the MnasSearch CRD from mnas.v1.SearchSpec (tests/operator/test_crd.py fails
# when the checked-in copy is stale). Run from anywhere: scripts/gen_crd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
"$python" -m services.operator.crd k8s/components/crd/mnassearches.yaml
echo "wrote k8s/components/crd/mnassearches.yaml"
