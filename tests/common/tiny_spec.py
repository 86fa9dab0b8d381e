"""A search spec over a four-network space (one block: kernel 3 or 5, skip or not), for
tests whose subject is what the controller or the CLI does with trials, not the space."""

from __future__ import annotations

from mnas.specfile import parse_spec
from mnas.v1 import common_pb2

TEXT = """
name: %(name)s
seed: %(seed)d
strategy: random
duplicates: DUPLICATE_POLICY_RETRAIN
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3, 5], se_ratios: [0], skips: [identity, none],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: %(trials)d, parallel_trials: %(parallel)d%(budget)s}
latency: {warmup_runs: 1, runs: 2}
reference: none
"""


def tiny_text(
    name: str, *, seed: int = 0, trials: int = 3, parallel: int = 1, budget: str = ""
) -> str:
    """The spec as YAML (for a spec file); ``budget``: more of the budget's fields
    (``"keep_weights: 1"``)."""
    extra = f", {budget}" if budget else ""
    return TEXT % {
        "name": name,
        "seed": seed,
        "trials": trials,
        "parallel": parallel,
        "budget": extra,
    }


def tiny_spec(
    name: str, *, seed: int = 0, trials: int = 3, parallel: int = 1, budget: str = ""
) -> common_pb2.SearchSpec:
    """The spec, parsed."""
    return parse_spec(tiny_text(name, seed=seed, trials=trials, parallel=parallel, budget=budget))
