"""The calibrated latency predictor: kernels, probes, prediction, the file, calibration."""

from __future__ import annotations

import json
import math
import random
import typing
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest

from mnas.arch import Architecture, Op, decode
from mnas.layers import plan
from mnas.primitives import Primitive, entry
from mnas.space import SearchSpace
from services.latency.oracle import (
    HOST_CPU,
    DeviceInfo,
    HostOracle,
    LatencyOracle,
    LatencyResult,
    MeasureSettings,
)
from services.latency.predictor import (
    FORMAT_VERSION,
    Correction,
    HeadKernel,
    Kernel,
    KernelMeasurer,
    LatencyPredictor,
    LayerKernel,
    PredictedLatency,
    PredictorFileError,
    calibrate,
    fit_correction,
    network_kernels,
    recalibrate,
    space_kernels,
)
from services.latency.predictor.interpolate import (
    COLUMNS,
    PRIMITIVE_FEATURES,
    layer_features,
)
from services.latency.predictor.model import FEATURES
from services.latency.predictor.probes import probes
from tests.latency.archs import random_architectures

TINY = decode("stem:8 r1_k3_s11_e1_i8_o8 r2_k3_s22_e3_i8_o16_se0.25 head:32")


class Sizes(TypedDict):
    resolution: int
    width: float
    num_classes: int


SIZES = Sizes(resolution=32, width=1.0, num_classes=10)
CORRECTION = Correction(
    1e-3, {"kernel_sum_seconds": 0.1, "macs": 1e-12, "layers": 1e-5}
)  # fmt: skip


def hand_built(arch: Architecture = TINY) -> LatencyPredictor:
    """A table of arch's kernels at SIZES: the i-th kernel takes (i + 1) * 100 us."""
    net = network_kernels(arch, **SIZES)
    table = {k: (i + 1) * 1e-4 for i, k in enumerate(dict.fromkeys(net.kernels))}
    return LatencyPredictor(
        device_class="test-phone", build="runtime 1.0; test soc", kernels=table,
        correction=CORRECTION, calibration={"resolution": 32},
    )  # fmt: skip


# --- kernels and probes ------------------------------------------------------------------


def test_network_kernels_are_stem_layers_head() -> None:
    net = network_kernels(TINY, **SIZES)
    assert len(net.kernels) == 1 + TINY.num_layers + 1
    assert net.layers == TINY.num_layers
    assert net.macs == sum(net.kernel_macs) > 0
    # The two repeats of the second block differ (the first strides): distinct kernels.
    assert len(set(net.kernels)) == len(net.kernels)


@pytest.mark.parametrize("width", [1.0, 0.5, 1.4])
def test_probes_reproduce_each_layer_exactly(width: float) -> None:
    fields = ("op", "kernel", "stride", "in_channels", "mid_channels", "out_channels",
              "se_channels", "shortcut", "in_size", "out_size")  # fmt: skip
    for arch in [*random_architectures(20, seed=3), *_space_sample(5)]:
        net = network_kernels(arch, resolution=64, width=width, num_classes=10)
        layers = plan(arch, width=width, resolution=64, num_classes=10).layers
        for kernel, layer in zip(net.kernels[1:-1], layers, strict=True):
            assert isinstance(kernel, LayerKernel)
            probe, _ = probes(kernel)
            (probed,) = plan(probe.arch, width=1.0, resolution=probe.resolution).layers
            for name in fields:
                assert getattr(probed, name) == getattr(layer, name), (arch.id, name)


def test_a_layer_probe_and_its_baseline_differ_by_the_layer_alone() -> None:
    """Both end at the layer's output size, so their heads cost the same; a stride-2
    layer's baseline strides too (with a baseline at the input size, a cheap strided
    layer measured below zero)."""
    strided = 0
    for arch in [*random_architectures(20, seed=3), *_space_sample(5)]:
        for kernel in network_kernels(arch, resolution=64, width=1.0, num_classes=10).kernels:
            if not isinstance(kernel, LayerKernel):
                continue
            probe, base = probes(kernel)
            assert base is not None
            with_layer = plan(probe.arch, width=1.0, resolution=probe.resolution)
            without = plan(base.arch, width=1.0, resolution=base.resolution)
            assert with_layer.stem_size == without.stem_size == kernel.in_size
            assert with_layer.final_size == without.final_size, kernel
            (block,) = without.layers
            assert (block.op, block.kernel, block.stride) == (Op.CONV, 1, kernel.stride)
            strided += kernel.stride > 1
    assert strided


