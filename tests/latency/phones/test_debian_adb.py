"""Debian's real ``adb`` client against the loopback peer (no phone attached): the peer
must speak the host protocol well enough for the reference client, not only for adbutils.
Skipped only where the ``adb`` binary is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.latency.phones.adb_peer import AdbPeer

ADB = shutil.which("adb")
pytestmark = pytest.mark.skipif(ADB is None, reason="Debian's adb client is not installed")


def _adb(peer: AdbPeer, *args: str) -> subprocess.CompletedProcess[str]:
    assert ADB is not None
    return subprocess.run(
        [ADB, "-P", str(peer.port), *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def phones(peer: AdbPeer) -> AdbPeer:
    peer.add_phone("PIXEL-A", model="Pixel 1")
    peer.add_phone("GALAXY-B", model="SM-G960F", android_version="9", abi="armeabi-v7a")
    return peer


def test_the_client_accepts_the_peers_version(phones: AdbPeer) -> None:
    version = _adb(phones, "version").stdout  # "Android Debug Bridge version 1.0.41"
    assert version.splitlines()[0].endswith(f".{phones.version}")
    result = _adb(phones, "devices")
    assert result.returncode == 0, result.stderr
    assert "host:kill" not in phones.requests  # a version mismatch would restart the server


def test_devices_long(phones: AdbPeer) -> None:
    result = _adb(phones, "devices", "-l")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]
    assert [(line[0], line[1]) for line in lines] == [("PIXEL-A", "device"), ("GALAXY-B", "device")]
    assert "model:SM-G960F" in lines[1]
    assert "host:devices-l" in phones.requests


def test_shell_getprop(phones: AdbPeer) -> None:
    result = _adb(phones, "-s", "GALAXY-B", "shell", "getprop", "ro.product.model")
    assert (result.returncode, result.stdout.strip()) == (0, "SM-G960F")
    result = _adb(phones, "-s", "PIXEL-A", "shell", "getprop ro.build.version.release")
    assert result.stdout.strip() == "10"
    assert "PIXEL-A/shell:getprop ro.build.version.release" in phones.requests


def test_push(phones: AdbPeer, tmp_path: Path) -> None:
    source = tmp_path / "model.tflite"
    source.write_bytes(bytes(range(256)) * 1000)
    result = _adb(phones, "-s", "PIXEL-A", "push", str(source), "/data/local/tmp/mnas/model.tflite")
    assert result.returncode == 0, result.stderr
    landed = phones.phone("PIXEL-A").host_path("/data/local/tmp/mnas/model.tflite")
    assert landed.read_bytes() == source.read_bytes()
    assert not phones.phone("GALAXY-B").host_path("/data/local/tmp/mnas/model.tflite").exists()
    listing = _adb(phones, "-s", "PIXEL-A", "shell", "ls -l /data/local/tmp/mnas")
    assert "model.tflite" in listing.stdout and "256000" in listing.stdout


def test_an_unknown_serial_fails(phones: AdbPeer) -> None:
    result = _adb(phones, "-s", "NOPE", "shell", "true")
    assert result.returncode != 0
    assert "NOPE" in result.stderr
