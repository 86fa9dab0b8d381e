"""The front-search benchmark's parts: the hypervolume, the exact front it measures
against, and a tiny run of every method printing its figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.front_search import ExactFront, exact_front, hypervolume, search
from benchmarks.search_efficiency import NUM_CLASSES, RESOLUTION, Landscape
from mnas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]


def test_hypervolume_of_a_staircase() -> None:
    reference = (10.0, 0.0)
    # (x down, y up): two steps, and a dominated point that adds nothing
    points = [(2.0, 3.0), (5.0, 4.0), (6.0, 3.5)]
    assert hypervolume(points, reference) == pytest.approx((5 - 2) * 3 + (10 - 5) * 4)
    assert hypervolume([], reference) == 0.0
    assert hypervolume([(11.0, 5.0), (1.0, -1.0)], reference) == 0.0  # beyond the reference


@pytest.fixture(scope="module")
def additive() -> tuple[Landscape, ExactFront]:
    landscape = Landscape(SearchSpace(resolution=RESOLUTION, num_classes=NUM_CLASSES))
    return landscape, exact_front(landscape)


def test_no_sampled_network_beats_the_exact_front(additive: tuple[Landscape, ExactFront]) -> None:
    landscape, exact = additive
    assert 0 <= exact.gap < 0.05  # the bound and the real networks nearly agree
    sampled = search("random", landscape, seed=0, trials=300, in_flight=4)
    both = hypervolume([*exact.points, *sampled], exact.reference)
    assert both <= hypervolume(exact.upper, exact.reference) + 1e-12
    assert hypervolume(sampled, exact.reference) < exact.hypervolume
    for x, y in sampled:  # each under the upper front at its latency
        bound = max((uy for ux, uy in exact.upper if ux <= x), default=-math.inf)
        assert y <= bound + 1e-12


@pytest.mark.slow
def test_a_tiny_run_prints_every_method_side_by_side() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.front_search",
            *("--seeds", "1", "--trials", "16"),
            *("--jobs", "1", "--landscapes", "additive"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    figures = json.loads(result.stdout.splitlines()[-1])
    ratios = figures["hypervolume_ratio"]["additive"]
    assert set(ratios) == {"random", "tpe", "optuna:NSGAIISampler", "optuna:TPESampler"}
    assert all(0 < r < 1 for r in ratios.values())
    assert "| tpe |" in result.stdout
