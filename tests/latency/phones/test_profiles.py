"""The farm file: loading, defaults, and errors that name the field (no phone attached)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.latency.oracle import MeasureSettings
from services.latency.phones.profiles import (
    DEFAULT_REMOTE_DIR,
    load_farm_config,
    normalize_model,
    parse_farm_config,
)

EXAMPLE = """\
adb: {host: 127.0.0.2, port: 5038}
phones:
  - model: Pixel 1
    cpu_mask: "0c"
    threads: 2
    warmup_runs: 3
    runs: 40
    benchmark_model: bin/benchmark_model
    thermal: {max_temperature_c: 42, action: flag}
    expected_governor: performance
  - model: "SM-G960F"
    device_class: galaxy-s9
    cpu_mask: f0
    benchmark_model: bin/benchmark_model
"""


@pytest.fixture
def farm_dir(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/benchmark_model").write_bytes(b"\x7fELF")
    return tmp_path


def test_loads_an_example(farm_dir: Path) -> None:
    path = farm_dir / "farm.yaml"
    path.write_text(EXAMPLE)
    config = load_farm_config(path)
    assert (config.adb.host, config.adb.port) == ("127.0.0.2", 5038)
    pixel, galaxy = config.profiles
    assert pixel.device_class == "pixel-1"
    assert pixel.cores == (2, 3)
    assert pixel.settings == MeasureSettings(warmup_runs=3, runs=40, threads=2)
    assert pixel.benchmark_binary == farm_dir / "bin/benchmark_model"
    assert (pixel.thermal.action, pixel.thermal.max_temperature_c) == ("flag", 42.0)
    assert pixel.expected_governor == "performance"
    assert galaxy.device_class == "galaxy-s9"
    assert galaxy.cores == (4, 5, 6, 7)
    assert galaxy.remote_dir == DEFAULT_REMOTE_DIR
    assert galaxy.remote_binary() == DEFAULT_REMOTE_DIR + "/benchmark_model"
    assert (galaxy.threads, galaxy.failure_threshold, galaxy.thermal.action) == (1, 3, "wait")
    assert config.profile_for("pixel 1") is pixel
    assert config.profile_for("Pixel 2") is None


def test_json_works_too(farm_dir: Path) -> None:
    path = farm_dir / "farm.json"
    document = {
        "phones": [
            {"model": "Pixel 4", "cpu_mask": "0x40", "benchmark_model": "bin/benchmark_model"}
        ]
    }
    path.write_text(json.dumps(document))
    (profile,) = load_farm_config(path).profiles
    assert (profile.device_class, profile.cores) == ("pixel-4", (6,))


@pytest.mark.parametrize(
    ("model", "device_class"),
    [
        ("Pixel 1", "pixel-1"),
        ("SM-G960F", "sm-g960f"),
        ("  Mi 9 SE ", "mi-9-se"),
        ("ONEPLUS A6003", "oneplus-a6003"),
    ],
)
def test_normalize_model(model: str, device_class: str) -> None:
    assert normalize_model(model) == device_class


def _phone(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "model": "Pixel 1",
        "cpu_mask": "f0",
        "benchmark_model": "bin/benchmark_model",
    }
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "config"),
        ({"phones": []}, "phones"),
        ({"phone": []}, "config.phone"),
        ({"adb": {"port": 0}, "phones": [_phone()]}, "adb.port"),
        ({"adb": {"port": "5037"}, "phones": [_phone()]}, "adb.port"),
        ({"phones": [{"cpu_mask": "f0"}]}, "phones[0].model"),
        ({"phones": [_phone(cpu_mask="zz")]}, "phones[0].cpu_mask"),
        ({"phones": [_phone(cpu_mask="0")]}, "phones[0].cpu_mask"),
        ({"phones": [_phone(benchmark_model="bin/missing")]}, "phones[0].benchmark_model"),
        ({"phones": [_phone(threads=0)]}, "phones[0].threads"),
        ({"phones": [_phone(threads=5)]}, "phones[0].threads"),
        ({"phones": [_phone(runs=0)]}, "phones[0].runs"),
        ({"phones": [_phone(warmup_runs=-1)]}, "phones[0].warmup_runs"),
        ({"phones": [_phone(repetitions=True)]}, "phones[0].repetitions"),
        ({"phones": [_phone(failure_threshold=0)]}, "phones[0].failure_threshold"),
        ({"phones": [_phone(reprobe_seconds=0)]}, "phones[0].reprobe_seconds"),
        ({"phones": [_phone(remote_dir="tmp/mnas")]}, "phones[0].remote_dir"),
        ({"phones": [_phone(serials="abc")]}, "phones[0].serials"),
        ({"phones": [_phone(colour="red")]}, "phones[0].colour"),
        ({"phones": [_phone(thermal={"action": "panic"})]}, "phones[0].thermal.action"),
        (
            {"phones": [_phone(thermal={"max_temperature_c": "hot"})]},
            "phones[0].thermal.max_temperature_c",
        ),
        (
            {"phones": [_phone(thermal={"max_temperature_c": 200})]},
            "phones[0].thermal.max_temperature_c",
        ),
        (
            {"phones": [_phone(thermal={"max_wait_seconds": -1})]},
            "phones[0].thermal.max_wait_seconds",
        ),
        ({"phones": [_phone(thermal={"poll_seconds": 0})]}, "phones[0].thermal.poll_seconds"),
        ({"phones": [_phone(), _phone(model="pixel-1")]}, "phones[1].model"),
        (
            {"phones": [_phone(), _phone(model="Pixel 2", device_class="pixel-1")]},
            "phones[1].device_class",
        ),
    ],
)
def test_errors_name_the_field(farm_dir: Path, document: object, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:"):
        parse_farm_config(document, base_dir=farm_dir)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text("phones: [\n")
    with pytest.raises(ValueError, match=r"farm\.yaml: not valid YAML"):
        load_farm_config(path)
