"""Build the phone oracles of a farm: discover phones over adb, one oracle per class."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from services.latency.phones.adb import AdbServer
from services.latency.phones.discovery import AttachedPhone, discover
from services.latency.phones.oracle import PhoneOracle
from services.latency.phones.profiles import FarmConfig, PhoneProfile, load_farm_config

__all__ = ["build_phone_oracles", "phone_oracles_from_file"]

_logger = logging.getLogger(__name__)


def build_phone_oracles(
    config: FarmConfig,
    *,
    server: AdbServer | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PhoneOracle]:
    """One :class:`PhoneOracle` per device class that has at least one attached phone.

    A phone joins the profile whose model matches its ``ro.product.model`` (and, where
    the profile lists serials, only a listed one); phones without a profile are logged
    and left out.
    """
    server = server or AdbServer(config.adb)
    members: dict[str, list[AttachedPhone]] = {}
    profiles: dict[str, PhoneProfile] = {}
    for phone in discover(server):
        profile = config.profile_for(phone.details.model)
        if profile is None or (profile.serials and phone.details.serial not in profile.serials):
            _logger.warning(
                "no profile for %s (model %r); not measuring on it",
                phone.details.serial,
                phone.details.model,
            )
            continue
        profiles[profile.device_class] = profile
        members.setdefault(profile.device_class, []).append(phone)
    for profile in config.profiles:
        if profile.device_class not in members:
            _logger.warning("no phone attached for %s (%s)", profile.device_class, profile.model)
    return [
        PhoneOracle(profiles[name], phones, clock=clock, sleep=sleep)
        for name, phones in sorted(members.items())
    ]


def phone_oracles_from_file(path: Path) -> list[PhoneOracle]:
    """:func:`build_phone_oracles` for the farm file at ``path`` (the ``--phones`` flag)."""
    return build_phone_oracles(load_farm_config(path))
