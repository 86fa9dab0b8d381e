"""Parse what TFLite's ``benchmark_model`` prints into numbers, in microseconds.

The tool logs (each line may carry a ``INFO: `` style prefix) one statistics line per
phase, warm-up first and timed runs second, then a summary::

    count=5 first=18535 curr=14480 min=14113 max=18535 avg=15210.6 std=1671
    count=50 first=14207 curr=14164 min=13993 max=14553 avg=14154.1 std=118
    Inference timings in us: Init: 5685, First inference: 18535, Warmup (avg): 15210.6, ...

A phase whose runs all took the same time prints ``count=50 curr=100(all same)``; a
phase of one run ``count=1 curr=100``; an empty one ``count=0``. Averages are printed
with six significant digits, so large ones come in exponent form (``1.23457e+06``). The
tool keeps no per-run samples: these aggregates are all there is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "BenchmarkFailed",
    "BenchmarkOutput",
    "RunStats",
    "parse_benchmark_output",
    "parse_stats_line",
]

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
_PAIR = re.compile(rf"(\w+)=({_NUMBER})")
# A statistics line: ``count=`` right after an optional severity prefix, so the
# per-operator tables of ``--enable_op_profiling`` ("Timings (microseconds): count=")
# are not taken for a phase.
_STATS_LINE = re.compile(r"^(?:[A-Z]+:\s*)?(count=.*)$")
_SUMMARY = re.compile(r"Inference timings in us:\s*(.*)$")
_SUMMARY_PAIR = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUMBER})")
_FAILURE_LINE = re.compile(r"^(?:ERROR|FATAL):|Failed to|failed", re.IGNORECASE)


class BenchmarkFailed(RuntimeError):
    """``benchmark_model`` ran but did not time the model; the message quotes why."""


@dataclass(frozen=True)
class RunStats:
    """One phase's statistics in microseconds, as the tool aggregates them."""

    count: int
    first: float
    curr: float
    min: float
    max: float
    avg: float
    std: float

    @property
    def all_same(self) -> bool:
        return self.count > 0 and self.min == self.max


@dataclass(frozen=True)
class BenchmarkOutput:
    """The parsed output of one ``benchmark_model`` invocation (microseconds)."""

    inference: RunStats
    warmup: RunStats | None = None
    init_us: float | None = None
    first_inference_us: float | None = None

    @property
    def inference_avg_seconds(self) -> float:
        return self.inference.avg * 1e-6


def parse_stats_line(text: str) -> RunStats:
    """One ``count=...`` line (with or without its severity prefix) as :class:`RunStats`."""
    match = _STATS_LINE.match(text.strip())
    if match is None:
        raise ValueError(f"not a statistics line: {text!r}")
    body = match.group(1)
    values = {key: float(value) for key, value in _PAIR.findall(body)}
    if "count" not in values or not values["count"].is_integer():
        raise ValueError(f"statistics line without a count: {text!r}")
    count = int(values["count"])
    if count == 0:
        nan = math.nan
        return RunStats(count=0, first=nan, curr=nan, min=nan, max=nan, avg=nan, std=nan)
    if "curr" not in values:
        raise ValueError(f"statistics line without curr=: {text!r}")
    curr = values["curr"]
    if "min" not in values:  # one run, or all runs the same: only curr is printed
        if count > 1 and "(all same)" not in body:
            raise ValueError(f"statistics line without min/max: {text!r}")
        return RunStats(count=count, first=curr, curr=curr, min=curr, max=curr, avg=curr, std=0.0)
    missing = [key for key in ("first", "min", "max", "avg", "std") if key not in values]
    if missing:
        raise ValueError(f"statistics line without {', '.join(missing)}: {text!r}")
    return RunStats(
        count=count,
        first=values["first"],
        curr=curr,
        min=values["min"],
        max=values["max"],
        avg=values["avg"],
        std=values["std"],
    )


def parse_benchmark_output(text: str, exit_code: int = 0) -> BenchmarkOutput:
    """The timings in ``text``; raises :class:`BenchmarkFailed` when the run failed.

    A non-zero ``exit_code`` or output without timed-run statistics is a failure; the
    error quotes the tool's own failure lines (``ERROR: ...``, ``Failed to ...``).
    """
    lines = [line.strip() for line in text.splitlines()]
    if exit_code != 0:
        raise BenchmarkFailed(_failure_message(lines, f"exit status {exit_code}"))
    phases = [parse_stats_line(line) for line in lines if _STATS_LINE.match(line)]
    if len(phases) < 2:
        raise BenchmarkFailed(_failure_message(lines, "no statistics of the timed runs"))
    warmup, inference = phases[0], phases[1]
    if inference.count == 0 or not math.isfinite(inference.avg):
        raise BenchmarkFailed(_failure_message(lines, "the timed phase ran no inference"))
    summary = _summary(lines)
    return BenchmarkOutput(
        inference=inference,
        warmup=warmup,
        init_us=summary.get("Init"),
        first_inference_us=summary.get("First inference"),
    )


def _summary(lines: list[str]) -> dict[str, float]:
    for line in reversed(lines):
        match = _SUMMARY.search(line)
        if match:
            return {key.strip(): float(value) for key, value in _SUMMARY_PAIR.findall(match[1])}
    return {}


def _failure_message(lines: list[str], reason: str) -> str:
    quoted = [line for line in lines if _FAILURE_LINE.search(line) and "WARN" not in line[:5]]
    detail = "; ".join(quoted[-5:]) if quoted else (lines[-1] if any(lines) else "no output")
    return f"benchmark_model failed ({reason}): {detail}"
