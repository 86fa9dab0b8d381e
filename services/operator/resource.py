"""The names of the MnasSearch custom resource, and the search id an object submits under."""

from __future__ import annotations

import re

__all__ = [
    "FINALIZER",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "search_id_for",
]

GROUP = "mnas.dev"
VERSION = "v1alpha1"
KIND = "MnasSearch"
PLURAL = "mnassearches"
SINGULAR = "mnassearch"
SHORT_NAMES = ("mnas",)
FINALIZER = "mnas.dev/cancel-search"

_NOT_ALLOWED = re.compile(r"[^a-z0-9-]")


def search_id_for(uid: str) -> str:
    """The search id of the object with ``uid``: ``k8s-`` and the uid (40 characters for
    an RFC 4122 uid), so every submission of one object names the same search."""
    cleaned = _NOT_ALLOWED.sub("", uid.lower())
    if not cleaned:
        raise ValueError(f"object uid {uid!r} has no usable characters")
    return f"k8s-{cleaned}"[:63].rstrip("-")
