"""The phone oracle: a farm of phones of one device class, measured one run per phone.

A caller takes any free healthy phone of the class and blocks while all are busy. A
phone whose adb connection fails ``failure_threshold`` times in a row is marked
unhealthy and the failed measurement is retried on another phone (at most
``max_attempts`` tries in all). An unhealthy phone is probed again once
``reprobe_seconds`` have passed (by the next caller, or :meth:`PhoneOracle.probe_unhealthy`)
and is ready again when it is attached and answers with its model. A model that the tool
rejects is the model's fault: the error goes to the caller and the phone stays healthy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.latency.oracle import DeviceInfo, LatencyOracle, LatencyResult, MeasureSettings
from services.latency.phones.adb import PhoneConnectionError
from services.latency.phones.benchmark_output import BenchmarkOutput
from services.latency.phones.discovery import AttachedPhone, PhoneDetails
from services.latency.phones.profiles import PhoneProfile
from services.latency.phones.runner import PHONE_FAULTS, PhoneRun, PhoneRunner
from services.latency.phones.state import PhoneState

__all__ = [
    "BUSY",
    "READY",
    "UNHEALTHY",
    "NoPhoneAvailable",
    "PhoneLatencyResult",
    "PhoneOracle",
    "PhoneStatus",
]

_logger = logging.getLogger(__name__)

READY = "ready"
BUSY = "busy"
UNHEALTHY = "unhealthy"

# How long a waiting caller sleeps at most before looking for due re-probes again.
_MAX_IDLE_WAIT_SECONDS = 5.0


class NoPhoneAvailable(RuntimeError):
    """No healthy phone of the class is left to measure on."""


@dataclass(frozen=True)
class PhoneLatencyResult(LatencyResult):
    """A phone measurement: one sample per ``benchmark_model`` invocation (its mean),
    the tool's own statistics of each invocation, the phone's state and the flags."""

    outputs: tuple[BenchmarkOutput, ...] = ()
    phone_state: PhoneState | None = None
    flags: tuple[str, ...] = ()
    waited_seconds: float = 0.0


@dataclass(frozen=True)
class PhoneStatus:
    """A phone of the farm as :meth:`PhoneOracle.phones` reports it."""

    details: PhoneDetails
    device_class: str
    state: str
    consecutive_failures: int
    reason: str
    last_state: PhoneState | None


class _Slot:
    """One phone's runner and health; guarded by the oracle's condition."""

    def __init__(self, details: PhoneDetails, runner: PhoneRunner) -> None:
        self.details = details
        self.runner = runner
        self.busy = False
        self.healthy = True
        self.probing = False
        self.failures = 0
        self.reason = ""
        self.probe_at = 0.0
        self.last_state: PhoneState | None = None

    @property
    def serial(self) -> str:
        return self.details.serial

    @property
    def state(self) -> str:
        if not self.healthy:
            return UNHEALTHY
        return BUSY if self.busy else READY


class PhoneOracle(LatencyOracle):
    """The phones of one device class, measured through ``benchmark_model`` over adb."""

    def __init__(
        self,
        profile: PhoneProfile,
        phones: Sequence[AttachedPhone],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not phones:
            raise ValueError(f"phones: no phone for device class {profile.device_class!r}")
        serials = [p.details.serial for p in phones]
        if len(set(serials)) != len(serials):
            raise ValueError(f"phones: a serial is given twice in {serials}")
        self._profile = profile
        self._clock = clock
        self._slots = [
            _Slot(p.details, PhoneRunner(p.adb, profile, clock=clock, sleep=sleep)) for p in phones
        ]
        self._condition = threading.Condition()
        self._waiting = 0

    # --- what the oracle offers ----------------------------------------------------------

    @property
    def device_class(self) -> str:
        return self._profile.device_class

    @property
    def profile(self) -> PhoneProfile:
        return self._profile

    @property
    def default_settings(self) -> MeasureSettings:
        """The profile's protocol, for requests that leave settings open."""
        return self._profile.settings

    @property
    def waiting(self) -> int:
        """Callers blocked until a phone is free."""
        with self._condition:
            return self._waiting

    def devices(self) -> list[DeviceInfo]:
        with self._condition:
            return [
                DeviceInfo(
                    id=s.serial,
                    device_class=self.device_class,
                    model=s.details.model,
                    state=s.state,
                )
                for s in self._slots
            ]

    def phones(self) -> list[PhoneStatus]:
        """Each phone with its details, state, health and last reading."""
        with self._condition:
            return [
                PhoneStatus(
                    details=s.details,
                    device_class=self.device_class,
                    state=s.state,
                    consecutive_failures=s.failures,
                    reason=s.reason,
                    last_state=s.last_state,
                )
                for s in self._slots
            ]

    # --- measuring -----------------------------------------------------------------------

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> PhoneLatencyResult:
        settings.validate()
        tried: set[str] = set()
        errors: list[str] = []
        for _ in range(self._profile.max_attempts):
            slot = self._acquire(avoid=tried)
            try:
                run = slot.runner.run(model_bytes, settings)
            except PHONE_FAULTS as err:
                self._failed(slot, err)
                tried.add(slot.serial)
                errors.append(f"{slot.serial}: {err}")
                continue
            except BaseException:
                self._release(slot, None)  # the phone answered: the model or tool failed
                raise
            self._release(slot, run)
            return _result(slot.serial, run)
        raise NoPhoneAvailable(
            f"{self.device_class}: failed {len(errors)} times: " + "; ".join(errors)
        )

    def probe_unhealthy(self) -> list[str]:
        """Probe the unhealthy phones that are due now; the serials that came back."""
        with self._condition:
            due = self._claim_due_probes()
        return [slot.serial for slot in due if self._probe(slot)]

    # --- the farm ------------------------------------------------------------------------

    def _acquire(self, avoid: set[str]) -> _Slot:
        while True:
            with self._condition:
                due = self._claim_due_probes()
                if not due:
                    slot = self._pick(avoid)
                    if slot is not None:
                        slot.busy = True
                        return slot
                    healthy = [s for s in self._slots if s.healthy or s.probing]
                    if not healthy:
                        raise NoPhoneAvailable(self._unavailable_message())
                    self._waiting += 1
                    try:
                        self._condition.wait(timeout=self._idle_wait())
                    finally:
                        self._waiting -= 1
                    continue
            for slot in due:
                self._probe(slot)

    def _pick(self, avoid: set[str]) -> _Slot | None:
        """A free healthy phone, one not yet tried for this measurement where one is left."""
        healthy = [s for s in self._slots if s.healthy]
        untried = [s for s in healthy if s.serial not in avoid]
        candidates = untried or healthy
        return next((s for s in candidates if not s.busy), None)

    def _claim_due_probes(self) -> list[_Slot]:
        now = self._clock()
        due = [s for s in self._slots if not s.healthy and not s.probing and s.probe_at <= now]
        for slot in due:
            slot.probing = True
        return due

    def _probe(self, slot: _Slot) -> bool:
        """Probe a claimed unhealthy phone: attached and answering with its model."""
        try:
            model = slot.runner.phone.getprop("ro.product.model")
            ok = slot.runner.phone.is_attached() and model == slot.details.model
            reason = "" if ok else f"probe: model {model!r}, expected {slot.details.model!r}"
        except PhoneConnectionError as err:
            ok, reason = False, f"probe: {err}"
        with self._condition:
            slot.probing = False
            if ok:
                _logger.info("%s: healthy again", slot.serial)
                slot.healthy, slot.failures, slot.reason = True, 0, ""
                self._condition.notify_all()
            else:
                slot.reason = reason
                slot.probe_at = self._clock() + self._profile.reprobe_seconds
        return ok

    def _failed(self, slot: _Slot, err: Exception) -> None:
        with self._condition:
            slot.busy = False
            slot.failures += 1
            slot.reason = str(err)
            if slot.failures >= self._profile.failure_threshold and slot.healthy:
                _logger.warning(
                    "%s: unhealthy after %d failures in a row: %s", slot.serial, slot.failures, err
                )
                slot.healthy = False
                slot.probe_at = self._clock() + self._profile.reprobe_seconds
            else:
                _logger.warning("%s: failure %d: %s", slot.serial, slot.failures, err)
            self._condition.notify_all()

    def _release(self, slot: _Slot, run: PhoneRun | None) -> None:
        with self._condition:
            slot.busy = False
            slot.failures, slot.reason = 0, ""
            if run is not None:
                slot.last_state = run.check.state
            self._condition.notify_all()

    def _idle_wait(self) -> float:
        pending = [s.probe_at for s in self._slots if not s.healthy and not s.probing]
        if not pending:
            return _MAX_IDLE_WAIT_SECONDS
        return min(_MAX_IDLE_WAIT_SECONDS, max(0.0, min(pending) - self._clock()))

    def _unavailable_message(self) -> str:
        reasons = "; ".join(f"{s.serial}: {s.reason}" for s in self._slots)
        return f"{self.device_class}: every phone is unhealthy ({reasons})"


def _result(serial: str, run: PhoneRun) -> PhoneLatencyResult:
    return PhoneLatencyResult(
        samples_seconds=tuple(o.inference_avg_seconds for o in run.outputs),
        device=serial,
        outputs=run.outputs,
        phone_state=run.check.state,
        flags=run.check.flags,
        waited_seconds=run.check.waited_seconds,
    )
