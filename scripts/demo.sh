#!/usr/bin/env bash
# The main job: a small real search on the embedded default. Starts the controller,
# trainer, latency and reward services on loopback (SQLite store mnas.db, LiteRT latency
# on this CPU, Fashion-MNIST), runs examples/quickstart.yaml, prints the best trials and
# the Pareto front of accuracy against latency.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mnas search examples/quickstart.yaml --store "${MNAS_STORE:-mnas.db}" "$@"
