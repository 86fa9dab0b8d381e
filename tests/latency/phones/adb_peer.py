"""A loopback adb server with fake phones, for tests that have no phone attached.

:class:`AdbPeer` speaks the adb server's smart-socket host protocol on a free loopback
port: 4-hex-digit length-prefixed requests answered ``OKAY``/``FAIL``; ``host:version``,
``host:devices[-l]``, ``host[-serial:S]:features``, ``host-serial:S:get-state``,
``host:transport:S``, ``host:tport:serial:S`` (and ``-any``); then per phone ``shell:CMD``
(legacy shell: no ``shell_v2`` is advertised) and ``sync:`` with STAT, LIST, SEND, RECV,
DATA, DONE and QUIT.

Each :class:`FakePhone` has a temporary root directory standing in for its filesystem:
sync paths map into it, and shell commands run on this machine with ``/data``, ``/sys``,
``/sdcard`` rewritten into it. ``getprop`` and ``dumpsys`` are small shell scripts that
answer from the phone's configurable state (model, temperature, battery, governor). A
test can make a phone hot, hold a command, or make the phone drop out mid-command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import socketserver
import stat
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ADB_SERVER_VERSION", "AdbPeer", "FakePhone"]

_logger = logging.getLogger(__name__)

# The host-protocol version of platform-tools 29 (Debian's adb 1.0.41) and adbutils' newest.
ADB_SERVER_VERSION = 41
FEATURES = "cmd,fixed_push_mkdir"  # no shell_v2, stat_v2, ls_v2 or sendrecv_v2
_SHELL_PATHS = re.compile(r"(?<![\w./-])/(data|sys|sdcard|storage)(?=/|\b)")

_GETPROP = """#!/bin/sh
f="$PHONE_ROOT/.phone/props/$1"
if [ -f "$f" ]; then cat "$f"; else echo; fi
"""
_DUMPSYS = """#!/bin/sh
f="$PHONE_ROOT/.phone/dumpsys/$1"
if [ -f "$f" ]; then cat "$f"; else echo "Can't find service: $1"; fi
"""


@dataclass
class FakePhone:
    """A phone's filesystem root and the state its shell commands report."""

    serial: str
    root: Path
    model: str = "Pixel 1"
    android_version: str = "10"
    abi: str = "arm64-v8a"
    temperature_c: float = 35.0
    thermal_status: int = 0
    battery_level: int = 90
    ac_powered: bool = False
    usb_powered: bool = True
    governor: str = "schedutil"
    online: bool = True
    # A shell command containing this text makes the phone vanish mid-command.
    drop_on: str | None = None
    # Called with every shell command before it runs (may block, e.g. on an Event).
    on_shell: Callable[[str], None] | None = None
    shells: list[str] = field(default_factory=list)
    pushes: list[str] = field(default_factory=list)
    transport_id: int = 0

    def __post_init__(self) -> None:
        (self.root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        self.write_state()

    def write_state(self) -> None:
        """Write the state into the files that ``getprop``/``dumpsys``/sysfs reads show."""
        props = {
            "ro.product.model": self.model,
            "ro.build.version.release": self.android_version,
            "ro.product.cpu.abi": self.abi,
        }
        for key, value in props.items():
            _write(self.root / ".phone/props" / key, value + "\n")
        power = (
            f"  AC powered: {_bool(self.ac_powered)}\n  USB powered: {_bool(self.usb_powered)}\n"
        )
        _write(
            self.root / ".phone/dumpsys/battery",
            "Current Battery Service state:\n"
            + power
            + "  Wireless powered: false\n  status: 2\n  health: 2\n  present: true\n"
            + f"  level: {self.battery_level}\n  scale: 100\n  voltage: 4213\n"
            + "  temperature: 285\n  technology: Li-ion\n",
        )
        cpu = f"Temperature{{mValue={self.temperature_c}, mType=0, mName=cpu0, mStatus=0}}"
        skin = "Temperature{mValue=30.0, mType=3, mName=skin, mStatus=0}"
        _write(
            self.root / ".phone/dumpsys/thermalservice",
            f"IsStatusOverride: false\nThermal Status: {self.thermal_status}\n"
            f"Cached temperatures:\n\t{skin}\nHAL Ready: true\n"
            f"Current temperatures from HAL:\n\t{cpu}\n\t{skin}\n",
        )
        zones = self.root / "sys/class/thermal"
        _write(zones / "thermal_zone0/type", "cpu0\n")
        _write(zones / "thermal_zone0/temp", f"{round(self.temperature_c * 1000)}\n")
        _write(zones / "thermal_zone1/type", "battery\n")
        _write(zones / "thermal_zone1/temp", "28500\n")
        for cpu_number in range(8):
            _write(
                self.root / f"sys/devices/system/cpu/cpu{cpu_number}/cpufreq/scaling_governor",
                self.governor + "\n",
            )

    def set_temperature(self, celsius: float) -> None:
        self.temperature_c = celsius
        self.write_state()

    def host_path(self, remote: str) -> Path:
        """Where a path on the phone lies on this machine."""
        return self.root / remote.lstrip("/")

    def shell_command(self, command: str) -> str:
        return _SHELL_PATHS.sub(lambda m: f"{self.root}/{m[1]}", command)

    def devices_line(self, long: bool) -> str:
        if not long:
            return f"{self.serial}\tdevice\n"
        name = self.model.replace(" ", "_")
        return (
            f"{self.serial:<22} device usb:1-1 product:{name.lower()} model:{name} "
            f"device:{name.lower()} transport_id:{self.transport_id}\n"
        )


class AdbPeer:
    """The loopback adb server; ``with AdbPeer(tmp_path) as peer: peer.add_phone(...)``."""

    def __init__(self, workdir: Path, *, version: int = ADB_SERVER_VERSION) -> None:
        self.workdir = workdir
        self.version = version
        self.requests: list[str] = []
        self._phones: dict[str, FakePhone] = {}
        self._lock = threading.Lock()
        self._connections: dict[str, set[socket.socket]] = {}
        self._bin = workdir / "phone-bin"
        _write(self._bin / "getprop", _GETPROP, mode=0o755)
        _write(self._bin / "dumpsys", _DUMPSYS, mode=0o755)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.peer = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> AdbPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = [s for group in self._connections.values() for s in group]
        for sock in sockets:
            _hang_up(sock)

    def add_phone(self, serial: str, **state: object) -> FakePhone:
        root = self.workdir / "phones" / serial
        with self._lock:
            phone = FakePhone(serial=serial, root=root, **state)  # type: ignore[arg-type]
            phone.transport_id = len(self._phones) + 1
            self._phones[serial] = phone
        return phone

    def phone(self, serial: str) -> FakePhone:
        return self._phones[serial]

    def drop(self, serial: str) -> None:
        """The phone vanishes: off the device list, its open connections cut."""
        with self._lock:
            self._phones[serial].online = False
            sockets = list(self._connections.get(serial, ()))
        for sock in sockets:
            _hang_up(sock)

    # --- used by the handler ---------------------------------------------------------------

    def online(self) -> list[FakePhone]:
        with self._lock:
            return [p for p in self._phones.values() if p.online]

    def find(self, serial: str | None) -> FakePhone | None:
        phones = self.online()
        if serial is None:
            return phones[0] if len(phones) == 1 else None
        return next((p for p in phones if p.serial == serial), None)

    def track(self, serial: str, sock: socket.socket, active: bool) -> None:
        with self._lock:
            group = self._connections.setdefault(serial, set())
            if active:
                group.add(sock)
            else:
                group.discard(sock)

    def environment(self, phone: FakePhone) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self._bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["PHONE_ROOT"] = str(phone.root)
        return env


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    peer: AdbPeer


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            self._serve(sock)
        except (OSError, EOFError, ConnectionError) as err:
            _logger.debug("connection ended: %r", err)

    def _serve(self, sock: socket.socket) -> None:
        peer = self.server.peer
        request = _read_request(sock)
        peer.requests.append(request)
        serial: str | None = None
        if request.startswith("host-serial:"):
            serial, _, request = request[len("host-serial:") :].rpartition(":")
            request = "host:" + request
        if request == "host:version":
            return _okay(sock, _block(f"{peer.version:04x}"))
        if request in ("host:devices", "host:devices-l"):
            lines = "".join(p.devices_line(request.endswith("-l")) for p in peer.online())
            return _okay(sock, _block(lines))
        if request == "host:features":
            return _okay(sock, _block(FEATURES))
        if request == "host:get-state":
            found = peer.find(serial)
            return _okay(sock, _block("device")) if found else _fail(sock, "device not found")
        if request == "host:kill":
            return _okay(sock)
        transport = _transport(request)
        if transport is not None:
            wanted, with_id = transport
            phone = peer.find(wanted)
            if phone is None:
                return _fail(sock, f"device '{wanted}' not found")
            _okay(sock, struct.pack("<Q", phone.transport_id) if with_id else b"")
            return self._device_service(sock, phone)
        _fail(sock, f"unknown host service {request!r}")

    def _device_service(self, sock: socket.socket, phone: FakePhone) -> None:
        peer = self.server.peer
        request = _read_request(sock)
        peer.requests.append(f"{phone.serial}/{request}")
        peer.track(phone.serial, sock, True)
        try:
            if request.startswith("shell:") and len(request) > len("shell:"):
                self._shell(sock, phone, request[len("shell:") :])
            elif request == "sync:":
                _okay(sock)
                _Sync(sock, phone).serve()
            else:
                _fail(sock, f"unsupported device service {request!r}")
        finally:
            peer.track(phone.serial, sock, False)

    def _shell(self, sock: socket.socket, phone: FakePhone, command: str) -> None:
        peer = self.server.peer
        phone.shells.append(command)
        _okay(sock)
        if phone.on_shell is not None:
            phone.on_shell(command)
        if phone.drop_on is not None and phone.drop_on in command:
            sock.sendall(b"INFO: STARTING!\n")
            peer.drop(phone.serial)
            return
        process = subprocess.Popen(
            ["/bin/sh", "-c", phone.shell_command(command)],
            cwd=phone.root,
            env=peer.environment(phone),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        try:
            while chunk := os.read(process.stdout.fileno(), 65536):
                sock.sendall(chunk)
        finally:
            process.kill()
            process.wait()
        sock.shutdown(socket.SHUT_RDWR)


class _Sync:
    """The sync protocol: 4-byte id, little-endian 32-bit length, payload."""

    def __init__(self, sock: socket.socket, phone: FakePhone) -> None:
        self.sock = sock
        self.phone = phone

    def serve(self) -> None:
        while True:
            header = _recv_exact(self.sock, 8)
            ident, length = header[:4], struct.unpack("<I", header[4:])[0]
            if ident == b"QUIT":
                return
            payload = _recv_exact(self.sock, length).decode()
            if ident == b"STAT":
                self._stat(payload)
            elif ident == b"LIST":
                self._list(payload)
            elif ident == b"SEND":
                self._send(payload)
            elif ident == b"RECV":
                self._recv(payload)
            else:
                self._fail(f"unknown sync request {ident!r}")
                return

    def _stat(self, remote: str) -> None:
        try:
            info = self.phone.host_path(remote).stat()
            values = (info.st_mode, info.st_size, int(info.st_mtime))
        except OSError:
            values = (0, 0, 0)
        self.sock.sendall(b"STAT" + struct.pack("<III", *values))

    def _list(self, remote: str) -> None:
        directory = self.phone.host_path(remote)
        entries = sorted(directory.iterdir()) if directory.is_dir() else []
        for entry in entries:
            info = entry.stat()
            name = entry.name.encode()
            self.sock.sendall(
                b"DENT"
                + struct.pack("<IIII", info.st_mode, info.st_size, int(info.st_mtime), len(name))
                + name
            )
        self.sock.sendall(b"DONE" + bytes(16))

    def _send(self, spec: str) -> None:
        remote, _, mode = spec.rpartition(",")
        data = bytearray()
        while True:
            header = _recv_exact(self.sock, 8)
            ident, length = header[:4], struct.unpack("<I", header[4:])[0]
            if ident == b"DATA":
                data += _recv_exact(self.sock, length)
            elif ident == b"DONE":
                break
            else:
                return self._fail(f"unexpected {ident!r} during SEND")
        target = self.phone.host_path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)  # as adbd's fixed_push_mkdir
        target.write_bytes(bytes(data))
        target.chmod(stat.S_IMODE(int(mode)) if mode else 0o644)
        self.phone.pushes.append(remote)
        self.sock.sendall(b"OKAY" + bytes(4))

    def _recv(self, remote: str) -> None:
        try:
            data = self.phone.host_path(remote).read_bytes()
        except OSError as err:
            return self._fail(str(err))
        for start in range(0, len(data), 65536):
            chunk = data[start : start + 65536]
            self.sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        self.sock.sendall(b"DONE" + bytes(4))

    def _fail(self, message: str) -> None:
        encoded = message.encode()
        self.sock.sendall(b"FAIL" + struct.pack("<I", len(encoded)) + encoded)


def _transport(request: str) -> tuple[str | None, bool] | None:
    """The serial (None: the only phone) a transport request names, and whether the
    reply carries the transport id; None when ``request`` is no transport request."""
    for prefix, with_id in (("host:transport:", False), ("host:tport:serial:", True)):
        if request.startswith(prefix):
            return request[len(prefix) :], with_id
    if request in ("host:transport-any", "host:tport:any"):
        return None, request == "host:tport:any"
    return None


def _read_request(sock: socket.socket) -> str:
    length = int(_recv_exact(sock, 4), 16)
    return _recv_exact(sock, length).decode()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _block(text: str) -> bytes:
    encoded = text.encode()
    return f"{len(encoded):04x}".encode() + encoded


def _okay(sock: socket.socket, payload: bytes = b"") -> None:
    sock.sendall(b"OKAY" + payload)


def _fail(sock: socket.socket, message: str) -> None:
    sock.sendall(b"FAIL" + _block(message))


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _bool(value: bool) -> str:
    return "true" if value else "false"
