"""How well the kernel interpolator estimates layer kernels it was not fitted on.

Reads a predictor file (what ``mnas latency calibrate`` writes), splits its layer kernels
into ``--folds`` folds at random (``--seed``), fits
:class:`services.latency.predictor.interpolate.KernelInterpolator` on all folds but one
and estimates the kernels of the one held out, for each fold in turn. Kernels measured at
zero seconds (the measurer's floor) have no relative error and are left out of the
figures (``zero_kernels`` counts them). Prints progress on stderr and one JSON object on
stdout, over all layer kernels and per (op, stride) group: the absolute relative error's
mean and median, the shares of estimates within 10% and 25% of the table's figure, and
``total_abs_error`` (the sum of absolute errors over the sum of the table's seconds: how
much a network summed from estimated kernels could be off).

    python -m benchmarks.interpolation --predictor FILE [--folds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.latency.predictor import LatencyPredictor, LayerKernel
from services.latency.predictor.interpolate import KernelInterpolator, layer_features

_logger = logging.getLogger(__name__)


def summary(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Figures for (estimate, measured) pairs, measured above zero."""
    if not pairs:
        return {"kernels": 0}
    errors = [abs(e - m) / m for e, m in pairs]
    return {
        "kernels": len(errors),
        "mean_abs_rel_error": statistics.fmean(errors),
        "median_abs_rel_error": statistics.median(errors),
        "within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
        "within_25pct": sum(e <= 0.25 for e in errors) / len(errors),
        "total_abs_error": sum(abs(e - m) for e, m in pairs) / sum(m for _, m in pairs),
    }


def held_out_estimates(
    table: dict[LayerKernel, float], *, folds: int, seed: int
) -> dict[LayerKernel, float]:
    """Each kernel's estimate by an interpolator fitted with its fold held out."""
    if folds < 2:
        raise ValueError(f"folds: {folds}, need at least 2")
    kernels = sorted(table, key=repr)
    random.Random(seed).shuffle(kernels)
    estimates: dict[LayerKernel, float] = {}
    for fold in range(folds):
        held = kernels[fold::folds]
        held_set = set(held)
        interpolator = KernelInterpolator({k: s for k, s in table.items() if k not in held_set})
        estimates.update((kernel, interpolator(kernel)) for kernel in held)
        _logger.info("fold %d/%d: %d kernels held out", fold + 1, folds, len(held))
    return estimates


def report(path: Path, *, folds: int, seed: int) -> dict[str, Any]:
    data = json.loads(path.read_text())
    predictor = LatencyPredictor.from_json(
        data, device_class=str(data.get("device_class")), where=str(path)
    )
    table = {k: s for k, s in predictor.kernels.items() if isinstance(k, LayerKernel)}
    if not table:
        raise ValueError(f"{path}: no layer kernels")
    _logger.info("%s: %d layer kernels", path, len(table))
    estimates = held_out_estimates(table, folds=folds, seed=seed)
    pairs: dict[str, list[tuple[float, float]]] = {}
    for kernel, estimate in estimates.items():
        if table[kernel] > 0:
            pair = (estimate, table[kernel])
            pairs.setdefault(f"{kernel.op}/s{kernel.stride}", []).append(pair)
    scored = [pair for group in pairs.values() for pair in group]
    return {
        "predictor": str(path),
        "device_class": predictor.device_class,
        "layer_kernels": len(table),
        "zero_kernels": len(table) - len(scored),
        "features": len(layer_features(next(iter(table)))),
        "folds": folds,
        "seed": seed,
        "overall": summary(scored),
        "groups": {name: summary(pairs[name]) for name in sorted(pairs)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictor", type=Path, required=True, help="predictor file")
    parser.add_argument("--folds", type=int, default=5, help="folds (5)")
    parser.add_argument("--seed", type=int, default=0, help="how the folds are drawn (0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    print(json.dumps(report(args.predictor, folds=args.folds, seed=args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
