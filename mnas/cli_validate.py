"""``mnas validate SPEC``: check a spec file without any service, reporting every error at
once, or say what the search would run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mnas.cli_output import add_output_argument, print_data
from mnas.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_DEVICE_CLASS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_NUM_CLASSES,
    DEFAULT_PRESET,
    DEFAULT_RESOLUTION,
    DEFAULT_RUNS,
    DEFAULT_STRATEGY,
    DEFAULT_WARMUP_RUNS,
    DEFAULT_WIDTH,
)
from mnas.objective import FRONT_TEXT, looks_for_front
from mnas.spec_check import SPACE_REFERENCE, Problem, SpecError, search_space
from mnas.specfile import check_file
from mnas.v1 import common_pb2

__all__ = ["add_command", "summarize"]

EXIT_USAGE = 2  # bad input, as in mnas.cli


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``validate`` to the ``mnas`` parser."""
    validate = commands.add_parser(
        "validate",
        help="check a spec file offline: every error at once, or what the search will run",
    )
    validate.add_argument("spec", help="search spec (YAML)")
    add_output_argument(validate, what="one object with valid, errors, warnings and summary")
    validate.set_defaults(run=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    checked = check_file(args.spec)
    valid = not checked.errors and checked.spec is not None
    summary = summarize(checked.spec) if valid and checked.spec is not None else None
    if args.output != "table":
        print_data(
            args.output,
            {
                "spec": args.spec,
                "valid": valid,
                "errors": [_problem(p) for p in checked.errors],
                "warnings": [_problem(p) for p in checked.warnings],
                "summary": summary,
            },
        )
        return 0 if valid else EXIT_USAGE
    for warning in checked.warnings:
        print(f"mnas: warning: {warning}", file=sys.stderr)
    if not valid or summary is None:
        raise SpecError(checked.errors)  # printed one line each, exit status 2
    print(f"{args.spec}: valid")
    for section, line in _lines(summary):
        print(f"  {section:<10} {line}")
    print("  (the data set and device class are checked by the controller, against its workers)")
    return 0


def _problem(problem: Problem) -> dict[str, str]:
    return {"path": problem.path, "message": problem.message}


def summarize(spec: common_pb2.SearchSpec) -> dict[str, Any]:
    """What a valid spec's search runs, defaults written in where the spec alone decides
    them (None: decided by the data set, or the strategy's default)."""
    b, t, lat, s = spec.budget, spec.training, spec.latency, spec.space
    space = search_space(
        s,
        resolution=s.resolution or DEFAULT_RESOLUTION,
        num_classes=s.num_classes or DEFAULT_NUM_CLASSES,
    )
    objective: dict[str, Any] = {"kind": _enum(common_pb2.ObjectiveKind, spec.objective.kind)}
    if not looks_for_front(spec.objective):
        objective["target_latency_seconds"] = spec.objective.target_latency_seconds
    for name in ("alpha", "beta"):
        if spec.objective.HasField(name):
            objective[name] = getattr(spec.objective, name)
    return {
        "name": spec.name,
        "strategy": spec.strategy or DEFAULT_STRATEGY,
        "seed": spec.seed,
        "budget": {
            "max_trials": b.max_trials,
            "parallel_trials": b.parallel_trials or 1,
            "max_failed_trials": b.max_failed_trials or b.max_trials,
            "max_attempts": b.max_attempts or DEFAULT_MAX_ATTEMPTS,
            "keep_weights": b.keep_weights,
        },
        "objective": objective,
        "space": {
            "preset": None if s.stages else (s.preset or DEFAULT_PRESET),
            "blocks": space.num_blocks,
            "choices_per_block": space.choices_per_block,
            "size": space.size,
            "log10_size": round(space.log10_size, 2),
            "width": s.width or DEFAULT_WIDTH,
            "resolution": s.resolution or None,
        },
        "training": {
            "dataset": t.dataset or DEFAULT_DATASET,
            "steps": t.steps or None,
            "epochs": None if t.steps else (t.epochs or 1),
            "batch_size": t.batch_size or DEFAULT_BATCH_SIZE,
            "train_examples": t.train_examples or None,
            "validation_examples": t.validation_examples or None,
            "optimizer": _enum(common_pb2.Optimizer, t.optimizer) or "sgd",
            "schedule": _enum(common_pb2.LearningRateSchedule, t.schedule) or "cosine",
            "learning_rate": t.learning_rate or None,
            "timeout_seconds": t.timeout_seconds or None,
        },
        "latency": {
            "device_class": lat.device_class or DEFAULT_DEVICE_CLASS,
            "runs": lat.runs or DEFAULT_RUNS,
            "warmup_runs": lat.warmup_runs or DEFAULT_WARMUP_RUNS,
            "threads": lat.threads or 1,
            "resolution": lat.resolution or None,
        },
        "early_stopping": _enum(common_pb2.EarlyStoppingRule, spec.early_stopping.rule) or "none",
        "reference": spec.reference or SPACE_REFERENCE,
    }


def _enum(enum: Any, value: int) -> str | None:
    """``OPTIMIZER_RMSPROP`` -> ``rmsprop``; None for the unspecified value."""
    if value == 0:
        return None
    name: str = enum.Name(value)
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")
    return name.removeprefix(prefix).lower()


def _lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    b, o, sp, t, lat = (summary[k] for k in ("budget", "objective", "space", "training", "latency"))
    exponents = "".join(f", {k} {o[k]:g}" for k in ("alpha", "beta") if k in o)
    if o["kind"] == "pareto":
        objective = FRONT_TEXT
    else:
        objective = f"{o['kind']}, T = {o['target_latency_seconds'] * 1e3:g} ms{exponents}"
    trials = f"{b['max_trials']:,}, {b['parallel_trials']} at a time, "
    trials += f"up to {b['max_attempts']} attempts each, {b['max_failed_trials']:,} may fail"
    if b["keep_weights"]:
        trials += f"; keeps the {b['keep_weights']} best trained weights"
    resolution = f"{sp['resolution']} px" if sp["resolution"] else "the data set's resolution"
    space = (
        f"{sp['preset'] or 'given stages'}: {sp['blocks']} blocks of "
        f"{sp['choices_per_block']:,} choices, 10^{sp['log10_size']:g} networks; "
        f"width {sp['width']:g}, {resolution}"
    )
    if t["steps"]:
        length = f"{t['steps']:,} steps"
    else:
        length = f"{t['epochs']:,} epoch{'s' if t['epochs'] > 1 else ''}"
    examples = f"{t['train_examples']:,}" if t["train_examples"] else "all"
    held_out = f"{t['validation_examples']:,}" if t["validation_examples"] else "default"
    rate = f"at {t['learning_rate']:g}" if t["learning_rate"] else "at its default rate"
    timeout = f"timeout {t['timeout_seconds']:g} s" if t["timeout_seconds"] else "no timeout"
    training = (
        f"{t['dataset']}: {length} over {examples} examples ({held_out} held out), batch "
        f"{t['batch_size']}, {t['optimizer']} {rate}, {t['schedule']} schedule, {timeout}"
    )
    at = f"{lat['resolution']} px" if lat["resolution"] else "the space's resolution"
    latency = (
        f"{lat['device_class']}: {lat['runs']} runs after {lat['warmup_runs']} warm-up, "
        f"{lat['threads']} thread{'s' if lat['threads'] > 1 else ''}, at {at}"
    )
    lines = [
        ("strategy", f"{summary['strategy']}, seed {summary['seed']}"),
        ("trials", trials),
        ("objective", objective),
        ("space", space),
        ("training", training),
        ("latency", latency),
        ("stopping", summary["early_stopping"]),
        ("reference", summary["reference"]),
    ]
    if summary["name"]:
        lines.insert(0, ("name", summary["name"]))
    return lines
