"""A phone's condition before a measurement: temperature, battery, CPU governor.

Read in one shell command and parsed by pure functions:

- ``dumpsys thermalservice``: the throttling status (0 none ... 6 shutdown) and the
  temperatures Android reports, ``Temperature{mValue=41.5, mType=0, mName=cpu0, ...}``
  (type 0 is a CPU, 3 the skin).
- ``/sys/class/thermal/thermal_zone*/{type,temp}``: millidegrees on most phones.
- ``dumpsys battery``: ``level: 87``, ``AC powered: false``, ``USB powered: true``,
  ``temperature: 285`` (tenths of a degree).
- ``/sys/devices/system/cpu/cpuN/cpufreq/scaling_governor`` of the first measured core.

The phone's temperature is its hottest CPU by the thermal service, else its hottest
plausible thermal zone, else the battery's.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from services.latency.phones.adb import AdbPhone

__all__ = [
    "BatteryState",
    "PhoneState",
    "parse_battery",
    "parse_thermal_status",
    "parse_thermal_zones",
    "phone_temperature",
    "read_state",
    "state_command",
]

_CPU_TYPE = 0
_SECTION = "::mnas::"
_TEMPERATURE = re.compile(r"Temperature\{mValue=([-\d.eE+]+), mType=(-?\d+), mName=([^,}]*)")
_STATUS = re.compile(r"^\s*Thermal Status:\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class BatteryState:
    level: int | None = None
    ac_powered: bool = False
    usb_powered: bool = False
    temperature_c: float | None = None

    @property
    def powered(self) -> bool:
        return self.ac_powered or self.usb_powered


@dataclass(frozen=True)
class PhoneState:
    """What a phone reported before a measurement; None where it could not be read."""

    temperature_c: float | None = None
    thermal_status: int | None = None
    battery: BatteryState = BatteryState()
    governor: str | None = None


def state_command(core: int) -> str:
    """One shell command printing every reading, in sections the parser splits on."""
    governor = f"/sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor"
    return "; ".join(
        [
            f"echo {_SECTION}battery",
            "dumpsys battery 2>/dev/null",
            f"echo {_SECTION}thermalservice",
            "dumpsys thermalservice 2>/dev/null",
            f"echo {_SECTION}zones",
            "for z in /sys/class/thermal/thermal_zone*; do "
            'echo "$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done',
            f"echo {_SECTION}governor",
            f"cat {shlex.quote(governor)} 2>/dev/null",
        ]
    )


def read_state(phone: AdbPhone, core: int = 0) -> PhoneState:
    """The phone's state now, read through one shell command."""
    return parse_state(phone.shell(state_command(core)).output)


def parse_state(output: str) -> PhoneState:
    sections = _sections(output)
    thermal = sections.get("thermalservice", "")
    battery = parse_battery(sections.get("battery", ""))
    governor = sections.get("governor", "").strip() or None
    return PhoneState(
        temperature_c=phone_temperature(thermal, sections.get("zones", ""), battery),
        thermal_status=parse_thermal_status(thermal),
        battery=battery,
        governor=governor,
    )


def parse_battery(text: str) -> BatteryState:
    """``dumpsys battery`` as a :class:`BatteryState`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    level = fields.get("level", "")
    tenths = fields.get("temperature", "")
    return BatteryState(
        level=int(level) if level.lstrip("-").isdigit() else None,
        ac_powered=fields.get("ac powered") == "true",
        usb_powered=fields.get("usb powered") == "true",
        temperature_c=int(tenths) / 10.0 if tenths.lstrip("-").isdigit() else None,
    )


def parse_thermal_status(text: str) -> int | None:
    match = _STATUS.search(text)
    return int(match[1]) if match else None


def parse_thermal_zones(text: str) -> dict[str, float]:
    """``type temp`` lines as degrees Celsius by zone type; implausible readings dropped."""
    zones: dict[str, float] = {}
    for index, line in enumerate(text.splitlines()):
        parts = line.split()
        if not parts or not parts[-1].lstrip("-").isdigit():
            continue
        raw = int(parts[-1])
        celsius = raw / 1000.0 if abs(raw) >= 1000 else float(raw)
        if -40.0 <= celsius <= 150.0:
            name = " ".join(parts[:-1]) or f"zone{index}"
            zones[f"{name}#{index}"] = celsius
    return zones


def phone_temperature(thermal: str, zones: str, battery: BatteryState) -> float | None:
    """The hottest CPU by the thermal service, else the hottest zone, else the battery."""
    cpus = [
        float(v) for v, kind, _ in _TEMPERATURE.findall(_current(thermal)) if int(kind) == _CPU_TYPE
    ]
    if cpus:
        return max(cpus)
    readings = parse_thermal_zones(zones)
    if readings:
        return max(readings.values())
    return battery.temperature_c


def _current(thermal: str) -> str:
    """The HAL's current temperatures where printed, else the whole dump."""
    marker = "Current temperatures from HAL:"
    return thermal.split(marker, 1)[1] if marker in thermal else thermal


def _sections(output: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith(_SECTION):
            name = line[len(_SECTION) :].strip()
            sections[name] = ""
        elif name is not None:
            sections[name] += line + "\n"
    return sections
