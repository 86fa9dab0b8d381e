"""The parser of ``benchmark_model`` output (pure; no phone attached)."""

from __future__ import annotations

import math

import pytest

from services.latency.phones.benchmark_output import (
    BenchmarkFailed,
    RunStats,
    parse_benchmark_output,
    parse_stats_line,
)

NORMAL = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [1]
INFO: Min warmup runs: [5]
INFO: Graph: [/data/local/tmp/mnas/model-0123456789abcdef.tflite]
INFO: The input model file size (MB): 4.2
INFO: Initialized session in 5.685ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=36 first=18535 curr=14480 min=14113 max=18535 avg=14462.3 std=721

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=14207 curr=14164 min=13993 max=14553 avg=14154.1 std=118

INFO: Inference timings in us: Init: 5685, First inference: 18535, Warmup (avg): 14462.3, Inference (avg): 14154.1
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.3 overall=9.1
"""  # noqa: E501

ALL_SAME = """\
INFO: Initialized session in 0.2ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=130

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 curr=100(all same)

INFO: Inference timings in us: Init: 200, First inference: 130, Warmup (avg): 130, Inference (avg): 100
"""  # noqa: E501

FAILURE = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/mnas/model-0123456789abcdef.tflite]
ERROR: Could not open '/data/local/tmp/mnas/model-0123456789abcdef.tflite'.
ERROR: Failed to mmap model /data/local/tmp/mnas/model-0123456789abcdef.tflite
ERROR: Benchmarking failed.
"""

OP_PROFILING = """\
INFO: count=3 first=20 curr=10 min=10 max=20 avg=13.3333 std=4
INFO: count=5 first=1.5e+06 curr=1.2e+06 min=1.19e+06 max=1.5e+06 avg=1.23457e+06 std=1200
Timings (microseconds): count=5 first=9 curr=9 min=9 max=9 avg=9 std=0
Memory (bytes): count=0
Inference timings in us: Init: 1.5e+06, First inference: 20, Warmup (avg): 13.3333, Inference (avg): 1.23457e+06
"""  # noqa: E501


def test_a_normal_transcript() -> None:
    output = parse_benchmark_output(NORMAL)
    assert output.inference == RunStats(
        count=50, first=14207, curr=14164, min=13993, max=14553, avg=14154.1, std=118
    )
    assert output.warmup is not None and output.warmup.count == 36
    assert output.warmup.first == 18535
    assert (output.init_us, output.first_inference_us) == (5685, 18535)
    assert output.inference_avg_seconds == pytest.approx(0.0141541)
    assert not output.inference.all_same


def test_an_all_same_transcript() -> None:
    output = parse_benchmark_output(ALL_SAME)
    inference = output.inference
    assert inference.count == 50 and inference.all_same
    assert inference.min == inference.max == inference.avg == inference.curr == 100
    assert inference.std == 0
    assert output.warmup == RunStats(count=1, first=130, curr=130, min=130, max=130, avg=130, std=0)
    assert output.inference_avg_seconds == pytest.approx(100e-6)


def test_a_failure_transcript_quotes_the_tool() -> None:
    with pytest.raises(BenchmarkFailed, match=r"exit status 1.*Failed to mmap model") as caught:
        parse_benchmark_output(FAILURE, exit_code=1)
    assert "Benchmarking failed." in str(caught.value)
    assert "INFO: STARTING" not in str(caught.value)


def test_exit_zero_without_timed_statistics_is_a_failure() -> None:
    text = NORMAL.split("INFO: Running benchmark for at least 50")[0]
    with pytest.raises(BenchmarkFailed, match="no statistics of the timed runs"):
        parse_benchmark_output(text)


def test_a_nonzero_exit_fails_even_with_statistics() -> None:
    with pytest.raises(BenchmarkFailed, match="exit status 139"):
        parse_benchmark_output(NORMAL, exit_code=139)


def test_an_empty_timed_phase_is_a_failure() -> None:
    text = "INFO: count=1 curr=5\nINFO: count=0\n"
    with pytest.raises(BenchmarkFailed, match="ran no inference"):
        parse_benchmark_output(text)


def test_exponents_and_operator_tables() -> None:
    output = parse_benchmark_output(OP_PROFILING)
    assert output.inference.count == 5
    assert output.inference.avg == pytest.approx(1.23457e6)
    assert output.inference_avg_seconds == pytest.approx(1.23457)
    assert output.init_us == pytest.approx(1.5e6)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("count=1 curr=7", RunStats(1, 7, 7, 7, 7, 7, 0)),
        ("INFO: count=4 curr=9(all same)", RunStats(4, 9, 9, 9, 9, 9, 0)),
        ("count=2 first=1 curr=3 min=1 max=3 avg=2 std=1", RunStats(2, 1, 3, 1, 3, 2, 1)),
    ],
)
def test_stats_lines(line: str, expected: RunStats) -> None:
    assert parse_stats_line(line) == expected


def test_an_empty_phase_has_no_numbers() -> None:
    stats = parse_stats_line("count=0")
    assert stats.count == 0 and math.isnan(stats.avg) and not stats.all_same


@pytest.mark.parametrize(
    "line",
    ["curr=5", "count=4 curr=9", "count=3 first=1 curr=2 min=1 max=3", "count=x", "hello"],
)
def test_malformed_stats_lines(line: str) -> None:
    with pytest.raises(ValueError):
        parse_stats_line(line)