def _space_sample(count: int, space: SearchSpace | None = None) -> list[Architecture]:
    space = space or SearchSpace()
    rng = random.Random(7)
    return [space.sample(rng) for _ in range(count)]


def test_space_kernels_cover_every_sampled_architecture() -> None:
    space = SearchSpace(resolution=96)
    table = space_kernels(space)
    for arch in _space_sample(30, space):
        net = network_kernels(arch, resolution=96, width=1.0, num_classes=space.num_classes)
        assert set(net.kernels) <= table


# --- predicting --------------------------------------------------------------------------


def test_prediction_is_kernel_sum_plus_correction() -> None:
    predictor = hand_built()
    net = network_kernels(TINY, **SIZES)
    kernel_sum = sum((i + 1) * 1e-4 for i in range(len(net.kernels)))
    expected = kernel_sum + 1e-3 + 0.1 * kernel_sum + 1e-12 * net.macs + 1e-5 * net.layers
    assert predictor.predict(TINY, **SIZES) == pytest.approx(expected, rel=1e-12)
    assert predictor.kernel_sum(net) == pytest.approx(kernel_sum, rel=1e-12)


def test_unseen_kernel_is_measured_once_when_an_oracle_is_attached() -> None:
    predictor = hand_built()
    other = decode("stem:8 r1_k5_s22_e6_i8_o24 head:32")
    calls: list[object] = []

    def measure(kernel: object) -> float:
        calls.append(kernel)
        return 5e-4

    predictor.measure_unseen = measure
    first = predictor.predict(other, **SIZES)
    assert predictor.predict(other, **SIZES) == first
    assert len(calls) == len(
        set(network_kernels(other, **SIZES).kernels) - set(hand_built().kernels)
    )
    assert set(calls) <= set(predictor.kernels)


def test_unseen_layer_is_estimated_from_the_measured_ones() -> None:
    # Seconds exactly linear in what a layer does: the estimate reproduces it.
    weights = np.array(
        [2e-11, 1e-10, 3e-10, 3e-11, 2e-10, 1e-10, 5e-11, 4e-10, 3e-10, 6e-11, 4e-10, 2e-10,
         1e-10, 1e-5]
    )  # fmt: skip
    assert len(weights) == len(COLUMNS)
    table: dict[Kernel, float] = {}
    for arch in random_architectures(40, seed=11):
        for kernel in network_kernels(arch, **SIZES).kernels:
            if isinstance(kernel, LayerKernel):
                table[kernel] = float(weights @ layer_features(kernel))
    predictor = LatencyPredictor(
        device_class="d", build="b", kernels=table, correction=Correction()
    )
    unseen = [
        k
        for arch in random_architectures(20, seed=12)
        for k in network_kernels(arch, **SIZES).kernels
        if isinstance(k, LayerKernel) and k not in table
    ]
    assert unseen
    for kernel in unseen:
        expected = float(weights @ layer_features(kernel))
        assert predictor.kernel_seconds(kernel) == pytest.approx(expected, rel=1e-3)
    with pytest.raises(KeyError, match="recalibrate"):
        predictor.kernel_seconds(HeadKernel(40, 32, 32, 10, "relu"))


def test_every_primitive_type_has_an_interpolation_entry() -> None:
    for kind in typing.get_args(Primitive):
        assert callable(entry(PRIMITIVE_FEATURES, kind))
    assert set(PRIMITIVE_FEATURES) == set(typing.get_args(Primitive))


def _columns(block: str) -> dict[str, float]:
    arch = decode(f"stem:8 {block} head:32")
    kernel = network_kernels(arch, **SIZES).kernels[1]
    assert isinstance(kernel, LayerKernel)
    features = layer_features(kernel)
    assert features.shape == (len(COLUMNS),)
    return dict(zip(COLUMNS, features.tolist(), strict=True))


