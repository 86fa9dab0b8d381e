"""Train one architecture briefly and measure its held-out accuracy (no gRPC here).

The recipe is MnasNet's proxy task in miniature, every part set by :class:`TrainingConfig`:
SGD with momentum 0.9 or MnasNet's RMSProp (decay 0.9, epsilon 1e-3, momentum 0.9), weight
decay on convolution and dense weights, label smoothing, a linear warm-up over a fraction
of the step budget, then a cosine, exponential (x0.97 every 2.4 epochs, MnasNet) or
constant learning rate. Batch-norm statistics are re-estimated on training images after
the last step (a short run leaves the running averages stale), then accuracy and
cross-entropy are measured on the held-out split of the training set (see
:mod:`services.trainer.data`).

Intermediate evaluations (every ``evaluate_every_steps``) measure held-out accuracy on the
first ``evaluation_examples`` held-out images with batch statistics, leaving the running
statistics and the weights as they were; progress reports carry them for early stopping.

Tensors are channels-last (NHWC), which oneDNN and cuDNN convolve faster. On CUDA the same
code trains in mixed precision (bfloat16 autocast where supported, else float16 with loss
scaling), with cuDNN autotuning, and batches assembled on a background thread into pinned
memory and copied asynchronously.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnas import recipe
from mnas.arch import Architecture
from mnas.defaults import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_VALIDATION_EXAMPLES
from mnas.errors import InvalidInput
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

OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("cosine", "exponential", "constant")
DEFAULT_MOMENTUM = recipe.MOMENTUM
RMSPROP_DECAY = 0.9  # MnasNet's RMSProp
RMSPROP_EPSILON = 1e-3
EXPONENTIAL_RATE = 0.97  # MnasNet: the learning rate decays 0.97x every 2.4 epochs
EXPONENTIAL_EPOCHS = 2.4
PROGRESS_INTERVAL_SECONDS = 0.5
RECALIBRATION_EXAMPLES = 2048  # training images that re-estimate batch-norm statistics

# Seeding and building touch torch's process-wide RNG; jobs running at once take turns.
_SEED_LOCK = threading.Lock()


class TrainingCancelled(Exception):
    """Raised by :func:`train` when ``cancelled()`` turned true."""


@dataclass(frozen=True)
class TrainingConfig:
    """How to train: data set, budget, recipe, intermediate evaluations and the seed.

    ``steps`` (optimizer steps) wins over ``epochs`` when it is positive.
    ``train_examples`` 0 trains on every image that is not held out. ``learning_rate`` is
    the peak, reached after ``warmup_fraction`` of the steps. ``weight_decay`` None takes
    the optimizer's default (4e-5 for SGD, 1e-5 for RMSProp as MnasNet).
    """

    dataset: str = data.FASHION_MNIST
    epochs: int = DEFAULT_EPOCHS
    steps: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = recipe.SGD_LEARNING_RATE
    seed: int = 0
    train_examples: int = 0
    validation_examples: int = DEFAULT_VALIDATION_EXAMPLES
    label_smoothing: float = recipe.LABEL_SMOOTHING
    optimizer: str = "sgd"
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float | None = None
    warmup_fraction: float = 0.0
    schedule: str = "cosine"
    evaluate_every_steps: int = 0
    evaluation_examples: int = recipe.EVALUATION_EXAMPLES

    def __post_init__(self) -> None:
        _at_least("epochs", self.epochs, 1)
        _at_least("steps", self.steps, 0)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("train_examples", self.train_examples, 0)
        _at_least("validation_examples", self.validation_examples, 1)
        _at_least("evaluate_every_steps", self.evaluate_every_steps, 0)
        _at_least("evaluation_examples", self.evaluation_examples, 1)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate: must be a positive number, got {self.learning_rate}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule: must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum}")
        if self.weight_decay is not None and not (
            math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            raise ValueError(f"weight_decay: must be a number >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction: must be in [0, 1), got {self.warmup_fraction}")

    @property
    def decay(self) -> float:
        """The weight decay in effect."""
        if self.weight_decay is not None:
            return self.weight_decay
        return recipe.optimizer_defaults(self.optimizer, self.batch_size)["weight_decay"]


@dataclass(frozen=True)
class Progress:
    """A progress report: ``step`` of ``total_steps`` done, in 1-based ``epoch``.

    ``loss`` is the mean training loss of the steps since the previous report;
    ``accuracy`` the intermediate held-out accuracy when an evaluation ran at ``step``.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    samples_seen: int
    seconds: float
    accuracy: float | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """Held-out accuracy (0..1) and cross-entropy, wall time, training samples seen, and
    the trained ``state_dict`` (``torch.save`` bytes) when asked for."""

    accuracy: float
    loss: float
    seconds: float
    samples_seen: int
    weights: bytes | None = None


