"""The busy-trainer benchmark: its summary figure, its loads, and one real timed step."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks import busy_trainer
from benchmarks.busy_trainer import load, measure, sample_archs, summary


def test_summary_is_the_mean_over_archs_of_each_ones_median_over_repeats() -> None:
    # Two repeats of three architectures: medians 2, 20 and 5 (the outlier 90 is ignored).
    runs = [[1.0, 20.0, 5.0], [3.0, 20.0, 5.0], [2.0, 90.0, 5.0]]
    assert summary(runs) == pytest.approx((2.0 + 20.0 + 5.0) / 3)


def test_busy_load_keeps_a_process_spinning_until_the_block_ends() -> None:
    with load("busy"):
        children = _children()
        assert len(children) == 1  # the spinner, running while the block runs
    assert not _alive(children[0])
    with load("quiet"):
        assert _children() == []


def test_one_architecture_steps_in_a_forkserver_child() -> None:
    (arch,) = sample_archs(1, seed=0)
    args = argparse.Namespace(batch=8, warmup=0, steps=2, max_seconds=60.0)
    (step_ms,) = measure(1, [arch], args)
    assert step_ms > 0


def _children() -> list[int]:
    """Child processes of this one running the benchmark's spin loop."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == os.getpid() and busy_trainer.SPIN.encode() in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