def test_se_and_the_pooling_shortcut_have_their_columns() -> None:
    pooled = _columns("r1_k3_s22_e3_i8_o16_se0.25_poolskip")
    for column in ("se_macs", "se_elements", "pool_elements", "add_elements", "depthwise_macs"):
        assert pooled[column] > 0, column
    assert pooled["pointwise_macs"] > 0  # expand, project and the shortcut's projection
    assert pooled["constant"] == 1.0
    plain = _columns("r1_k3_s22_e3_i8_o16_noskip")
    for column in ("se_macs", "se_elements", "pool_elements", "add_elements", "conv_macs"):
        assert plain[column] == 0, column
    conv = _columns("r1_k5_s11_e1_i8_o8_conv")  # identity shortcut: an addition, no pooling
    assert conv["conv_macs"] > 0 and conv["add_elements"] > 0
    assert conv["pool_elements"] == conv["depthwise_macs"] == conv["pointwise_macs"] == 0


def test_fit_correction_recovers_a_linear_residual() -> None:
    archs = random_architectures(12, seed=5)
    rng = random.Random(1)  # kernel times not a linear function of the features
    table = {k: rng.uniform(1e-5, 1e-3) for a in archs for k in network_kernels(a, **SIZES).kernels}
    predictor = LatencyPredictor(
        device_class="d", build="b", correction=Correction(), kernels=table
    )
    truth = Correction(2e-4, {"kernel_sum_seconds": 0.25, "macs": 3e-12, "layers": 4e-6})
    measured = []
    for arch in archs:
        net = predictor.network(arch, **SIZES)
        total = predictor.kernel_sum(net)
        measured.append(total + truth({"kernel_sum_seconds": total, "macs": net.macs,
                                        "layers": net.layers}))  # fmt: skip
    fitted = fit_correction(predictor, archs, measured, ridge=0.0, **SIZES)
    predictor.correction = fitted
    for arch, seconds in zip(archs, measured, strict=True):
        assert predictor.predict(arch, **SIZES) == pytest.approx(seconds, rel=1e-6)
    assert set(fitted.coefficients) == set(FEATURES)


def test_adapter_answers_a_one_sample_result() -> None:
    adapter = PredictedLatency(hand_built())
    result = adapter.measure(TINY, **SIZES)
    assert result.samples_seconds == (hand_built().predict(TINY, **SIZES),)
    assert result.robust == result.median == result.min
    (device,) = adapter.devices()
    assert device.device_class == adapter.device_class == "test-phone-predicted"
    assert result.device == device.id
    assert PredictedLatency(hand_built(), device_class="phone").device_class == "phone"


# --- the file ------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    predictor = hand_built()
    path = tmp_path / "test-phone.json"
    predictor.save(path)
    loaded = LatencyPredictor.load(path, device_class="test-phone", build=predictor.build)
    assert loaded.kernels == predictor.kernels
    assert loaded.correction == predictor.correction
    assert (loaded.build, loaded.created, loaded.calibration) == (
        predictor.build, predictor.created, predictor.calibration,
    )  # fmt: skip
    assert loaded.predict(TINY, **SIZES) == predictor.predict(TINY, **SIZES)
    header = json.loads(path.read_text())
    assert header["format_version"] == FORMAT_VERSION
    assert header["device_class"] == "test-phone"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    ("change", "load_kwargs", "message"),
    [
        ({"format_version": FORMAT_VERSION + 1}, {}, "format version 2, this code reads version 1"),
        ({"format": "something-else"}, {}, "not a mnas-latency-predictor file"),
        ({}, {"device_class": "pixel-1"}, "device class 'test-phone', not 'pixel-1'"),
        ({}, {"build": "runtime 2.0; test soc"}, "build 'runtime 1.0; test soc'"),
        ({"kernels": [{"kernel": {"kind": "warp"}, "seconds": 1}]}, {}, "unknown kind"),
        ({"correction": {"intercept_seconds": 0, "coefficients": {"flops": 1}}}, {}, "flops"),
    ],
)
def test_load_refuses_what_does_not_fit(
    tmp_path: Path, change: dict[str, object], load_kwargs: dict[str, str], message: str
) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**hand_built().to_json(), **change}))
    kwargs = {"device_class": "test-phone", **load_kwargs}
    with pytest.raises(PredictorFileError, match=message):
        LatencyPredictor.load(path, **kwargs)


