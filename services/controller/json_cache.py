"""Messages read back from the store's JSON, parsed once.

The store keeps searches and trials as protobuf JSON (readable in any SQL client, and
tolerant of fields a newer controller adds). protobuf's JSON parser is pure Python: under
load, re-parsing the same finished trials for every ListTrials page took a fifth of the
controller's interpreter (``python -m benchmarks.load``). A row's text changes whenever
the row does, so the text itself is the key: a bounded cache maps it to the message's
binary form, which protobuf parses in C.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

__all__ = ["DEFAULT_ENTRIES", "JsonCache"]

DEFAULT_ENTRIES = 4096  # rows; a trial's JSON is about 2 KB, so a few MiB at most
_M = TypeVar("_M", bound=Message)


class JsonCache:
    """Parses protobuf JSON into messages, remembering the ``entries`` latest texts."""

    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        if entries < 1:
            raise ValueError(f"entries: must be >= 1, got {entries}")
        self._entries = entries
        self._parsed: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def parse(self, text: str, message: _M) -> _M:
        """``text`` into ``message`` (unknown fields ignored: a newer controller wrote
        them); returns ``message``."""
        key = (message.DESCRIPTOR.full_name, text)
        with self._lock:
            data = self._parsed.get(key)
            if data is not None:
                self._parsed.move_to_end(key)
                self.hits += 1
        if data is not None:
            message.ParseFromString(data)
            return message
        json_format.Parse(text, message, ignore_unknown_fields=True)
        data = message.SerializeToString()
        with self._lock:
            self.misses += 1
            self._parsed[key] = data
            if len(self._parsed) > self._entries:
                self._parsed.popitem(last=False)
        return message

    def __len__(self) -> int:
        with self._lock:
            return len(self._parsed)
