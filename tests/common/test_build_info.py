"""``mnas_build_info``: the installed version and the role, as promtool expects a gauge."""

from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, generate_latest

from services.common.build_info import package_version, register_build_info


def test_build_info_is_one_series_with_version_and_role() -> None:
    registry = CollectorRegistry()
    register_build_info(registry, "latency")
    version = metadata.version("mnas")
    assert package_version() == version
    labels = {"version": version, "role": "latency"}
    assert registry.get_sample_value("mnas_build_info", labels) == 1
    text = generate_latest(registry).decode()
    assert "# TYPE mnas_build_info gauge" in text
    (sample,) = [line for line in text.splitlines() if not line.startswith("#")]
    assert sample.startswith("mnas_build_info{") and sample.endswith("} 1.0")
