"""Train one architecture briefly and measure its held-out accuracy (no gRPC here).

The recipe is MnasNet's proxy task in miniature: SGD with momentum 0.9, weight decay
4e-5 on convolution and dense weights, a cosine learning-rate decay over the step budget,
optional label smoothing. Batch-norm statistics are re-estimated on training images
after the last step (a short run leaves the running averages stale), then accuracy and
cross-entropy are measured on the held-out split of the training set (see
:mod:`services.trainer.data`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnas.arch import Architecture
from services.trainer import data
from services.trainer.builder import build_torch

__all__ = [
    "Progress",
    "TrainOutcome",
    "TrainingCancelled",
    "TrainingConfig",
    "train",
]

_logger = logging.getLogger(__name__)

MOMENTUM = 0.9
WEIGHT_DECAY = 4e-5
PROGRESS_INTERVAL_SECONDS = 0.5
RECALIBRATION_EXAMPLES = 2048  # training images that re-estimate batch-norm statistics

# Seeding and building touch torch's process-wide RNG; jobs running at once take turns.
_SEED_LOCK = threading.Lock()


class TrainingCancelled(Exception):
    """Raised by :func:`train` when ``cancelled()`` turned true."""


@dataclass(frozen=True)
class TrainingConfig:
    """How to train: data set, budget, optimizer settings and the seed.

    ``steps`` (optimizer steps) wins over ``epochs`` when it is positive.
    ``train_examples`` 0 trains on every image that is not held out.
    """

    dataset: str = data.FASHION_MNIST
    epochs: int = 1
    steps: int = 0
    batch_size: int = 128
    learning_rate: float = 0.05
    seed: int = 0
    train_examples: int = 0
    validation_examples: int = 10000
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        _at_least("epochs", self.epochs, 1)
        _at_least("steps", self.steps, 0)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("train_examples", self.train_examples, 0)
        _at_least("validation_examples", self.validation_examples, 1)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate: must be a positive number, got {self.learning_rate}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class Progress:
    """A progress report: ``step`` of ``total_steps`` done, in 1-based ``epoch``.

    ``loss`` is the mean training loss of the steps since the previous report.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    samples_seen: int
    seconds: float


@dataclass(frozen=True)
class TrainOutcome:
    """Held-out accuracy (0..1) and cross-entropy, wall time, training samples seen."""

    accuracy: float
    loss: float
    seconds: float
    samples_seen: int


