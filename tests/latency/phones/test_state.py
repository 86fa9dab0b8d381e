"""Reading a phone's condition and the thermal policy (pure functions, injected clock;
no phone attached)."""

from __future__ import annotations

import pytest

from services.latency.phones.profiles import ThermalPolicy
from services.latency.phones.state import (
    BatteryState,
    PhoneState,
    parse_battery,
    parse_state,
    parse_thermal_status,
    parse_thermal_zones,
    phone_temperature,
    state_command,
)
from services.latency.phones.thermal import FLAGS, settle, state_flags
from tests.latency.phones.conftest import FakeClock

BATTERY = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  status: 2
  level: 87
  scale: 100
  voltage: 4213
  temperature: 285
  technology: Li-ion
"""

THERMAL = """\
IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
Thermal Status: 2
Cached temperatures:
\tTemperature{mValue=99.0, mType=0, mName=cpu0, mStatus=0}
HAL Ready: true
Current temperatures from HAL:
\tTemperature{mValue=28.5, mType=2, mName=battery, mStatus=0}
\tTemperature{mValue=41.5, mType=0, mName=cpu0, mStatus=1}
\tTemperature{mValue=43.25, mType=0, mName=cpu4, mStatus=1}
\tTemperature{mValue=36.0, mType=3, mName=skin, mStatus=0}
Current cooling devices from HAL:
\tCoolingDevice{mValue=0, mType=2, mName=cpu0}
"""

ZONES = "battery 28500\ncpu0-silver 39800\nbogus 999999\nxo-therm 41\nnotanumber abc\n"


def test_parse_battery() -> None:
    assert parse_battery(BATTERY) == BatteryState(
        level=87, ac_powered=False, usb_powered=True, temperature_c=28.5
    )
    assert parse_battery("") == BatteryState()
    assert not BatteryState(level=50).powered


def test_parse_thermal_status() -> None:
    assert parse_thermal_status(THERMAL) == 2
    assert parse_thermal_status("no thermal service") is None


def test_parse_thermal_zones_takes_millidegrees_and_degrees() -> None:
    zones = parse_thermal_zones(ZONES)
    assert sorted(zones.values()) == [28.5, 39.8, 41.0]


@pytest.mark.parametrize(
    ("thermal", "zones", "battery", "expected"),
    [
        (THERMAL, ZONES, BatteryState(temperature_c=28.5), 43.25),  # HAL's current CPUs
        ("", ZONES, BatteryState(temperature_c=28.5), 41.0),  # hottest plausible zone
        ("", "", BatteryState(temperature_c=28.5), 28.5),  # the battery
        ("", "", BatteryState(), None),
    ],
)
def test_phone_temperature_precedence(
    thermal: str, zones: str, battery: BatteryState, expected: float | None
) -> None:
    assert phone_temperature(thermal, zones, battery) == expected


def test_parse_state_splits_the_combined_output() -> None:
    command = state_command(4)
    assert "/sys/devices/system/cpu/cpu4/cpufreq/scaling_governor" in command
    output = (
        "::mnas::battery\n" + BATTERY + "::mnas::thermalservice\n" + THERMAL
        + "::mnas::zones\n" + ZONES + "::mnas::governor\nperformance\n"
    )  # fmt: skip
    state = parse_state(output)
    assert state.temperature_c == 43.25
    assert state.thermal_status == 2
    assert state.battery.level == 87 and state.battery.usb_powered
    assert state.governor == "performance"


def test_parse_state_of_an_unreadable_phone() -> None:
    assert parse_state("::mnas::battery\n::mnas::governor\n") == PhoneState()


POLICY = ThermalPolicy(
    max_temperature_c=45.0, action="wait", max_wait_seconds=60.0, poll_seconds=10.0
)


class _Cooling:
    """A phone whose temperature moves to the next value after each sleep of the clock."""

    def __init__(self, temperatures: list[float]) -> None:
        self.remaining = list(temperatures)
        self.readings: list[float | None] = []
        self.clock = FakeClock(on_sleep=self._cool)

    def read(self) -> PhoneState:
        state = PhoneState(
            temperature_c=self.remaining[0], battery=BatteryState(level=80, usb_powered=True)
        )
        self.readings.append(state.temperature_c)
        return state

    def _cool(self, _: FakeClock) -> None:
        if len(self.remaining) > 1:
            self.remaining.pop(0)


def test_wait_policy_waits_until_the_phone_cools() -> None:
    phone = _Cooling([50.0, 47.0, 44.0])
    clock = phone.clock
    check = settle(phone.read, POLICY, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [10.0, 10.0]
    assert phone.readings == [50.0, 47.0, 44.0]
    assert check.waited_seconds == 20.0
    assert check.flags == ()
    assert check.state.temperature_c == 44.0


def test_wait_policy_gives_up_after_max_wait_and_flags_hot() -> None:
    phone = _Cooling([50.0])
    clock = phone.clock
    policy = ThermalPolicy(
        max_temperature_c=45.0, action="wait", max_wait_seconds=25.0, poll_seconds=10.0
    )
    check = settle(phone.read, policy, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [10.0, 10.0, 5.0]
    assert check.waited_seconds == 25.0
    assert check.flags == ("hot",)


def test_flag_policy_measures_at_once_and_flags_hot() -> None:
    phone = _Cooling([50.0, 30.0])
    clock = phone.clock
    policy = ThermalPolicy(max_temperature_c=45.0, action="flag")
    check = settle(phone.read, policy, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []
    assert check.flags == ("hot",)
    assert check.waited_seconds == 0.0


def test_a_cool_phone_is_not_waited_for() -> None:
    phone = _Cooling([45.0])
    clock = phone.clock
    check = settle(phone.read, POLICY, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [] and check.flags == ()  # exactly the limit is not hot


@pytest.mark.parametrize(
    ("state", "governor", "flags"),
    [
        (PhoneState(temperature_c=30.0, battery=BatteryState(level=80, ac_powered=True)), None, ()),
        (PhoneState(), None, ("temperature-unknown",)),
        (PhoneState(temperature_c=30.0, thermal_status=1), None, ("throttling",)),
        (PhoneState(temperature_c=30.0, battery=BatteryState(level=80)), None, ("unpowered",)),
        (
            PhoneState(temperature_c=30.0, governor="schedutil"),
            "performance",
            ("governor-mismatch",),
        ),
        (PhoneState(temperature_c=30.0, governor="performance"), "performance", ()),
        (PhoneState(temperature_c=46.0, thermal_status=3), None, ("hot", "throttling")),
    ],
)
def test_state_flags(state: PhoneState, governor: str | None, flags: tuple[str, ...]) -> None:
    assert state_flags(state, POLICY, governor) == flags
    assert set(flags) <= set(FLAGS)
