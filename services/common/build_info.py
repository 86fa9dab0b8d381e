"""``mnas_build_info``: one series set to 1 whose labels say which release runs in which role.

A Gauge, not prometheus_client's Info, which would name it ``mnas_build_info_info``.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, Gauge

__all__ = ["package_version", "register_build_info"]

PACKAGE = "mnas"


def package_version() -> str:
    """The installed mnas release, or ``unknown`` when run from a tree that is not installed."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def register_build_info(registry: CollectorRegistry, role: str) -> Gauge:
    """Register ``mnas_build_info{version, role} 1`` on ``registry``; ``role`` names the
    service (controller, trainer, latency, reward, operator)."""
    gauge = Gauge(
        "mnas_build_info",
        "Always 1; the labels say the mnas version and the role of this process.",
        ("version", "role"),
        registry=registry,
    )
    gauge.labels(package_version(), role).set(1)
    return gauge
