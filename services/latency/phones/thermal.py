"""The thermal policy: before a measurement, wait for a hot phone to cool, or flag it.

``settle`` reads the phone's state; while it is hotter than the profile allows and the
policy is ``wait``, it sleeps ``poll_seconds`` and reads again, for at most
``max_wait_seconds``. A phone still hot then is measured anyway and flagged ``hot``.
Clock and sleep are injected, so tests pass time without waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.latency.phones.profiles import ThermalPolicy
from services.latency.phones.state import PhoneState

__all__ = ["FLAGS", "ThermalCheck", "is_hot", "settle", "state_flags"]

_logger = logging.getLogger(__name__)

# Every flag a measurement can carry, and what it means.
FLAGS = {
    "hot": "the phone was above the profile's max_temperature_c when the run started",
    "temperature-unknown": "no temperature could be read, so heat was not checked",
    "throttling": "Android reported a thermal status above none (throttling)",
    "unpowered": "the phone ran on battery (neither AC nor USB powered)",
    "governor-mismatch": "the CPU governor differed from the profile's expected_governor",
}


@dataclass(frozen=True)
class ThermalCheck:
    """The state a measurement started in, how long it waited for it, and its flags."""

    state: PhoneState
    waited_seconds: float
    flags: tuple[str, ...]


def is_hot(state: PhoneState, policy: ThermalPolicy) -> bool:
    return state.temperature_c is not None and state.temperature_c > policy.max_temperature_c


def settle(
    read: Callable[[], PhoneState],
    policy: ThermalPolicy,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    expected_governor: str | None = None,
) -> ThermalCheck:
    """Apply ``policy`` to the phone that ``read`` reads; see the module docstring."""
    started = clock()
    state = read()
    while policy.action == "wait" and is_hot(state, policy):
        waited = clock() - started
        if waited >= policy.max_wait_seconds:
            _logger.warning(
                "still %.1f C after waiting %.0fs; measuring and flagging it hot",
                state.temperature_c,
                waited,
            )
            break
        sleep(min(policy.poll_seconds, policy.max_wait_seconds - waited))
        state = read()
    return ThermalCheck(
        state=state,
        waited_seconds=clock() - started,
        flags=state_flags(state, policy, expected_governor),
    )


def state_flags(
    state: PhoneState, policy: ThermalPolicy, expected_governor: str | None = None
) -> tuple[str, ...]:
    """The :data:`FLAGS` that ``state`` earns under ``policy``."""
    flags = []
    if state.temperature_c is None:
        flags.append("temperature-unknown")
    elif is_hot(state, policy):
        flags.append("hot")
    if state.thermal_status:
        flags.append("throttling")
    if state.battery.level is not None and not state.battery.powered:
        flags.append("unpowered")
    if expected_governor and state.governor and state.governor != expected_governor:
        flags.append("governor-mismatch")
    return tuple(flags)
