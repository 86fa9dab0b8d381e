"""The phone farm's configuration: the adb server and one profile per phone model.

A YAML (or JSON) file::

    adb: {host: 127.0.0.1, port: 5037}
    phones:
      - model: Pixel 1              # ro.product.model
        device_class: pixel-1       # default: the model, normalized
        cpu_mask: "0c"              # taskset mask of the big cores
        benchmark_model: bin/benchmark_model   # relative to the file

Every error names its field (``phones[0].thermal.max_temperature_c: ...``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnas.validation import check_int
from services.latency.oracle import MAX_RUNS, MAX_THREADS, MeasureSettings

__all__ = [
    "DEFAULT_REMOTE_DIR",
    "AdbEndpoint",
    "FarmConfig",
    "PhoneProfile",
    "ThermalPolicy",
    "load_farm_config",
    "normalize_model",
    "parse_farm_config",
]

DEFAULT_REMOTE_DIR = "/data/local/tmp/mnas"
THERMAL_ACTIONS = ("wait", "flag")
_MASK = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")


def normalize_model(model: str) -> str:
    """A device class from a phone model: ``"Pixel 1"`` -> ``"pixel-1"``."""
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


@dataclass(frozen=True)
class AdbEndpoint:
    """Where the adb server listens, and how long one adb request may take."""

    host: str = "127.0.0.1"
    port: int = 5037
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class ThermalPolicy:
    """Above ``max_temperature_c`` a phone is hot: ``wait`` for it to cool (at most
    ``max_wait_seconds``, looking every ``poll_seconds``), or measure and ``flag``."""

    max_temperature_c: float = 45.0
    action: str = "wait"
    max_wait_seconds: float = 300.0
    poll_seconds: float = 10.0


@dataclass(frozen=True)
class PhoneProfile:
    """How to measure on one phone model."""

    model: str
    benchmark_binary: Path
    cpu_mask: str
    device_class: str = ""
    threads: int = 1
    warmup_runs: int = 5
    runs: int = 50
    repetitions: int = 1
    remote_dir: str = DEFAULT_REMOTE_DIR
    thermal: ThermalPolicy = field(default_factory=ThermalPolicy)
    expected_governor: str | None = None
    failure_threshold: int = 3
    max_attempts: int = 3
    reprobe_seconds: float = 60.0
    benchmark_timeout_seconds: float = 600.0
    serials: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.device_class:
            object.__setattr__(self, "device_class", normalize_model(self.model))

    @property
    def settings(self) -> MeasureSettings:
        """The model's default protocol (warm-up runs, timed runs, threads)."""
        return MeasureSettings(warmup_runs=self.warmup_runs, runs=self.runs, threads=self.threads)

    @property
    def cores(self) -> tuple[int, ...]:
        """The CPU numbers ``cpu_mask`` selects, lowest first."""
        bits = int(self.cpu_mask.removeprefix("0x"), 16)
        return tuple(cpu for cpu in range(bits.bit_length()) if bits >> cpu & 1)

    def remote_binary(self) -> str:
        return f"{self.remote_dir.rstrip('/')}/benchmark_model"


@dataclass(frozen=True)
class FarmConfig:
    adb: AdbEndpoint
    profiles: tuple[PhoneProfile, ...]

    def profile_for(self, model: str) -> PhoneProfile | None:
        """The profile whose model normalizes like ``model``, if any."""
        wanted = normalize_model(model)
        return next((p for p in self.profiles if normalize_model(p.model) == wanted), None)


