"""Scrape-time gauges of the phone farm: health, temperature and battery, by serial.

Temperature and battery come from the last reading before a measurement; a phone that has
not been measured yet (or did not report one) has no series for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.latency.phones.oracle import BUSY, UNHEALTHY, PhoneOracle

__all__ = ["PhoneCollector"]

_LABELS = ["device_class", "device_model", "serial"]


class PhoneCollector(Collector):
    """The phones of ``oracles`` as they stand at each scrape."""

    def __init__(self, oracles: Sequence[PhoneOracle]) -> None:
        self._oracles = list(oracles)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _families()
        healthy, busy, temperature, battery, powered = families
        for oracle in self._oracles:
            for phone in oracle.phones():
                labels = [phone.device_class, phone.details.model, phone.details.serial]
                healthy.add_metric(labels, 0 if phone.state == UNHEALTHY else 1)
                busy.add_metric(labels, 1 if phone.state == BUSY else 0)
                reading = phone.last_state
                if reading is None:
                    continue
                if reading.temperature_c is not None:
                    temperature.add_metric(labels, reading.temperature_c)
                if reading.battery.level is not None:
                    battery.add_metric(labels, reading.battery.level / 100.0)
                powered.add_metric(labels, 1 if reading.battery.powered else 0)
        yield from families


def _families() -> list[GaugeMetricFamily]:
    return [
        GaugeMetricFamily(
            "mnas_phone_healthy",
            "1 while a phone takes measurements, 0 while it is benched after failures.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "mnas_phone_busy",
            "1 while a phone is measuring a model.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "mnas_phone_temperature_celsius",
            "A phone's temperature (hottest CPU, else thermal zone, else battery) at its "
            "last reading.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "mnas_phone_battery_ratio",
            "A phone's battery level (0-1) at its last reading.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "mnas_phone_powered",
            "1 when a phone was on AC or USB power at its last reading.",
            labels=_LABELS,
        ),
    ]