def learning_rate_at(step: int, total: int, steps_per_epoch: int, config: TrainingConfig) -> float:
    """The learning rate of (0-based) ``step`` of ``total``: linear warm-up to the peak,
    then the schedule."""
    peak = config.learning_rate
    warmup = int(config.warmup_fraction * total)
    if step < warmup:
        return peak * (step + 1) / warmup
    if config.schedule == "constant":
        return peak
    if config.schedule == "exponential":
        epochs = (step - warmup) / steps_per_epoch
        return float(peak * EXPONENTIAL_RATE ** (epochs / EXPONENTIAL_EPOCHS))
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


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
    keep_weights: bool = False,
) -> TrainOutcome:
    """Train ``arch`` from scratch under ``config`` and evaluate it on the held-out split.

    ``num_classes`` and ``resolution`` default to the data set's (10 and 28 for
    Fashion-MNIST, 10 and 32 for CIFAR-10). ``on_progress`` is called at most every
    ``progress_interval`` seconds, after every intermediate evaluation and once after the
    last step. ``cancelled`` is polled before every step, between the blocks of every
    forward pass and between evaluation batches; when it returns true,
    :class:`TrainingCancelled` is raised. ``threads`` sets torch's (process-wide) intra-op
    thread count. ``keep_weights``: the outcome carries the trained ``state_dict``.
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
        raise InvalidInput(
            f"num_classes: {classes} is fewer than the {split.num_classes} classes of "
            f"{config.dataset}"
        )
    size = split.resolution if resolution is None else resolution
    _check_cancelled(is_cancelled)
    run = _Run.on(torch.device(device))

    with _SEED_LOCK:
        torch.manual_seed(config.seed)
        model = build_torch(arch, num_classes=classes, resolution=size, width=width)
    model.to(run.device)
    if run.memory_format is not torch.contiguous_format:
        model.to(memory_format=run.memory_format)  # type: ignore[call-overload]
    hooks = [
        m.register_forward_pre_hook(lambda _m, _x: _check_cancelled(is_cancelled))
        for m in (model.stem, *model.blocks, model.head)
    ]

    def evaluate_now() -> float:
        count = min(config.evaluation_examples, len(split.validation))
        with _batch_statistics(model):
            accuracy, _ = _evaluate(
                model, split.validation, config.batch_size * 2, size, run, is_cancelled, limit=count
            )
        return accuracy

    try:
        samples = _fit(
            model,
            split.train,
            config,
            size,
            run,
            is_cancelled,
            on_progress,
            progress_interval,
            start,
            evaluate_now,
        )
        _recalibrate_batch_norm(model, split.train, config.batch_size, size, run, is_cancelled)
        model.eval()
        accuracy, loss = _evaluate(
            model, split.validation, config.batch_size * 2, size, run, is_cancelled
        )
    finally:
        for hook in hooks:
            hook.remove()
    weights = _serialize(model) if keep_weights else None
    seconds = time.perf_counter() - start
    _logger.info(
        "trained %s: accuracy %.4f, loss %.4f, %d samples, %.1fs",
        arch.id,
        accuracy,
        loss,
        samples,
        seconds,
    )
    return TrainOutcome(
        accuracy=accuracy, loss=loss, seconds=seconds, samples_seen=samples, weights=weights
    )


@dataclass(frozen=True)
class _Run:
    """Where and how tensors compute: the device, its memory format and autocast type."""

    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format
    autocast: torch.dtype | None = None

    @classmethod
    def on(cls, device: torch.device) -> _Run:
        if device.type != "cuda":
            # oneDNN's depthwise and pointwise convolutions run faster on NHWC tensors:
            # 1.2-1.6x per training step of small-image networks on a 2-core x86 CPU.
            return cls(device, torch.channels_last)
        torch.backends.cudnn.benchmark = True
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, torch.channels_last, half)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A CPU batch on the device (in the run's memory format): pinned and copied
        asynchronously on CUDA."""
        if self.device.type != "cuda":
            return x.to(self.device, memory_format=self.memory_format)
        return x.pin_memory().to(self.device, non_blocking=True, memory_format=self.memory_format)

    def autocasting(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)