def test_load_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(PredictorFileError, match="cannot read"):
        LatencyPredictor.load(path, device_class="test-phone")


# --- calibration on the host ----------------------------------------------------------------

QUICK = MeasureSettings(warmup_runs=1, runs=5)


def test_calibrates_on_the_host_and_recalibrates(tmp_path: Path) -> None:
    archs = [TINY, decode("stem:16 r1_k5_s22_e6_i16_o24_se0.25 r2_k3_s11_e1_i24_o24 head:32")]
    predictor = calibrate(HostOracle(), archs, settings=QUICK, **SIZES)
    wanted = {k for a in archs for k in network_kernels(a, **SIZES).kernels}
    assert set(predictor.kernels) == wanted
    assert all(s >= 0 for s in predictor.kernels.values())
    assert set(predictor.correction.coefficients) == set(FEATURES)
    assert predictor.device_class == HOST_CPU and "ai-edge-litert" in predictor.build
    for arch in archs:
        assert math.isfinite(predictor.predict(arch, **SIZES))
    path = tmp_path / "host.json"
    predictor.save(path)
    loaded = LatencyPredictor.load(path, device_class=HOST_CPU, build=predictor.build)
    again = recalibrate(loaded, HostOracle())
    assert set(again.kernels) == wanted
    assert again.calibration["architectures"] == [a.canonical for a in archs]


def test_kernel_measurer_measures_a_shared_baseline_once() -> None:
    measurer = KernelMeasurer(HostOracle(), QUICK)
    arch = decode("stem:8 r1_k3_s11_e1_i8_o8 r1_k5_s11_e3_i8_o8 r2_k3_s22_e3_i8_o16 head:32")
    layers = [k for k in network_kernels(arch, **SIZES).kernels if isinstance(k, LayerKernel)]
    baselines = {(k.in_channels, k.in_size, k.stride) for k in layers}
    assert len(baselines) < len(layers)  # some share one
    for kernel in layers:
        assert measurer(kernel) >= 0
    assert measurer.measurements == len(layers) + len(baselines)


def test_calibrate_needs_a_build_for_other_devices() -> None:
    class Phone(HostOracle):
        @property
        def device_class(self) -> str:
            return "pixel-1"

    with pytest.raises(ValueError, match=r"^build"):
        calibrate(Phone(), [TINY], settings=QUICK, **SIZES)
    with pytest.raises(ValueError, match="at least one architecture"):
        calibrate(HostOracle(), [], settings=QUICK, **SIZES)


class SizeOracle(LatencyOracle):
    """Seconds proportional to the model's size, scaled per pass by ``factors``."""

    def __init__(self, factors: list[float], calls_per_pass: int) -> None:
        self.factors = factors
        self.calls_per_pass = calls_per_pass
        self.calls = 0

    @property
    def device_class(self) -> str:
        return HOST_CPU

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(id="size", device_class=HOST_CPU, model="size")]

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        factor = self.factors[min(self.calls // self.calls_per_pass, len(self.factors) - 1)]
        self.calls += 1
        return LatencyResult(samples_seconds=(len(model_bytes) * 1e-9 * factor,), device="size")


def test_calibration_keeps_each_figure_from_its_fastest_pass() -> None:
    archs = [TINY]
    once = calibrate(SizeOracle([1.0], 10**6), archs, build="b", **SIZES)
    calls = once.calibration["measurements"]
    loaded = SizeOracle([3.0, 1.0, 2.0], calls)  # the first and last pass under load
    thrice = calibrate(loaded, archs, build="b", passes=3, **SIZES)
    assert loaded.calls == thrice.calibration["measurements"] == 3 * calls
    assert thrice.kernels == pytest.approx(once.kernels)
    assert thrice.correction.intercept_seconds == pytest.approx(once.correction.intercept_seconds)
    with pytest.raises(ValueError, match=r"^passes"):
        calibrate(SizeOracle([1.0], 1), archs, build="b", passes=0, **SIZES)
