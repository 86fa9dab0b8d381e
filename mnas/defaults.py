"""What a spec leaves out gets these values: one place for the spec resolver, the
services and the CLI (a zero, proto3's "unset", in a message field takes them too)."""

from __future__ import annotations

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DATASET",
    "DEFAULT_DEVICE_CLASS",
    "DEFAULT_EPOCHS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MIN_TRIALS",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_PRESET",
    "DEFAULT_RESOLUTION",
    "DEFAULT_RUNS",
    "DEFAULT_STRATEGY",
    "DEFAULT_THREADS",
    "DEFAULT_VALIDATION_EXAMPLES",
    "DEFAULT_WARMUP_RUNS",
    "DEFAULT_WIDTH",
]

# The search
DEFAULT_STRATEGY = "tpe"  # docs/strategies.md: the fewest trials on every landscape measured
DEFAULT_MAX_ATTEMPTS = 3  # per trial
DEFAULT_MIN_TRIALS = 3  # completed before the median early-stopping rule stops any
# The space
DEFAULT_PRESET = "mnasnet"
DEFAULT_WIDTH = 1.0
# The build, where neither a spec nor a data set says: ImageNet's, as in the paper
DEFAULT_RESOLUTION = 224
DEFAULT_NUM_CLASSES = 1000
# Training
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 128
DEFAULT_VALIDATION_EXAMPLES = 10_000  # held out, at most a sixth of the data set
# Latency
DEFAULT_DEVICE_CLASS = "host-cpu"
DEFAULT_WARMUP_RUNS = 5
DEFAULT_RUNS = 50
DEFAULT_THREADS = 1
