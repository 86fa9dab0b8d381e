"""The interpolation benchmark: its error summary, and a run on a small synthetic
predictor file whose layer kernels are exactly linear in the features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.interpolation import held_out_estimates, main, summary
from services.latency.predictor import (
    Correction,
    Kernel,
    LatencyPredictor,
    LayerKernel,
    network_kernels,
)
from services.latency.predictor.interpolate import COLUMNS, layer_features
from tests.latency.archs import random_architectures


def test_summary_of_relative_errors() -> None:
    result = summary([(1.05, 1.0), (0.9, 1.0), (2.4, 2.0), (1.0, 2.0)])
    assert result["kernels"] == 4
    assert result["mean_abs_rel_error"] == pytest.approx(0.2125)
    assert result["median_abs_rel_error"] == pytest.approx(0.15)
    assert result["within_10pct"] == 0.5
    assert result["within_25pct"] == 0.75
    assert result["total_abs_error"] == pytest.approx(1.55 / 6)
    assert summary([]) == {"kernels": 0}


def _table() -> dict[Kernel, float]:
    weights = np.linspace(1.0, 2.0, len(COLUMNS)) * 1e-10
    weights[-1] = 1e-5  # the constant
    table: dict[Kernel, float] = {}
    for arch in random_architectures(40, seed=3):
        for kernel in network_kernels(arch, resolution=32, width=1.0, num_classes=10).kernels:
            seconds = 2e-4
            if isinstance(kernel, LayerKernel):
                seconds = float(weights @ layer_features(kernel))
            table[kernel] = seconds
    return table


def test_folds_hold_out_every_kernel_once() -> None:
    table = {k: s for k, s in _table().items() if isinstance(k, LayerKernel)}
    estimates = held_out_estimates(table, folds=4, seed=1)
    assert set(estimates) == set(table)
    for kernel, estimate in estimates.items():  # exactly linear: the estimates reproduce it
        assert estimate == pytest.approx(table[kernel], rel=1e-2)
    with pytest.raises(ValueError, match="folds"):
        held_out_estimates(table, folds=1, seed=1)


def _run(table: dict[Kernel, float], path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    LatencyPredictor(device_class="d", build="b", kernels=table, correction=Correction()).save(path)
    assert main(["--predictor", str(path), "--folds", "3", "--seed", "2"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_run_on_a_predictor_file_prints_one_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table()
    result = _run(table, tmp_path / "predictor.json", capsys)
    layers = sum(isinstance(k, LayerKernel) for k in table)
    assert result["layer_kernels"] == result["overall"]["kernels"] == layers
    assert result["zero_kernels"] == 0
    assert result["features"] == len(COLUMNS)
    assert result["overall"]["within_10pct"] == 1.0
    assert result["overall"]["total_abs_error"] < 0.01
    assert sum(g["kernels"] for g in result["groups"].values()) == layers
    assert set(result["groups"]) <= {
        f"{op}/s{s}" for op in ("conv", "dconv", "mbconv") for s in (1, 2)
    }

    zero = next(k for k in table if isinstance(k, LayerKernel))
    table[zero] = 0.0  # the measurer's floor: no relative error, left out of the figures
    result = _run(table, tmp_path / "with-zero.json", capsys)
    assert result["zero_kernels"] == 1
    assert result["overall"]["kernels"] == layers - 1
