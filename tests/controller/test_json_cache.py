"""The store's JSON, parsed once: the same messages as protobuf's parser, bounded."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from mnas.v1 import common_pb2
from services.controller.json_cache import JsonCache


def _trial(number: int) -> common_pb2.Trial:
    trial = common_pb2.Trial(search_id="s", number=number, reward=0.5 + number / 100)
    trial.architecture.canonical = "r1_k3_s11_e1_i32_o16_noskip"
    trial.latency.samples_seconds.extend([0.001, 0.002])
    return trial


def _json(message: common_pb2.Trial) -> str:
    return json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True)


def test_a_text_parses_as_protobuf_parses_it_the_first_time_and_every_time() -> None:
    cache = JsonCache()
    text = _json(_trial(3))
    first = cache.parse(text, common_pb2.Trial())
    again = cache.parse(text, common_pb2.Trial())
    assert first == again == json_format.Parse(text, common_pb2.Trial())
    assert (cache.misses, cache.hits) == (1, 1)


def test_the_same_text_as_another_message_type_is_another_entry() -> None:
    cache = JsonCache()
    cache.parse("{}", common_pb2.Trial())
    assert cache.parse("{}", common_pb2.Search()) == common_pb2.Search()
    assert cache.misses == 2


def test_fields_a_newer_controller_wrote_are_ignored() -> None:
    cache = JsonCache()
    text = _json(_trial(1))[:-1] + ', "from_the_future": 1}'
    assert cache.parse(text, common_pb2.Trial()) == _trial(1)


def test_the_cache_keeps_only_the_latest_entries() -> None:
    cache = JsonCache(entries=2)
    texts = [_json(_trial(n)) for n in range(3)]
    for text in texts:
        cache.parse(text, common_pb2.Trial())
    assert len(cache) == 2
    cache.parse(texts[0], common_pb2.Trial())  # evicted: parsed again
    assert (cache.misses, cache.hits) == (4, 0)
    cache.parse(texts[2], common_pb2.Trial())
    assert cache.hits == 1


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="entries: must be >= 1, got 0"):
        JsonCache(entries=0)
