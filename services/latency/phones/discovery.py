"""Which phones an adb server has, and what each one is (model, Android version, ABI)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.latency.phones.adb import AdbPhone, AdbServer

__all__ = ["AttachedPhone", "PhoneDetails", "discover", "read_details"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhoneDetails:
    """A phone as ``getprop`` describes it."""

    serial: str
    model: str
    android_version: str
    abi: str


@dataclass(frozen=True)
class AttachedPhone:
    """A phone ready for adb commands, with its details."""

    details: PhoneDetails
    adb: AdbPhone


def read_details(phone: AdbPhone) -> PhoneDetails:
    return PhoneDetails(
        serial=phone.serial,
        model=phone.getprop("ro.product.model"),
        android_version=phone.getprop("ro.build.version.release"),
        abi=phone.getprop("ro.product.cpu.abi"),
    )


def discover(server: AdbServer) -> list[AttachedPhone]:
    """The server's phones in state ``device``; others (offline, unauthorized) are logged."""
    phones = []
    for device in server.attached():
        if device.state != "device":
            _logger.warning("skipping %s: state %s", device.serial, device.state)
            continue
        phone = server.phone(device.serial)
        phones.append(AttachedPhone(details=read_details(phone), adb=phone))
    return phones
