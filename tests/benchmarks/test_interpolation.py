"""The interpolation benchmark: its error summary, and a run on a small synthetic
predictor file whose layer kernels are exactly linear in the features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.interpolation import held_out_errors, main, summary
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
    result = summary([0.05, 0.1, 0.2, 0.5])
    assert result["kernels"] == 4
    assert result["mean_abs_rel_error"] == pytest.approx(0.2125)
    assert result["median_abs_rel_error"] == pytest.approx(0.15)
    assert result["within_10pct"] == 0.5
    assert result["within_25pct"] == 0.75
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
    errors = held_out_errors(table, folds=4, seed=1)
    assert set(errors) == set(table)
    assert max(errors.values()) < 1e-2  # exactly linear: the estimates reproduce it
    zero = next(iter(table))
    table[zero] = 0.0  # the measurer's floor: no relative error, left out
    assert set(held_out_errors(table, folds=4, seed=1)) == set(table) - {zero}
    with pytest.raises(ValueError, match="folds"):
        held_out_errors(table, folds=1, seed=1)


def test_a_run_on_a_predictor_file_prints_one_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table()
    path = tmp_path / "predictor.json"
    LatencyPredictor(device_class="d", build="b", kernels=table, correction=Correction()).save(path)
    assert main(["--predictor", str(path), "--folds", "3", "--seed", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    layers = sum(isinstance(k, LayerKernel) for k in table)
    assert result["layer_kernels"] == layers
    assert result["zero_kernels"] == 0
    assert result["features"] == len(COLUMNS)
    assert result["overall"]["kernels"] == layers
    assert result["overall"]["within_10pct"] == 1.0
    assert sum(g["kernels"] for g in result["groups"].values()) == layers
    assert set(result["groups"]) <= {
        f"{op}/s{s}" for op in ("conv", "dconv", "mbconv") for s in (1, 2)
    }
