"""The training core: a real tiny training, budgets, determinism, errors, cancellation."""

from __future__ import annotations

import dataclasses
import io
import math
import threading

import pytest
import torch

from mnas.arch import Architecture, decode
from services.trainer.builder import build_torch
from services.trainer.training import (
    Progress,
    TrainingCancelled,
    TrainingConfig,
    TrainOutcome,
    learning_rate_at,
    train,
)

TINY = decode(
    "stem:8 r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16 r1_k3_s22_e3_i16_o24_se0.25 "
    "head:64 act:relu dropout:0"
)
SMALL_SUBSET = TrainingConfig(train_examples=1000, validation_examples=500, batch_size=32)
STOP_WITHIN_SECONDS = 10.0


def run(
    arch: Architecture = TINY, config: TrainingConfig = SMALL_SUBSET, **kwargs: object
) -> tuple[TrainOutcome, list[Progress]]:
    events: list[Progress] = []
    outcome = train(arch, config=config, on_progress=events.append, **kwargs)  # type: ignore[arg-type]
    return outcome, events


def test_one_epoch_on_a_small_subset_beats_chance() -> None:
    outcome, events = run()
    assert outcome.accuracy > 0.1  # chance on 10 classes
    assert 0.0 <= outcome.accuracy <= 1.0
    assert outcome.loss > 0
    assert outcome.samples_seen == 31 * 32  # 1000 // 32 full batches
    assert outcome.seconds > 0
    assert events, "at least the final progress report"
    last = events[-1]
    assert last.step == last.total_steps == 31
    assert last.samples_seen == outcome.samples_seen
    assert last.epoch == 1
    assert [e.step for e in events] == sorted(e.step for e in events)


def test_the_same_seed_gives_the_same_result() -> None:
    config = TrainingConfig(train_examples=256, validation_examples=256, batch_size=32, steps=6)
    first, _ = run(config=config)
    second, _ = run(config=config)
    assert (first.accuracy, first.loss, first.samples_seen) == (
        second.accuracy,
        second.loss,
        second.samples_seen,
    )


def test_steps_win_over_epochs_and_wrap_around_epochs() -> None:
    config = TrainingConfig(
        train_examples=64, validation_examples=64, batch_size=32, steps=5, epochs=9
    )
    outcome, events = run(config=config, progress_interval=0.0)
    assert [e.step for e in events] == [1, 2, 3, 4, 5]
    assert [e.epoch for e in events] == [1, 1, 2, 2, 3]
    assert all(e.total_steps == 5 for e in events)
    assert outcome.samples_seen == 5 * 32


def test_other_resolution_and_more_classes_than_the_data_set() -> None:
    config = TrainingConfig(train_examples=64, validation_examples=64, batch_size=32, steps=2)
    outcome, _ = run(config=config, resolution=40, num_classes=12, width=0.5)
    assert 0.0 <= outcome.accuracy <= 1.0


def test_fewer_classes_than_the_data_set_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^num_classes: 5 is fewer than the 10"):
        run(num_classes=5)


def test_missing_dataset_is_refused() -> None:
    config = TrainingConfig(dataset="/nonexistent/mnas-data")
    with pytest.raises(ValueError, match=r"^dataset: directory not found: /nonexistent/mnas-data"):
        run(config=config)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"steps": -1}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"validation_examples": 0}, "validation_examples"),
        ({"train_examples": -3}, "train_examples"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainingConfig(**kwargs)  # type: ignore[arg-type]


def test_cancelled_before_start_raises_at_once() -> None:
    with pytest.raises(TrainingCancelled):
        run(cancelled=lambda: True)


def test_cancellation_stops_a_long_training_promptly() -> None:
    config = TrainingConfig(
        train_examples=1000, validation_examples=500, batch_size=32, steps=1_000_000
    )
    started = threading.Event()
    cancel = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            train(
                TINY,
                config=config,
                on_progress=lambda _p: started.set(),
                cancelled=cancel.is_set,
                progress_interval=0.0,
            )
        except BaseException as err:
            errors.append(err)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    assert started.wait(30), "training never reported progress"
    cancel.set()
    worker.join(STOP_WITHIN_SECONDS)
    assert not worker.is_alive(), f"training still running {STOP_WITHIN_SECONDS}s after cancel"
    assert len(errors) == 1 and isinstance(errors[0], TrainingCancelled)


def test_intermediate_evaluations_leave_the_training_unchanged() -> None:
    plain = TrainingConfig(train_examples=320, validation_examples=200, batch_size=32, steps=9)
    evaluated = dataclasses.replace(plain, evaluate_every_steps=4, evaluation_examples=100)
    first, _ = run(config=plain)
    second, events = run(config=evaluated)
    reports = [(e.step, e.accuracy) for e in events if e.accuracy is not None]
    assert [step for step, _ in reports] == [4, 8]  # not at the last step: the result is
    assert all(0.0 <= accuracy <= 1.0 for _, accuracy in reports)
    # Evaluating restores batch-norm statistics and draws no randomness.
    assert (first.accuracy, first.loss) == (second.accuracy, second.loss)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_both_optimizers_learn(optimizer: str) -> None:
    lr = 0.05 if optimizer == "sgd" else 0.016 * 32 / 256
    config = dataclasses.replace(
        SMALL_SUBSET, optimizer=optimizer, learning_rate=lr, warmup_fraction=0.1
    )
    outcome, _ = run(config=config)
    assert outcome.accuracy > 0.3  # chance is 0.1


def test_learning_rate_warms_up_then_follows_the_schedule() -> None:
    cosine = TrainingConfig(learning_rate=1.0, warmup_fraction=0.1)
    lrs = [learning_rate_at(step, 100, 10, cosine) for step in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5)
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    exponential = dataclasses.replace(cosine, schedule="exponential")
    # 0.97 every 2.4 epochs, counted from the end of the warm-up.
    assert learning_rate_at(10 + 24, 100, 10, exponential) == pytest.approx(0.97)
    constant = dataclasses.replace(cosine, schedule="constant", warmup_fraction=0.0)
    assert {learning_rate_at(s, 100, 10, constant) for s in range(100)} == {1.0}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "adam", r"^optimizer: must be one of sgd, rmsprop"),
        ("schedule", "step", r"^schedule: must be one of"),
        ("momentum", 1.0, r"^momentum: must be in \[0, 1\)"),
        ("weight_decay", -1.0, r"^weight_decay: must be a number >= 0"),
        ("warmup_fraction", 1.0, r"^warmup_fraction: must be in \[0, 1\)"),
        ("evaluate_every_steps", -1, r"^evaluate_every_steps: must be an integer >= 0"),
    ],
)
def test_recipe_errors_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**{field: value})  # type: ignore[arg-type]


def test_kept_weights_load_into_the_same_network() -> None:
    config = TrainingConfig(train_examples=64, validation_examples=64, batch_size=32, steps=2)
    outcome, _ = run(config=config, keep_weights=True)
    assert outcome.weights is not None
    state = torch.load(io.BytesIO(outcome.weights), weights_only=True)
    model = build_torch(TINY, num_classes=10, resolution=28)
    model.load_state_dict(state)  # every key and shape matches
    assert run(config=config)[0].weights is None
