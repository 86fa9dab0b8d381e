"""The trainer's command line: sizes for --memory-limit."""

from __future__ import annotations

import argparse

import pytest

from services.trainer.__main__ import _bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 * 2**30),
        ("512MiB", 512 * 2**20),
        ("512M", 512 * 2**20),
        ("1000", 1000),
        ("2.5GiB", int(2.5 * 2**30)),
        ("8kib", 8192),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert _bytes(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1G", "4XB", "0", ""])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size such as 4GiB"):
        _bytes(text)
