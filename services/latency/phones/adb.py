"""Phones through an adb server's host protocol (``adbutils``), with typed results.

Every transport failure (server gone, phone unplugged, connection dropped mid-command)
comes out as :class:`PhoneConnectionError`. Unlike the adb command line, this never
starts an adb server: the farm's server is run by whoever attaches the phones.
"""

from __future__ import annotations

import logging
import shlex
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import adbutils  # type: ignore[import-untyped]

from services.latency.phones.profiles import AdbEndpoint

__all__ = [
    "AdbPhone",
    "AdbServer",
    "AttachedDevice",
    "PhoneConnectionError",
    "RemoteFile",
    "ShellResult",
]

_logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# What adbutils and the socket layer raise when a server or phone goes away.
_TRANSPORT_ERRORS = (
    adbutils.AdbError,
    OSError,
    EOFError,
    struct.error,
    ValueError,
    AssertionError,
)


class PhoneConnectionError(RuntimeError):
    """The adb server or the phone could not be reached, or dropped the connection."""


@dataclass(frozen=True)
class AttachedDevice:
    """A line of ``adb devices``: the serial and its state (device, offline, ...)."""

    serial: str
    state: str


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    output: str


@dataclass(frozen=True)
class RemoteFile:
    mode: int
    size: int

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


class _DirectConnection(adbutils.AdbConnection):  # type: ignore[misc]
    """A connection that fails instead of spawning ``adb start-server``."""

    def _safe_connect(self) -> socket.socket:
        return self._create_socket()  # type: ignore[no-any-return]


class _Client(adbutils.AdbClient):  # type: ignore[misc]
    def __init__(self, endpoint: AdbEndpoint) -> None:
        super().__init__(
            host=endpoint.host, port=endpoint.port, socket_timeout=endpoint.timeout_seconds
        )
        self._timeout = endpoint.timeout_seconds

    def make_connection(self, timeout: float | None = None) -> Any:
        connection = _DirectConnection(self.host, self.port)
        connection.conn.settimeout(timeout or self._timeout)
        return connection


class AdbServer:
    """The adb server at an endpoint: which phones it has, and a handle to each."""

    def __init__(self, endpoint: AdbEndpoint | None = None) -> None:
        self.endpoint = endpoint or AdbEndpoint()
        self._client = _Client(self.endpoint)

    def attached(self) -> list[AttachedDevice]:
        """Every device the server knows, in any state."""
        infos = _call(f"list devices at {self._where}", lambda: self._client.list())
        return [AttachedDevice(serial=str(i.serial), state=str(i.state)) for i in infos]

    def phone(self, serial: str) -> AdbPhone:
        return AdbPhone(self, serial, self._client.device(serial))

    @property
    def _where(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"


class AdbPhone:
    """One phone by serial: shell commands, file stat, push and removal."""

    def __init__(self, server: AdbServer, serial: str, device: Any) -> None:
        self.server = server
        self.serial = serial
        self._device = device

    def is_attached(self) -> bool:
        """Whether the server lists this serial in state ``device`` now."""
        try:
            attached = self.server.attached()
        except PhoneConnectionError:
            return False
        return any(d.serial == self.serial and d.state == "device" for d in attached)

    def getprop(self, key: str) -> str:
        return self.shell(f"getprop {shlex.quote(key)}").output.strip()

    def shell(self, command: str, *, timeout: float | None = None) -> ShellResult:
        """Run ``command`` in the phone's shell; its output (stdout and stderr) and exit code."""
        result = self._call(
            f"run {command!r}",
            lambda: self._device.shell2(command, timeout=timeout or self._timeout),
        )
        return ShellResult(exit_code=int(result.returncode), output=str(result.output))

    def stat(self, path: str) -> RemoteFile | None:
        """The file at ``path``, or None where nothing is there."""
        info = self._call(f"stat {path}", lambda: self._device.sync.stat(path))
        if info.mode == 0:
            return None
        return RemoteFile(mode=int(info.mode), size=int(info.size))

    def push(self, source: bytes | Path, remote: str, *, mode: int = 0o644) -> int:
        """Write ``source`` (bytes or a local file) to ``remote``; the bytes sent."""
        data = source if isinstance(source, bytes) else source.read_bytes()
        sent = self._call(
            f"push {len(data)} bytes to {remote}",
            lambda: self._device.sync.push(data, remote, mode=mode),
        )
        return int(sent)

    def remove(self, path: str) -> None:
        result = self.shell(f"rm -f {shlex.quote(path)}")
        if result.exit_code != 0:
            raise PhoneConnectionError(f"{self.serial}: rm {path} failed: {result.output.strip()}")

    @property
    def _timeout(self) -> float:
        return self.server.endpoint.timeout_seconds

    def _call(self, what: str, action: Callable[[], _T]) -> _T:
        return _call(f"{self.serial}: {what}", action)


def _call(what: str, action: Callable[[], _T]) -> _T:
    try:
        return action()
    except _TRANSPORT_ERRORS as err:
        _logger.debug("%s failed: %r", what, err)
        raise PhoneConnectionError(f"{what}: {type(err).__name__}: {err}") from err
