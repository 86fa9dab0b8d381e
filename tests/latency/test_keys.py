"""One key for a latency measurement: what the controller's store records under and what
the latency service caches by."""

from __future__ import annotations

from mnas.v1 import common_pb2
from services.latency.conversions import build_from_proto, settings_from_proto
from services.latency.keys import MeasurementKey, measurement_key

SETTINGS = common_pb2.LatencySettings(device_class="host-cpu", warmup_runs=5, runs=50, threads=1)
BUILD = common_pb2.BuildParams(resolution=224, num_classes=1000, width=1.0)


def test_the_text_is_what_stores_hold_already() -> None:
    """Existing databases keep finding their measurements under this form."""
    assert measurement_key("a1", SETTINGS, BUILD) == "a1|host-cpu|224|1000|1.0|5|50|1"
    build = common_pb2.BuildParams(resolution=192, num_classes=10, width=1.3)
    assert measurement_key("a1", SETTINGS, build) == "a1|host-cpu|192|10|1.3|5|50|1"


def test_every_field_tells_measurements_apart() -> None:
    keys = {
        measurement_key("a1", SETTINGS, BUILD),
        measurement_key("a2", SETTINGS, BUILD),
        measurement_key("a1", common_pb2.LatencySettings(device_class="pixel-1"), BUILD),
        measurement_key("a1", common_pb2.LatencySettings(warmup_runs=5, runs=50), BUILD),
        measurement_key("a1", SETTINGS, common_pb2.BuildParams(resolution=224, num_classes=1000)),
        measurement_key("a1", SETTINGS, common_pb2.BuildParams(resolution=224, width=1.0)),
    }
    assert len(keys) == 6


def test_the_service_key_of_a_resolved_request_is_the_stores() -> None:
    """A request with every field set (as the controller sends them) keeps them through the
    latency service's conversions: the service caches by the key the store records."""
    device_class, settings = settings_from_proto(SETTINGS)
    build = build_from_proto(BUILD, SETTINGS)
    service_key = MeasurementKey.of("a1", device_class, build, settings)
    assert service_key == MeasurementKey.of("a1", SETTINGS.device_class, BUILD, SETTINGS)
    assert service_key.text() == measurement_key("a1", SETTINGS, BUILD)
