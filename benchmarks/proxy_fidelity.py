"""Does the quickstart's proxy rank architectures as a longer training does, and as itself?

Run as ``python benchmarks/proxy_fidelity.py [--spec examples/quickstart.yaml] [--archs 12]``.
Samples architectures from the spec's search space (``space.sample(random.Random(k))`` for
k = 0, 1, ...) and trains each with :func:`services.trainer.training.train`:

- the proxy, the spec's ``training`` recipe exactly as a search's trainers receive it
  (resolved with the controller's defaults), under two seeds;
- long trainings, under the first seed: the same recipe on more training images for more
  epochs, by default two mixes that each see 8 times the proxy's images (``--long 4x2``:
  4 times the images for 2 times the epochs; ``--long 2x4``).

The held-out split depends only on the seed and ``validation_examples``, so the long
trainings and the proxy under the first seed are evaluated on the same held-out images,
and the proxy's training images are a subset of the long trainings'. The figures are
Kendall's tau-b between rankings of held-out accuracy: ``kendall_tau``, the proxy under
one seed against the proxy under the other (what a search can expect from a repetition),
and ``kendall_tau_vs_long``, the proxy against the long ranking (how far the proxy's
ranking is the ranking of better-trained networks, as NAS papers report it). The long
ranking is by the mean accuracy of the long trainings: one long training is itself noisy,
and ``kendall_tau_long_vs_long`` (the long trainings against each other) says how much,
a ceiling for any proxy; ``kendall_tau_vs_each_long`` gives the proxy against each alone.
``kendall_tau_seed_mean_vs_long`` ranks by the mean of the proxy's two seeds instead: what
a proxy of twice the cost, averaging out its seed noise, would give.

Ties (pairs of equal accuracies, which have no order) are counted in ``ties``. Each
architecture's results are logged to stderr, with the taus so far, as soon as they are
in; an interrupt (Ctrl-C) prints the JSON of the architectures done so far. The last
line of stdout is one JSON object.

Cost: each long training costs about 8 proxies, so a run with the two default long
trainings costs about ``archs`` x 18 proxy trainings, nearly all of it proportional to
the images seen. Networks train one at a time with ``--threads`` (default: every core, as
the local trainer runs a search's): two at once with one thread each was slower in a
comparison on a shared 2-core machine (636 s against 523 s for the same 3
architectures), so there is no option for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mnas.arch import Architecture
from mnas.build import BuildParams
from mnas.space import SearchSpace
from mnas.specfile import load_spec
from mnas.v1 import common_pb2
from services.controller.spec import Dataset, resolve
from services.controller.strategies import STRATEGIES
from services.trainer.catalog import Catalog
from services.trainer.conversions import build_from_proto, training_config_from_proto
from services.trainer.cores import usable_cores
from services.trainer.training import TrainingConfig, TrainOutcome, train

_logger = logging.getLogger("benchmarks.proxy_fidelity")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "examples" / "quickstart.yaml"
_OPTIMIZERS = {"sgd": common_pb2.OPTIMIZER_SGD, "rmsprop": common_pb2.OPTIMIZER_RMSPROP}
LONG = "long"


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties adjusted); NaN when one is constant."""
    if len(x) != len(y):
        raise ValueError(f"samples differ in length: {len(x)} and {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + tied_x) * (concordant + discordant + tied_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def tied_pairs(values: Sequence[float]) -> int:
    """How many pairs of ``values`` are equal (each such pair has no rank order)."""
    return sum(
        values[i] == values[j] for i in range(len(values)) for j in range(i + 1, len(values))
    )


@dataclass(frozen=True)
class Proxy:
    """What a search on a spec trains: its space, the build and the training recipe;
    ``available``: the data set's training images that are not held out."""

    space: SearchSpace
    build: BuildParams
    config: TrainingConfig
    preset: str
    available: int


def load_proxy(path: str | Path, overrides: argparse.Namespace | None = None) -> Proxy:
    """The proxy of the spec file at ``path``, resolved as the controller resolves it.

    ``overrides`` (the CLI's) replace spec fields before resolution, so defaults that
    depend on them (the optimizer's learning rate and warm-up) follow. Intermediate
    evaluations are turned off: they leave the final accuracy as it is (and the spec's
    early stopping, if any, is not applied).
    """
    spec = load_spec(path)
    if overrides is not None:
        _override(spec, overrides)
    catalog = Catalog.from_entries([], roots=[Path("/")])  # a local run reads any directory
    info = catalog.describe(spec.training.dataset or "fashion-mnist")
    dataset = Dataset(
        name=info.name,
        classes=info.classes,
        resolution=info.native_resolution,
        examples=info.examples,
    )
    resolved = resolve(
        spec,
        dataset=dataset,
        device_classes=[spec.latency.device_class or "host-cpu"],
        strategies=STRATEGIES,
    )
    config = training_config_from_proto(resolved.spec.training)
    return Proxy(
        space=resolved.space,
        build=build_from_proto(resolved.build, lambda: info),
        config=dataclasses.replace(config, evaluate_every_steps=0),
        preset=resolved.spec.space.preset,
        available=info.examples - config.validation_examples,
    )


def _override(spec: common_pb2.SearchSpec, args: argparse.Namespace) -> None:
    t = spec.training
    fields = {
        "steps": "steps",
        "epochs": "epochs",
        "batch": "batch_size",
        "learning_rate": "learning_rate",
        "warmup_fraction": "warmup_fraction",
        "train_examples": "train_examples",
        "validation_examples": "validation_examples",
    }
    for name, field in fields.items():
        value = getattr(args, name, None)
        if value is not None:
            setattr(t, field, value)
    if getattr(args, "optimizer", None) is not None:
        t.optimizer = _OPTIMIZERS[args.optimizer]
    if getattr(args, "width", None) is not None:
        spec.space.width = args.width
    if getattr(args, "resolution", None) is not None:
        spec.space.resolution = args.resolution


DEFAULT_LONGS = ("4x2", "2x4")


def _factors(text: str) -> dict[str, int]:
    """``"4x2"`` -> examples_factor 4, epochs_factor 2."""
    images, sep, epochs = text.partition("x")
    if not (sep and images.isdigit() and epochs.isdigit()):
        raise ValueError(f"--long: expected IMAGESxEPOCHS such as 4x2, got {text!r}")
    return {"examples_factor": int(images), "epochs_factor": int(epochs)}


def long_config(
    proxy: TrainingConfig, *, examples_factor: int, epochs_factor: int, available: int
) -> TrainingConfig:
    """The proxy's recipe on ``examples_factor`` times the training images for
    ``epochs_factor`` times the epochs (or steps); ``available``: the images not held out."""
    if examples_factor < 1 or epochs_factor < 1:
        raise ValueError("long training: the factors must be integers >= 1")
    if proxy.train_examples == 0:
        raise ValueError(
            "long training: the proxy trains on every image not held out "
            "(train_examples 0), so a longer training cannot see more data"
        )
    examples = proxy.train_examples * examples_factor
    if examples > available:
        raise ValueError(
            f"long training: {examples} training examples exceed the {available} not held out; "
            "lower --long-examples-factor"
        )
    steps = 0
    if proxy.steps:  # a step budget: scale it by both factors (the batch stays)
        steps = proxy.steps * examples_factor * epochs_factor
    return dataclasses.replace(
        proxy, train_examples=examples, epochs=proxy.epochs * epochs_factor, steps=steps
    )


@dataclass(frozen=True)
class _Task:
    sample: int
    arch: Architecture
    kind: str  # "seed<N>" or LONG
    config: TrainingConfig


def _settings(config: TrainingConfig) -> dict[str, object]:
    return {
        "dataset": config.dataset,
        "epochs": config.epochs,
        "steps": config.steps,
        "batch": config.batch_size,
        "learning_rate": config.learning_rate,
        "optimizer": config.optimizer,
        "momentum": config.momentum,
        "weight_decay": config.decay,
        "label_smoothing": config.label_smoothing,
        "warmup_fraction": config.warmup_fraction,
        "schedule": config.schedule,
        "train_examples": config.train_examples,
        "validation_examples": config.validation_examples,
    }


class _Results:
    """The architectures' accuracies and seconds as they come in; the JSON summary.

    ``longs``: the names of the long trainings ("long-4x2", ...); the long ranking is by
    the mean of their accuracies (``"long"``).
    """

    def __init__(
        self, archs: Sequence[Architecture], seeds: Sequence[int], longs: Sequence[str] = (LONG,)
    ) -> None:
        self.archs = archs
        self.first, self.second = (f"seed{seed}" for seed in seeds)
        self.longs = tuple(longs)
        self.kinds = (self.first, self.second, *self.longs)
        self.outcomes: dict[int, dict[str, TrainOutcome]] = {k: {} for k in range(len(archs))}

    def add(self, task: _Task, outcome: TrainOutcome) -> bool:
        """Record ``outcome``; True when it completes its architecture."""
        done = self.outcomes[task.sample]
        done[task.kind] = outcome
        return len(done) == len(self.kinds)

    def complete(self) -> list[int]:
        return [k for k, done in self.outcomes.items() if len(done) == len(self.kinds)]

    def accuracies(self, kind: str) -> list[float]:
        """Per complete architecture: ``kind``'s accuracy; for "long" the longs' mean."""
        if kind == LONG and LONG not in self.kinds:
            return [
                statistics.fmean(self.outcomes[k][name].accuracy for name in self.longs)
                for k in self.complete()
            ]
        return [self.outcomes[k][kind].accuracy for k in self.complete()]

    def taus(self) -> dict[str, object]:
        first, second, long = (self.accuracies(kind) for kind in (self.first, self.second, LONG))
        out: dict[str, object] = {
            "kendall_tau": _rounded(kendall_tau_b(first, second)),
            "kendall_tau_vs_long": _rounded(kendall_tau_b(first, long)),
            "kendall_tau_vs_long_second_seed": _rounded(kendall_tau_b(second, long)),
            # The proxy run under both seeds, its accuracies averaged: at twice the cost,
            # how much of the gap to the long ranking is the proxy's seed noise.
            "kendall_tau_seed_mean_vs_long": _rounded(
                kendall_tau_b([(a + b) / 2 for a, b in zip(first, second, strict=True)], long)
            ),
        }
        if len(self.longs) > 1:
            # Against each long training alone, and how far the long trainings agree
            # with each other: the long ranking's own noise, a ceiling for the proxy's.
            out["kendall_tau_vs_each_long"] = {
                name: _rounded(kendall_tau_b(first, self.accuracies(name))) for name in self.longs
            }
            out["kendall_tau_long_vs_long"] = _rounded(
                kendall_tau_b(self.accuracies(self.longs[0]), self.accuracies(self.longs[1]))
            )
        return out

    def row(self, k: int) -> dict[str, object]:
        row: dict[str, object] = {"sample": k, "arch": self.archs[k].id}
        for kind in self.kinds:
            row[f"accuracy_{kind}"] = round(self.outcomes[k][kind].accuracy, 4)
        if LONG not in self.kinds:
            mean = statistics.fmean(self.outcomes[k][name].accuracy for name in self.longs)
            row[f"accuracy_{LONG}"] = round(mean, 4)
        for kind in self.kinds:
            row[f"seconds_{kind}"] = round(self.outcomes[k][kind].seconds, 1)
        return row

    def summary(self) -> dict[str, object]:
        """The taus (None below 2 architectures), ties, accuracies, means and seconds."""
        done = self.complete()
        first, second, long = (self.accuracies(kind) for kind in (self.first, self.second, LONG))
        out: dict[str, object] = dict(self.taus()) if len(done) >= 2 else {}
        out["archs"] = len(done)
        ranked = dict.fromkeys((*self.kinds, LONG))
        out["ties"] = {"pairs": len(done) * (len(done) - 1) // 2} | {
            kind: tied_pairs(self.accuracies(kind)) for kind in ranked
        }
        out["accuracies"] = [self.row(k) for k in done]
        if not done:
            return out
        out["mean_accuracy"] = round(statistics.fmean(first + second), 4)
        out["mean_accuracy_long"] = round(statistics.fmean(long), 4)
        out["mean_abs_seed_difference"] = round(
            statistics.fmean(abs(a - b) for a, b in zip(first, second, strict=True)), 4
        )
        seconds = {kind: [self.outcomes[k][kind].seconds for k in done] for kind in self.kinds}
        out["seconds_per_network"] = {
            "proxy": round(statistics.fmean(seconds[self.first] + seconds[self.second]), 1),
            "long": round(statistics.fmean(s for name in self.longs for s in seconds[name]), 1),
        }
        seen = {
            kind: statistics.fmean(self.outcomes[k][kind].samples_seen for k in done)
            for kind in (self.first, self.longs[0])
        }
        out["images_seen"] = {
            "proxy": round(seen[self.first]),
            "long": round(seen[self.longs[0]]),
            "factor": round(seen[self.longs[0]] / seen[self.first], 2),
        }
        return out


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def run(
    proxy: Proxy,
    *,
    archs: int,
    seeds: Sequence[int],
    longs: dict[str, TrainingConfig],
    threads: int,
) -> tuple[dict[str, object], bool]:
    """Train the ``archs`` samples under the proxy (both seeds) and each long recipe, one
    architecture after the other; the summary and whether every training finished (False
    after an interrupt: the summary covers the architectures done)."""
    samples = [proxy.space.sample(random.Random(k)) for k in range(archs)]
    results = _Results(samples, seeds, list(longs))
    tasks = []
    for k, arch in enumerate(samples):
        for seed in seeds:
            tasks.append(
                _Task(k, arch, f"seed{seed}", dataclasses.replace(proxy.config, seed=seed))
            )
        for name, long in longs.items():
            tasks.append(_Task(k, arch, name, dataclasses.replace(long, seed=seeds[0])))
    try:
        for task in tasks:
            outcome = train(
                task.arch,
                num_classes=proxy.build.num_classes,
                resolution=proxy.build.resolution,
                width=proxy.build.width,
                config=task.config,
                threads=threads,
            )
            _logger.info(
                "sample %d %s: %.4f in %.1fs",
                task.sample,
                task.kind,
                outcome.accuracy,
                outcome.seconds,
            )
            if results.add(task, outcome):
                _logger.info(
                    "sample %d done: %s; over %d: %s",
                    task.sample,
                    json.dumps(results.row(task.sample)),
                    len(results.complete()),
                    json.dumps(results.taus()),
                )
    except KeyboardInterrupt:
        _logger.warning(
            "interrupted: the summary covers the %d architectures done", len(results.complete())
        )
        return results.summary(), False
    return results.summary(), True


def _shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec",
        default=str(DEFAULT_SPEC),
        help="the search spec whose space and training recipe are the proxy",
    )
    parser.add_argument("--archs", type=int, default=12, help="architectures (at least 12)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs=2,
        default=None,
        help="the proxy's two seeds (default: the spec's and the next)",
    )
    parser.add_argument(
        "--long",
        action="append",
        default=None,
        metavar="IMAGESxEPOCHS",
        help="a long training: the proxy's training images times IMAGES, for its epochs "
        "(or steps) times EPOCHS; repeatable, the long ranking is by their mean accuracy "
        "(default: 4x2 and 2x4, each 8 times the images the proxy sees)",
    )
    overrides = parser.add_argument_group("proxy", "override the spec's training and space")
    overrides.add_argument("--steps", type=int)
    overrides.add_argument("--epochs", type=int)
    overrides.add_argument("--batch", type=int)
    overrides.add_argument("--learning-rate", type=float)
    overrides.add_argument("--optimizer", choices=sorted(_OPTIMIZERS))
    overrides.add_argument("--warmup-fraction", type=float)
    overrides.add_argument("--train-examples", type=int)
    overrides.add_argument("--validation-examples", type=int)
    overrides.add_argument("--width", type=float)
    overrides.add_argument("--resolution", type=int)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the usable cores, as a lone local trainer uses)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.archs < 2:
        parser.error("--archs: need at least 2 architectures to rank")
    if args.seeds is not None and args.seeds[0] == args.seeds[1]:
        parser.error("--seeds: give two different seeds")
    try:
        proxy = load_proxy(args.spec, args)
        longs = {
            f"long-{text}": long_config(proxy.config, **_factors(text), available=proxy.available)
            for text in args.long or DEFAULT_LONGS
        }
    except ValueError as err:
        parser.error(str(err))
    seeds = args.seeds if args.seeds is not None else [proxy.config.seed, proxy.config.seed + 1]
    threads = args.threads or usable_cores()
    started, cpu_started = time.perf_counter(), time.process_time()
    summary, complete = run(proxy, archs=args.archs, seeds=seeds, longs=longs, threads=threads)
    build = proxy.build
    print(
        json.dumps(
            {
                **summary,
                "complete": complete,
                "seeds": list(seeds),
                "spec": _shown(args.spec),
                "space": {
                    "preset": proxy.preset,
                    "width": build.width,
                    "resolution": build.resolution,
                    "num_classes": build.num_classes,
                },
                "proxy": _settings(proxy.config),
                "long": {
                    name: _settings(long) | {"seed": seeds[0]} for name, long in longs.items()
                },
                "threads": threads,
                "seconds": round(time.perf_counter() - started, 1),
                "cpu_seconds": round(time.process_time() - cpu_started, 1),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )
    return 0 if complete else 130


if __name__ == "__main__":
    sys.exit(main())
