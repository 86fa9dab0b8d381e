"""Images per second of the trainer's training loop against a bare PyTorch loop.

Run as ``python benchmarks/trainer_throughput.py [--steps N] [--batch B] [--repeats R]``.
Both loops train the same fixed small architecture on the same Fashion-MNIST images with
the same batch, optimizer (SGD, momentum 0.9, weight decay) and thread count, alternating
repeat by repeat. The trainer is :func:`services.trainer.training.train` as the servicer
runs it: in a child process of its own (:mod:`services.trainer.isolation`), with progress
reports through a pipe, cancellation checks and per-batch input conversion; its rate is
taken between its first and last progress reports, so process start, model
building, data loading, batch-norm recalibration and evaluation are not counted. The bare
loop does forward, loss, backward and an SGD step on batches converted beforehand. Medians
over the repeats, after a warm-up; the last line of stdout is one JSON object with
``ratio`` (trainer / bare), ``trainer_images_per_s`` and ``bare_images_per_s``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mnas.arch import decode
from services.trainer import data
from services.trainer.builder import build_torch
from services.trainer.isolation import ChildJob, run_isolated, start_fork_server
from services.trainer.training import DEFAULT_MOMENTUM, Progress, TrainingConfig

_logger = logging.getLogger("benchmarks.trainer_throughput")

ARCH = decode(
    "stem:16 r1_k3_s11_e1_i16_o16 r2_k3_s22_e3_i16_o24 r2_k5_s22_e3_i24_o40_se0.25 "
    "r2_k3_s11_e6_i40_o48 head:256 act:relu dropout:0"
)
RESOLUTION = 28
WIDTH = 1.0
SEED = 0
LEARNING_RATE = 0.05
VALIDATION_EXAMPLES = 1000
BARE_BATCHES = 16  # distinct pre-converted batches the bare loop cycles through


def trainer_rate(steps: int, batch: int, device: torch.device) -> float:
    """Images per second of the trainer's loop (in its own child process, as the trainer
    runs it) between its first and last progress reports."""
    reports: list[Progress] = []
    config = TrainingConfig(
        steps=steps,
        batch_size=batch,
        learning_rate=LEARNING_RATE,
        seed=SEED,
        train_examples=steps * batch,
        validation_examples=VALIDATION_EXAMPLES,
    )
    job = ChildJob(
        arch=ARCH,
        num_classes=None,
        resolution=RESOLUTION,
        width=WIDTH,
        config=config,
        device=str(device),
        threads=torch.get_num_threads(),
    )
    run_isolated(job, on_progress=reports.append)
    if len(reports) < 2:
        raise SystemExit(f"only {len(reports)} progress report(s); raise --steps")
    first, last = reports[0], reports[-1]
    return (last.samples_seen - first.samples_seen) / (last.seconds - first.seconds)


def bare_rate(steps: int, batch: int, warmup: int, device: torch.device) -> float:
    """Images per second of a plain forward/backward/SGD loop on pre-converted batches."""
    split = data.held_out_split(
        data.FASHION_MNIST,
        seed=SEED,
        validation_examples=VALIDATION_EXAMPLES,
        train_examples=steps * batch,
    )
    train_set = split.train
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(SEED))
    batches = []
    for b in range(min(BARE_BATCHES, len(train_set) // batch)):
        index = order[b * batch : (b + 1) * batch].numpy()
        x = train_set.batch(index, RESOLUTION, device=device)
        y = torch.from_numpy(train_set.labels[index]).to(device)
        batches.append((x, y))
    torch.manual_seed(SEED)
    model = build_torch(ARCH, num_classes=split.num_classes, resolution=RESOLUTION, width=WIDTH)
    model.to(device)
    decayed = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [
            {"params": decayed, "weight_decay": TrainingConfig().decay},
            {"params": plain, "weight_decay": 0.0},
        ],
        lr=LEARNING_RATE,
        momentum=DEFAULT_MOMENTUM,
    )
    model.train()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    for i in range(warmup):
        step(i)
    _synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="torch device for both loops")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default); more than the idle cores slows torch badly",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start_fork_server()
    warmup = max(5, args.steps // 6)  # about what the trainer runs before its first report
    trainer_rate(max(10, args.steps // 3), args.batch, device)  # warm-up: caches, allocator
    bare_rate(warmup, args.batch, warmup, device)
    trainer_runs, bare_runs = [], []
    for repeat in range(args.repeats):
        trainer_runs.append(trainer_rate(args.steps, args.batch, device))
        bare_runs.append(bare_rate(args.steps, args.batch, warmup, device))
        _logger.info(
            "repeat %d: trainer %.0f img/s, bare %.0f img/s",
            repeat + 1,
            trainer_runs[-1],
            bare_runs[-1],
        )
    trainer_median = statistics.median(trainer_runs)
    bare_median = statistics.median(bare_runs)
    print(
        json.dumps(
            {
                "ratio": round(trainer_median / bare_median, 4),
                "trainer_images_per_s": round(trainer_median, 1),
                "bare_images_per_s": round(bare_median, 1),
                "trainer_runs": [round(r, 1) for r in trainer_runs],
                "bare_runs": [round(r, 1) for r in bare_runs],
                "arch": ARCH.id,
                "resolution": RESOLUTION,
                "batch": args.batch,
                "steps": args.steps,
                "repeats": args.repeats,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
