"""The proxy-fidelity benchmark: Kendall's tau-b, the proxy read from a spec, the long
recipe, a tiny real run of the whole command, and the summary after an interrupt."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import proxy_fidelity
from benchmarks.proxy_fidelity import (
    DEFAULT_SPEC,
    kendall_tau_b,
    load_proxy,
    long_config,
    main,
    tied_pairs,
)
from mnas.space import preset
from services.trainer.training import TrainingConfig, TrainOutcome


@pytest.mark.parametrize(
    ("x", "y", "tau"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3], [3, 1, 2], -1 / 3),
        # one pair tied in x only, one in y only: 4 / sqrt(5 * 5) (scipy's kendalltau too)
        ([1, 2, 2, 3], [1, 2, 3, 3], 0.8),
        # a pair tied in both counts in neither the numerator nor the denominator
        ([1, 1, 2], [1, 1, 3], 1.0),
        ([0.5, 0.7, 0.6, 0.9, 0.8], [0.55, 0.65, 0.7, 0.95, 0.75], 0.8),
    ],
)
def test_kendall_tau_b(x: list[float], y: list[float], tau: float) -> None:
    assert kendall_tau_b(x, y) == pytest.approx(tau)


def test_kendall_tau_b_is_nan_for_a_constant_sample_and_rejects_unpaired_ones() -> None:
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau_b([], []))
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau_b([1, 2], [1, 2, 3])


@settings(deadline=None)  # pure, but a loaded machine can take a while
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=12))
def test_kendall_tau_b_is_symmetric_bounded_and_odd(pairs: list[tuple[int, int]]) -> None:
    x = [float(a) for a, _ in pairs]
    y = [float(b) for _, b in pairs]
    tau = kendall_tau_b(x, y)
    if math.isnan(tau):
        assert len(set(x)) == 1 or len(set(y)) == 1
        return
    assert -1.0 - 1e-12 <= tau <= 1.0 + 1e-12
    assert kendall_tau_b(y, x) == pytest.approx(tau)
    assert kendall_tau_b(x, [-v for v in y]) == pytest.approx(-tau)


def test_tied_pairs() -> None:
    assert tied_pairs([0.5, 0.6, 0.7]) == 0
    assert tied_pairs([0.5, 0.5, 0.7, 0.5]) == 3
    assert tied_pairs([]) == 0


def test_the_proxy_is_the_quickstarts_training_and_space() -> None:
    document = yaml.safe_load(DEFAULT_SPEC.read_text())
    proxy = load_proxy(DEFAULT_SPEC)
    for field, value in document["training"].items():
        if hasattr(proxy.config, field) and field != "dataset":
            assert getattr(proxy.config, field) == value, field
    assert proxy.config.evaluate_every_steps == 0
    space = document.get("space", {})
    assert proxy.build.width == space.get("width", 1.0)
    native = 28  # Fashion-MNIST's, the default resolution
    assert proxy.build.resolution == proxy.space.resolution == space.get("resolution", native)
    assert proxy.preset == space.get("preset", "mnasnet")
    assert proxy.space.stages == preset(proxy.preset).stages


SPEC = """
objective: {kind: soft, target_latency_seconds: 0.002}
budget: {max_trials: 4}
space: {preset: small-images, resolution: 28, width: 0.25}
training: {train_examples: 1000, validation_examples: 500, epochs: 1, batch_size: 32}
"""


def test_a_spec_preset_and_the_controllers_defaults(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    proxy = load_proxy(path)
    assert proxy.space.stages == preset("small-images").stages
    assert (proxy.build.width, proxy.build.resolution, proxy.build.num_classes) == (0.25, 28, 10)
    assert proxy.available == 60000 - 500  # Fashion-MNIST's training images not held out
    config = proxy.config
    assert (config.train_examples, config.validation_examples, config.batch_size) == (
        1000,
        500,
        32,
    )
    assert (config.optimizer, config.schedule, config.learning_rate) == ("sgd", "cosine", 0.05)


def test_cli_overrides_apply_before_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    args = argparse.Namespace(optimizer="rmsprop", train_examples=200, width=0.5, steps=7)
    config = load_proxy(path, args).config
    assert (config.optimizer, config.train_examples, config.steps) == ("rmsprop", 200, 7)
    assert config.warmup_fraction == 0.05  # RMSProp's default warm-up, as the controller's
    assert load_proxy(path, args).build.width == 0.5


def test_the_long_recipe_sees_eight_times_the_images() -> None:
    proxy = TrainingConfig(train_examples=5000, validation_examples=2000, epochs=1, seed=3)
    long = long_config(proxy, examples_factor=4, epochs_factor=2, available=58000)
    assert (long.train_examples, long.epochs, long.steps) == (20000, 2, 0)
    assert (long.validation_examples, long.seed) == (2000, 3)
    assert dataclasses.replace(long, train_examples=5000, epochs=1) == proxy  # the same recipe
    by_steps = TrainingConfig(train_examples=512, steps=10)
    assert long_config(by_steps, examples_factor=4, epochs_factor=2, available=10**4).steps == 80
    with pytest.raises(ValueError, match="exceed the 10000 not held out"):
        long_config(proxy, examples_factor=4, epochs_factor=2, available=10000)
    with pytest.raises(ValueError, match="every image not held out"):
        long_config(TrainingConfig(), examples_factor=4, epochs_factor=2, available=58000)


def _last_json(out: str) -> dict[str, Any]:
    result = json.loads(out.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_a_tiny_run_prints_both_taus_and_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([
        "--archs", "3", "--train-examples", "32", "--validation-examples", "64",
        "--batch", "16", "--steps", "2", "--threads", "1",
    ])  # fmt: skip
    assert code == 0
    result = _last_json(capsys.readouterr().out)
    assert result["complete"] is True
    assert result["archs"] == 3
    taus = [
        result[name]
        for name in (
            "kendall_tau",
            "kendall_tau_vs_long",
            "kendall_tau_vs_long_second_seed",
            "kendall_tau_seed_mean_vs_long",
            "kendall_tau_long_vs_long",
        )
    ]
    taus += list(result["kendall_tau_vs_each_long"].values())
    assert len(taus) == 7
    for tau in taus:
        assert tau is None or -1.0 <= tau <= 1.0
    assert result["ties"]["pairs"] == 3
    rows, seeds = result["accuracies"], result["seeds"]
    assert len(rows) == 3
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    longs = ("long-4x2", "long-2x4")
    for row in rows:
        for kind in (f"seed{seeds[0]}", f"seed{seeds[1]}", *longs):
            assert 0.0 <= row[f"accuracy_{kind}"] <= 1.0
            assert row[f"seconds_{kind}"] >= 0
        assert row["accuracy_long"] == pytest.approx(
            (row["accuracy_long-4x2"] + row["accuracy_long-2x4"]) / 2, abs=1e-4
        )
    assert result["images_seen"] == {"proxy": 32, "long": 256, "factor": 8.0}
    long, proxy = result["long"], result["proxy"]
    assert set(long) == set(longs)
    assert (proxy["train_examples"], proxy["steps"]) == (32, 2)
    assert (long["long-4x2"]["train_examples"], long["long-4x2"]["steps"]) == (128, 16)
    assert (long["long-2x4"]["train_examples"], long["long-2x4"]["steps"]) == (64, 16)
    assert long["long-4x2"]["seed"] == seeds[0]
    assert long["long-4x2"]["validation_examples"] == proxy["validation_examples"] == 64
    assert set(result["seconds_per_network"]) == {"proxy", "long"}
    assert result["seconds"] >= 0 and result["cpu_seconds"] >= 0


def test_an_interrupt_prints_the_architectures_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[TrainingConfig] = []

    def fake_train(arch: object, *, config: TrainingConfig, **_: object) -> TrainOutcome:
        if len(calls) == 9:  # 4 trainings an architecture: the third's second
            raise KeyboardInterrupt
        calls.append(config)
        accuracy = 0.5 + 0.01 * len(calls) + (0.1 if config.train_examples > 32 else 0.0)
        return TrainOutcome(accuracy=accuracy, loss=1.0, seconds=0.1, samples_seen=32)

    monkeypatch.setattr(proxy_fidelity, "train", fake_train)
    code = main(["--archs", "5", "--train-examples", "32", "--steps", "2", "--seeds", "4", "9"])
    assert code == 130
    result = _last_json(capsys.readouterr().out)
    assert result["complete"] is False
    assert result["archs"] == 2
    assert [c.seed for c in calls] == [4, 9, 4, 4] * 2 + [4]
    assert result["kendall_tau"] == result["kendall_tau_vs_long"] == 1.0
    assert result["ties"] == {
        "pairs": 1,
        "seed4": 0,
        "seed9": 0,
        "long-4x2": 0,
        "long-2x4": 0,
        "long": 0,
    }


def test_the_mean_of_the_seeds_ranks_apart_from_either_seed() -> None:
    """Each seed swaps one pair of the long ranking; their mean keeps it."""
    results = proxy_fidelity._Results([None] * 3, [0, 1])  # type: ignore[list-item]
    accuracies: dict[str, list[float]] = {
        "seed0": [0.70, 0.62, 0.80],
        "seed1": [0.60, 0.72, 0.64],
        "long": [1, 2, 3],
    }
    for kind, values in accuracies.items():
        for k, accuracy in enumerate(values):
            task = proxy_fidelity._Task(k, None, kind, TrainingConfig())  # type: ignore[arg-type]
            results.add(task, TrainOutcome(accuracy=accuracy, loss=1, seconds=1, samples_seen=1))
    taus = results.taus()
    assert taus["kendall_tau_vs_long"] == 0.3333  # rounded to 4 places
    assert taus["kendall_tau_vs_long_second_seed"] == 0.3333
    assert taus["kendall_tau_seed_mean_vs_long"] == 1.0  # means 0.65, 0.67, 0.72


def test_the_long_ranking_is_the_mean_of_the_long_trainings() -> None:
    """Two long trainings that disagree on one pair: the proxy is compared with their
    mean, against each alone, and the longs' agreement is reported as the ceiling."""
    longs = ["long-4x2", "long-2x4"]
    results = proxy_fidelity._Results([None] * 3, [0, 1], longs)  # type: ignore[list-item]
    accuracies: dict[str, list[float]] = {
        "seed0": [0.60, 0.70, 0.80],
        "seed1": [0.60, 0.70, 0.80],
        "long-4x2": [0.80, 0.86, 0.90],
        "long-2x4": [0.84, 0.82, 0.90],
    }
    for kind, values in accuracies.items():
        for k, accuracy in enumerate(values):
            task = proxy_fidelity._Task(k, None, kind, TrainingConfig())  # type: ignore[arg-type]
            results.add(task, TrainOutcome(accuracy=accuracy, loss=1, seconds=1, samples_seen=1))
    taus = results.taus()
    assert taus["kendall_tau_vs_long"] == 1.0  # means 0.82, 0.84, 0.90
    assert taus["kendall_tau_vs_each_long"] == {"long-4x2": 1.0, "long-2x4": 0.3333}
    assert taus["kendall_tau_long_vs_long"] == 0.3333
    with pytest.raises(ValueError, match="expected IMAGESxEPOCHS"):
        proxy_fidelity._factors("4by2")
