"""One measurement on one phone: settle its temperature, push, run, parse, clean up.

``benchmark_model`` is pushed once per phone (skipped when a file of the same size is
already there), the model before each measurement under a name derived from its bytes,
and the model is removed afterwards whatever happened. The tool runs as

    taskset MASK BINARY --graph=MODEL --num_threads=T --warmup_runs=W --num_runs=N --min_secs=0

(``--min_secs=0`` so that exactly ``N`` runs are timed, not as many as fill a second),
``repetitions`` times in a row; each invocation gives one sample, its mean.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from services.latency.oracle import MeasureSettings
from services.latency.phones.adb import AdbPhone, PhoneConnectionError
from services.latency.phones.benchmark_output import BenchmarkOutput, parse_benchmark_output
from services.latency.phones.profiles import PhoneProfile
from services.latency.phones.state import read_state
from services.latency.phones.thermal import ThermalCheck, settle

__all__ = ["PHONE_FAULTS", "PhoneRun", "PhoneRunner", "PhoneSetupError", "benchmark_command"]

_logger = logging.getLogger(__name__)

# Exit statuses of a shell that could not run the binary: not executable, not found.
_CANNOT_EXECUTE = {126, 127}


class PhoneSetupError(RuntimeError):
    """The phone cannot run ``benchmark_model`` (not executable there, wrong ABI, ...)."""


# Errors that are the phone's fault (count against its health), not the model's.
PHONE_FAULTS: tuple[type[Exception], ...] = (PhoneConnectionError, PhoneSetupError)


@dataclass(frozen=True)
class PhoneRun:
    """What one measurement on one phone produced."""

    outputs: tuple[BenchmarkOutput, ...]
    check: ThermalCheck
    binary_pushed: bool


def benchmark_command(profile: PhoneProfile, model_path: str, settings: MeasureSettings) -> str:
    """The shell command that times ``model_path`` under ``settings``."""
    return " ".join(
        [
            "taskset",
            shlex.quote(profile.cpu_mask),
            shlex.quote(profile.remote_binary()),
            shlex.quote(f"--graph={model_path}"),
            f"--num_threads={settings.threads}",
            f"--warmup_runs={settings.warmup_runs}",
            f"--num_runs={settings.runs}",
            "--min_secs=0",
        ]
    )


class PhoneRunner:
    """Measures models on one phone with one profile; one call at a time."""

    def __init__(
        self,
        phone: AdbPhone,
        profile: PhoneProfile,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.phone = phone
        self.profile = profile
        self._clock = clock
        self._sleep = sleep

    def run(self, model_bytes: bytes, settings: MeasureSettings) -> PhoneRun:
        profile = self.profile
        check = settle(
            lambda: read_state(self.phone, profile.cores[0]),
            profile.thermal,
            clock=self._clock,
            sleep=self._sleep,
            expected_governor=profile.expected_governor,
        )
        pushed = self.ensure_binary()
        model_path = f"{profile.remote_dir.rstrip('/')}/model-{_digest(model_bytes)}.tflite"
        try:
            self.phone.push(model_bytes, model_path)
            outputs = tuple(self._invoke(model_path, settings) for _ in range(profile.repetitions))
        finally:
            self._remove(model_path)
        return PhoneRun(outputs=outputs, check=check, binary_pushed=pushed)

    def ensure_binary(self) -> bool:
        """Push ``benchmark_model`` unless the phone has a file of its size; whether pushed."""
        local = self.profile.benchmark_binary
        remote = self.profile.remote_binary()
        size = local.stat().st_size
        there = self.phone.stat(remote)
        if there is not None and there.is_file and there.size == size:
            return False
        _logger.info("%s: pushing %s (%d bytes) to %s", self.phone.serial, local, size, remote)
        self.phone.push(local, remote, mode=0o755)
        return True

    def _invoke(self, model_path: str, settings: MeasureSettings) -> BenchmarkOutput:
        command = benchmark_command(self.profile, model_path, settings)
        result = self.phone.shell(command, timeout=self.profile.benchmark_timeout_seconds)
        if result.exit_code in _CANNOT_EXECUTE:
            raise PhoneSetupError(
                f"{self.phone.serial}: cannot run {self.profile.remote_binary()} "
                f"(exit {result.exit_code}): {result.output.strip()[-300:]}"
            )
        return parse_benchmark_output(result.output, result.exit_code)

    def _remove(self, model_path: str) -> None:
        try:
            self.phone.remove(model_path)
        except PhoneConnectionError as err:
            _logger.warning("%s: could not remove %s: %s", self.phone.serial, model_path, err)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