def load_farm_config(path: Path) -> FarmConfig:
    """Read and validate a farm file (YAML, of which JSON is a subset)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML or JSON: {err}") from None
    return parse_farm_config(document, base_dir=path.parent)


def parse_farm_config(document: object, *, base_dir: Path) -> FarmConfig:
    """Validate a parsed farm document; relative binary paths resolve against ``base_dir``."""
    root = _mapping("config", document, {"adb", "phones"})
    adb = _adb(root.get("adb", {}))
    phones = root.get("phones")
    if not isinstance(phones, list) or not phones:
        raise ValueError("phones: expected a non-empty list of phone profiles")
    profiles = tuple(_profile(f"phones[{i}]", entry, base_dir) for i, entry in enumerate(phones))
    seen: dict[str, str] = {}
    for i, profile in enumerate(profiles):
        for key, kind in ((normalize_model(profile.model), "model"), (profile.device_class, "")):
            name = f"{kind}:{key}"
            if name in seen:
                what = "model" if kind else "device_class"
                raise ValueError(f"phones[{i}].{what}: {key!r} already used by {seen[name]}")
            seen[name] = f"phones[{i}]"
    return FarmConfig(adb=adb, profiles=profiles)


_PROFILE_KEYS = {
    "model",
    "device_class",
    "cpu_mask",
    "threads",
    "warmup_runs",
    "runs",
    "repetitions",
    "benchmark_model",
    "remote_dir",
    "thermal",
    "expected_governor",
    "failure_threshold",
    "max_attempts",
    "reprobe_seconds",
    "benchmark_timeout_seconds",
    "serials",
}


def _adb(value: object) -> AdbEndpoint:
    entry = _mapping("adb", value, {"host", "port", "timeout_seconds"})
    default = AdbEndpoint()
    host = _string("adb.host", entry.get("host", default.host))
    port = entry.get("port", default.port)
    check_int("adb.port", port, 1, 65535)
    timeout = _seconds("adb.timeout_seconds", entry.get("timeout_seconds", default.timeout_seconds))
    return AdbEndpoint(host=host, port=port, timeout_seconds=timeout)


def _profile(where: str, value: object, base_dir: Path) -> PhoneProfile:
    entry = _mapping(where, value, _PROFILE_KEYS)
    for required in ("model", "cpu_mask", "benchmark_model"):
        if required not in entry:
            raise ValueError(f"{where}.{required}: required")
    model = _string(f"{where}.model", entry["model"])
    mask = _string(f"{where}.cpu_mask", entry["cpu_mask"])
    if not _MASK.match(mask) or int(mask.removeprefix("0x"), 16) == 0:
        raise ValueError(f"{where}.cpu_mask: expected a non-zero hex mask like 'f0', got {mask!r}")
    binary = Path(_string(f"{where}.benchmark_model", entry["benchmark_model"])).expanduser()
    binary = binary if binary.is_absolute() else base_dir / binary
    if not binary.is_file():
        raise ValueError(f"{where}.benchmark_model: no such file: {binary}")
    remote_dir = _string(f"{where}.remote_dir", entry.get("remote_dir", DEFAULT_REMOTE_DIR))
    if not remote_dir.startswith("/"):
        raise ValueError(f"{where}.remote_dir: expected an absolute path, got {remote_dir!r}")
    device_class = entry.get("device_class", "")
    if device_class:
        device_class = _string(f"{where}.device_class", device_class)
    governor = entry.get("expected_governor")
    if governor is not None:
        governor = _string(f"{where}.expected_governor", governor)
    serials = entry.get("serials", [])
    if not isinstance(serials, list) or not all(isinstance(s, str) and s for s in serials):
        raise ValueError(f"{where}.serials: expected a list of serial strings")
    profile = PhoneProfile(
        model=model,
        benchmark_binary=binary,
        cpu_mask=mask,
        device_class=device_class,
        remote_dir=remote_dir,
        thermal=_thermal(f"{where}.thermal", entry.get("thermal", {})),
        expected_governor=governor,
        reprobe_seconds=_seconds(f"{where}.reprobe_seconds", entry.get("reprobe_seconds", 60.0)),
        benchmark_timeout_seconds=_seconds(
            f"{where}.benchmark_timeout_seconds", entry.get("benchmark_timeout_seconds", 600.0)
        ),
        serials=tuple(serials),
        threads=_int(entry, f"{where}.threads", 1, MAX_THREADS, 1),
        warmup_runs=_int(entry, f"{where}.warmup_runs", 0, MAX_RUNS, 5),
        runs=_int(entry, f"{where}.runs", 1, MAX_RUNS, 50),
        repetitions=_int(entry, f"{where}.repetitions", 1, 100, 1),
        failure_threshold=_int(entry, f"{where}.failure_threshold", 1, 1000, 3),
        max_attempts=_int(entry, f"{where}.max_attempts", 1, 100, 3),
    )
    if profile.threads > len(profile.cores):
        raise ValueError(
            f"{where}.threads: {profile.threads} threads on the {len(profile.cores)} "
            f"core(s) of cpu_mask {mask!r}"
        )
    return profile


def _thermal(where: str, value: object) -> ThermalPolicy:
    entry = _mapping(
        where, value, {"max_temperature_c", "action", "max_wait_seconds", "poll_seconds"}
    )
    default = ThermalPolicy()
    action = entry.get("action", default.action)
    if action not in THERMAL_ACTIONS:
        raise ValueError(
            f"{where}.action: expected one of {', '.join(THERMAL_ACTIONS)}, got {action!r}"
        )
    limit = _number(
        f"{where}.max_temperature_c", entry.get("max_temperature_c", default.max_temperature_c)
    )
    if not 0.0 < limit < 150.0:
        raise ValueError(f"{where}.max_temperature_c: must be in (0, 150), got {limit}")
    return ThermalPolicy(
        max_temperature_c=limit,
        action=action,
        max_wait_seconds=_seconds(
            f"{where}.max_wait_seconds",
            entry.get("max_wait_seconds", default.max_wait_seconds),
            allow_zero=True,
        ),
        poll_seconds=_seconds(
            f"{where}.poll_seconds", entry.get("poll_seconds", default.poll_seconds)
        ),
    )


def _mapping(where: str, value: object, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    return value


def _int(entry: Mapping[str, Any], where: str, low: int, high: int, default: int) -> int:
    value = entry.get(where.rpartition(".")[2], default)
    check_int(where, value, low, high)
    return int(value)


def _string(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _seconds(where: str, value: object, *, allow_zero: bool = False) -> float:
    seconds = _number(where, value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {seconds}")
    return seconds