def train(
    arch: Architecture,
    *,
    num_classes: int | None = None,
    resolution: int | None = None,
    width: float = 1.0,
    config: TrainingConfig,
    on_progress: Callable[[Progress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    progress_interval: float = PROGRESS_INTERVAL_SECONDS,
) -> TrainOutcome:
    """Train ``arch`` from scratch under ``config`` and evaluate it on the held-out split.

    ``num_classes`` and ``resolution`` default to the data set's (10 and 28 for
    Fashion-MNIST, 10 and 32 for CIFAR-10). ``on_progress`` is called at most every
    ``progress_interval`` seconds and once after the last step. ``cancelled`` is polled
    before every step, between the blocks of every forward pass and between evaluation
    batches; when it returns true, :class:`TrainingCancelled` is raised. ``threads`` sets
    torch's (process-wide) intra-op thread count.
    """
    start = time.perf_counter()
    is_cancelled = cancelled or _never
    if threads is not None:
        _at_least("threads", threads, 1)
        torch.set_num_threads(threads)
    split = data.held_out_split(
        config.dataset,
        seed=config.seed,
        validation_examples=config.validation_examples,
        train_examples=config.train_examples,
    )
    classes = split.num_classes if num_classes is None else num_classes
    if classes < split.num_classes:
        raise ValueError(
            f"num_classes: {classes} is fewer than the {split.num_classes} classes of "
            f"{config.dataset}"
        )
    size = split.resolution if resolution is None else resolution
    _check_cancelled(is_cancelled)
    dev = torch.device(device)

    with _SEED_LOCK:
        torch.manual_seed(config.seed)
        model = build_torch(arch, num_classes=classes, resolution=size, width=width)
    model.to(dev)
    hooks = [m.register_forward_pre_hook(lambda _m, _x: _check_cancelled(is_cancelled))
             for m in (model.stem, *model.blocks, model.head)]
    try:
        samples = _fit(model, split.train, config, size, dev, is_cancelled, on_progress,
                       progress_interval, start)
        _recalibrate_batch_norm(model, split.train, config.batch_size, size, dev, is_cancelled)
        accuracy, loss = _evaluate(model, split.validation, config.batch_size * 2, size, dev,
                                   is_cancelled)
    finally:
        for hook in hooks:
            hook.remove()
    seconds = time.perf_counter() - start
    _logger.info("trained %s: accuracy %.4f, loss %.4f, %d samples, %.1fs",
                 arch.id, accuracy, loss, samples, seconds)
    return TrainOutcome(accuracy=accuracy, loss=loss, seconds=seconds, samples_seen=samples)


def _fit(
    model: nn.Module,
    train_set: data.ImageSet,
    config: TrainingConfig,
    resolution: int,
    device: torch.device,
    cancelled: Callable[[], bool],
    on_progress: Callable[[Progress], None] | None,
    progress_interval: float,
    start: float,
) -> int:
    """Run the step budget; return the number of training samples seen."""
    n = len(train_set)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # the last partial batch of an epoch is dropped
    total = config.steps if config.steps > 0 else config.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(
        _param_groups(model), lr=config.learning_rate, momentum=MOMENTUM, nesterov=False
    )
    labels = torch.from_numpy(train_set.labels)
    generator = torch.Generator().manual_seed(config.seed)
    augmentation = torch.Generator().manual_seed(config.seed + 1)  # crops and flips
    model.train()
    samples = 0
    window_loss = 0.0
    window_steps = 0
    last_report = time.perf_counter()
    order = torch.empty(0, dtype=torch.long)
    for step in range(total):
        _check_cancelled(cancelled)
        position = step % steps_per_epoch
        if position == 0:
            order = torch.randperm(n, generator=generator)
        index = order[position * batch:(position + 1) * batch]
        x = train_set.batch(index.numpy(), resolution, device=device, generator=augmentation)
        y = labels[index].to(device)
        lr = 0.5 * config.learning_rate * (1.0 + math.cos(math.pi * step / total))
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        samples += int(index.shape[0])
        window_loss += float(loss.item())
        window_steps += 1
        now = time.perf_counter()
        due = step + 1 == total or now - last_report >= progress_interval
        if on_progress is not None and due:
            on_progress(Progress(
                step=step + 1,
                total_steps=total,
                epoch=step // steps_per_epoch + 1,
                loss=window_loss / window_steps,
                samples_seen=samples,
                seconds=now - start,
            ))
            last_report = now
            window_loss = 0.0
            window_steps = 0
    return samples


@torch.no_grad()
def _recalibrate_batch_norm(
    model: nn.Module,
    train_set: data.ImageSet,
    batch_size: int,
    resolution: int,
    device: torch.device,
    cancelled: Callable[[], bool],
) -> None:
    """Re-estimate batch-norm statistics as exact averages over training images.

    A short proxy training leaves the running statistics (momentum 0.01) far from the
    trained weights' true ones, which would make held-out accuracy mostly noise.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    count = min(len(train_set), RECALIBRATION_EXAMPLES)
    batch = min(batch_size, count)
    try:
        for begin in range(0, count - batch + 1, batch):
            _check_cancelled(cancelled)
            model(train_set.batch(slice(begin, begin + batch), resolution, device=device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    held_out: data.ImageSet,
    batch_size: int,
    resolution: int,
    device: torch.device,
    cancelled: Callable[[], bool],
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``held_out``."""
    model.eval()
    labels = torch.from_numpy(held_out.labels)
    correct = 0
    total_loss = 0.0
    for begin in range(0, len(held_out), batch_size):
        _check_cancelled(cancelled)
        x = held_out.batch(slice(begin, begin + batch_size), resolution, device=device)
        y = labels[begin:begin + batch_size].to(device)
        logits: torch.Tensor = model(x)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum").item())
        correct += int((logits.argmax(dim=1) == y).sum().item())
    n = len(held_out)
    return correct / n, total_loss / n


def _param_groups(model: nn.Module) -> list[dict[str, object]]:
    """Weight decay on convolution and dense weights; none on biases and batch norm."""
    decayed: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for param in model.parameters():
        (decayed if param.ndim > 1 else plain).append(param)
    return [
        {"params": decayed, "weight_decay": WEIGHT_DECAY},
        {"params": plain, "weight_decay": 0.0},
    ]


def _check_cancelled(cancelled: Callable[[], bool]) -> None:
    if cancelled():
        raise TrainingCancelled("training cancelled")


def _never() -> bool:
    return False


def _at_least(field: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{field}: must be an integer >= {low}, got {value!r}")
