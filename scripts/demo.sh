#!/usr/bin/env bash
# The main job, until the search pipeline lands: the search space, sampled architectures,
# the published references with their exact costs, and one architecture exported to the
# .tflite file the latency service measures.
set -euo pipefail
cd "$(dirname "$0")/.."
mnas=.venv/bin/mnas
out=${MNAS_DEMO_DIR:-$(mktemp -d)}

set -x
$mnas space describe
$mnas arch list
$mnas arch describe mnasnet-a1
$mnas arch sample --seed 1 --count 3
sampled=$($mnas arch sample --seed 1)
$mnas arch describe --blocks "$sampled" --resolution 28 --classes 10
$mnas arch export mnasnet-a1 -o "$out/mnasnet-a1.tflite"
$mnas arch export --blocks "$sampled" --resolution 28 --classes 10 -o "$out/sampled.tflite"