def _fit(
    model: nn.Module,
    train_set: data.ImageSet,
    config: TrainingConfig,
    resolution: int,
    run: _Run,
    cancelled: Callable[[], bool],
    on_progress: Callable[[Progress], None] | None,
    progress_interval: float,
    start: float,
    evaluate: Callable[[], float],
) -> int:
    """Run the step budget; return the number of training samples seen."""
    n = len(train_set)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # the last partial batch of an epoch is dropped
    total = config.steps if config.steps > 0 else config.epochs * steps_per_epoch
    optimizer = _optimizer(model, config)
    scaler = torch.amp.GradScaler(enabled=run.autocast is torch.float16)
    labels = torch.from_numpy(train_set.labels)
    model.train()
    samples = 0
    window_loss = 0.0
    window_steps = 0
    last_report = time.perf_counter()
    batches = _batches(
        train_set,
        labels,
        batch,
        steps_per_epoch,
        total,
        resolution,
        config.seed,
        prefetch=run.device.type == "cuda",
    )
    try:
        for step, (x_cpu, y_cpu) in enumerate(batches):
            _check_cancelled(cancelled)
            x = run.input(x_cpu)
            y = y_cpu.to(run.device, non_blocking=True)
            lr = learning_rate_at(step, total, steps_per_epoch, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with run.autocasting():
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(optimizer)
            scaler.update()
            samples += int(y_cpu.shape[0])
            window_loss += float(loss.item())
            window_steps += 1
            every = config.evaluate_every_steps
            accuracy = None
            if every and (step + 1) % every == 0 and step + 1 < total:
                accuracy = evaluate()
            now = time.perf_counter()
            due = (
                step + 1 == total or accuracy is not None or now - last_report >= progress_interval
            )
            if on_progress is not None and due:
                on_progress(
                    Progress(
                        step=step + 1,
                        total_steps=total,
                        epoch=step // steps_per_epoch + 1,
                        loss=window_loss / window_steps,
                        samples_seen=samples,
                        seconds=now - start,
                        accuracy=accuracy,
                    )
                )
                last_report = now
                window_loss = 0.0
                window_steps = 0
    finally:
        batches.close()
    return samples


def _batches(
    train_set: data.ImageSet,
    labels: torch.Tensor,
    batch: int,
    steps_per_epoch: int,
    total: int,
    resolution: int,
    seed: int,
    *,
    prefetch: bool,
) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    """The ``total`` training batches (on the CPU) in a seeded order; with ``prefetch`` a
    background thread assembles the next ones while the device computes."""

    def produce() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        augmentation = torch.Generator().manual_seed(seed + 1)  # crops and flips
        order = torch.empty(0, dtype=torch.long)
        for step in range(total):
            position = step % steps_per_epoch
            if position == 0:
                order = torch.randperm(len(train_set), generator=generator)
            index = order[position * batch : (position + 1) * batch]
            x = train_set.batch(index.numpy(), resolution, generator=augmentation)
            yield x, labels[index]

    if not prefetch:
        yield from produce()
        return
    ready: queue.Queue[tuple[torch.Tensor, torch.Tensor] | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def fill() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        ready.put(item, timeout=0.1)
                        break
                if stop.is_set():
                    return
        finally:
            with contextlib.suppress(queue.Full):
                ready.put_nowait(None)

    worker = threading.Thread(target=fill, name="batches", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not None:
            yield item
    finally:
        stop.set()
        worker.join()


def _optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            groups,
            lr=config.learning_rate,
            alpha=RMSPROP_DECAY,
            eps=RMSPROP_EPSILON,
            momentum=config.momentum,
        )
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum)


@contextlib.contextmanager
def _batch_statistics(model: nn.Module) -> Iterator[None]:
    """Evaluate with batch statistics (a short run's running averages are stale), leaving
    the running statistics as they were and dropout off."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in norms
        if m.running_mean is not None
        and m.running_var is not None
        and m.num_batches_tracked is not None
    ]
    model.eval()
    for m in norms:
        m.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, tracked) in zip(norms, saved, strict=True):
                assert m.running_mean is not None and m.running_var is not None
                assert m.num_batches_tracked is not None
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        model.train()


def _serialize(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


@torch.no_grad()
def _recalibrate_batch_norm(
    model: nn.Module,
    train_set: data.ImageSet,
    batch_size: int,
    resolution: int,
    run: _Run,
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
            with run.autocasting():
                model(run.input(train_set.batch(slice(begin, begin + batch), resolution)))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    held_out: data.ImageSet,
    batch_size: int,
    resolution: int,
    run: _Run,
    cancelled: Callable[[], bool],
    limit: int | None = None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` (in the mode it is in) on the first
    ``limit`` (default: all) images of ``held_out``."""
    labels = torch.from_numpy(held_out.labels)
    n = len(held_out) if limit is None else min(limit, len(held_out))
    correct = 0
    total_loss = 0.0
    for begin in range(0, n, batch_size):
        _check_cancelled(cancelled)
        end = min(n, begin + batch_size)
        x = run.input(held_out.batch(slice(begin, end), resolution))
        y = labels[begin:end].to(run.device)
        with run.autocasting():
            logits: torch.Tensor = model(x)
        total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum").item())
        correct += int((logits.argmax(dim=1) == y).sum().item())
    return correct / n, total_loss / n


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Weight decay on convolution and dense weights; none on biases and batch norm."""
    decayed: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for param in model.parameters():
        (decayed if param.ndim > 1 else plain).append(param)
    return [
        {"params": decayed, "weight_decay": weight_decay},
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
