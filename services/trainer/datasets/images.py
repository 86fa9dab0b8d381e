"""Single image files: ``.npy`` (uint8, ``(H, W)`` or ``(H, W, C)`` with C 1 or 3) and
netpbm ``.pgm``/``.ppm``/``.pnm`` (P2, P3, P5, P6; maxval up to 65535, scaled to 8 bits),
their shapes read from headers and their pixels decoded to uint8 ``(C, H, W)``."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from services.trainer.datasets.base import DatasetError

__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "image_shape", "read_image"]

IMAGE_SUFFIXES = (".npy", ".pgm", ".pnm", ".ppm")


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """Image files decoded when a batch needs them; indexes like an array of images."""

    paths: np.ndarray  # of str

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def __getitem__(self, index: np.ndarray | slice) -> ImageFiles:
        return ImageFiles(self.paths[index])

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(C, H, W)``."""
        return read_image(Path(str(self.paths[i])))


def image_shape(path: Path) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image file, from its header."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with path.open("rb") as f:
                shape, _ = _npy_header(f, path)
            return _npy_chw(shape, path)
        with path.open("rb") as f:
            head = f.read(_NETPBM_HEAD)
        try:
            channels, height, width, _, _ = _netpbm_header(head, path, complete=False)
        except _NeedMore:
            channels, height, width, _, _ = _netpbm_header(path.read_bytes(), path)
        return channels, height, width
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None


def read_image(path: Path) -> np.ndarray:
    """Decode one image file (see the module doc for the kinds) to uint8 ``(C, H, W)``."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(
            f"{path}: cannot decode {path.suffix or 'this'} files; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    if path.suffix.lower() == ".npy":
        return _decode_npy(raw, path)
    return _decode_netpbm(raw, path)


# --- .npy ----------------------------------------------------------------------------------


def _npy_header(f: BinaryIO, path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as err:
        raise DatasetError(f"{path}: not a .npy file: {err}") from None
    if dtype != np.uint8:
        raise DatasetError(f"{path}: expected a uint8 image, got {dtype}")
    return tuple(shape), dtype


def _npy_chw(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[2], shape[0], shape[1]
    raise DatasetError(f"{path}: expected an image of shape (H, W) or (H, W, 1|3), got {shape}")


def _decode_npy(raw: bytes, path: Path) -> np.ndarray:
    stream = io.BytesIO(raw)
    shape, _ = _npy_header(stream, path)
    channels, height, width = _npy_chw(shape, path)
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as err:
        raise DatasetError(f"{path}: cannot decode: {err}") from None
    if min(height, width) == 0:
        raise DatasetError(f"{path}: empty image of shape {shape}")
    return np.ascontiguousarray(array.reshape(height, width, channels).transpose(2, 0, 1))


# --- netpbm --------------------------------------------------------------------------------

# Netpbm: magic -> (channels, binary raster).
_NETPBM_KINDS = {b"P2": (1, False), b"P3": (3, False), b"P5": (1, True), b"P6": (3, True)}
_NETPBM_HEAD = 4096
_WHITESPACE = b" \t\r\n\v\f"


class _NeedMore(Exception):
    """The bytes read so far end inside the header."""


def _netpbm_header(
    raw: bytes, path: Path, *, complete: bool = True
) -> tuple[int, int, int, int, int]:
    """Channels, height, width, maxval and raster offset of a PGM/PPM file."""
    kind = _NETPBM_KINDS.get(raw[:2])
    if kind is None:
        raise DatasetError(
            f"{path}: not a PGM/PPM image (magic {raw[:2]!r}; expected P2, P3, P5 or P6)"
        )
    pos = 2
    fields: list[int] = []
    while len(fields) < 3:
        while pos < len(raw) and (raw[pos] in _WHITESPACE or raw[pos] == ord("#")):
            if raw[pos] == ord("#"):  # a comment runs to the end of its line
                end = raw.find(b"\n", pos)
                pos = len(raw) - 1 if end < 0 else end
            pos += 1
        start = pos
        while pos < len(raw) and 48 <= raw[pos] <= 57:
            pos += 1
        if pos == len(raw) and not complete:
            raise _NeedMore
        if start == pos:
            raise DatasetError(f"{path}: malformed PGM/PPM header (width, height, maxval)")
        fields.append(int(raw[start:pos]))
    if pos >= len(raw) or raw[pos] not in _WHITESPACE:
        if not complete:
            raise _NeedMore
        raise DatasetError(f"{path}: malformed PGM/PPM header (no whitespace after maxval)")
    width, height, maxval = fields
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise DatasetError(
            f"{path}: bad PGM/PPM header: width {width}, height {height}, maxval {maxval}"
        )
    return kind[0], height, width, maxval, pos + 1


def _decode_netpbm(raw: bytes, path: Path) -> np.ndarray:
    channels, height, width, maxval, offset = _netpbm_header(raw, path)
    count = channels * height * width
    if _NETPBM_KINDS[raw[:2]][1]:
        dtype = np.dtype(">u2" if maxval > 255 else "u1")
        if len(raw) - offset < count * dtype.itemsize:
            raise DatasetError(
                f"{path}: truncated raster: {width}x{height}x{channels} needs "
                f"{count * dtype.itemsize} bytes, file has {len(raw) - offset}"
            )
        values = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).astype(np.int64)
    else:
        try:
            values = np.array(raw[offset:].split()[:count], dtype=np.int64)
        except ValueError:
            raise DatasetError(f"{path}: non-numeric ASCII raster") from None
        if values.shape[0] < count:
            raise DatasetError(
                f"{path}: truncated raster: {count} values needed, found {values.shape[0]}"
            )
    if values.size and int(values.max()) > maxval:
        raise DatasetError(f"{path}: pixel value {int(values.max())} exceeds maxval {maxval}")
    if maxval != 255:
        values = (values * 255 + maxval // 2) // maxval
    image = values.astype(np.uint8).reshape(height, width, channels)
    return np.ascontiguousarray(image.transpose(2, 0, 1))
