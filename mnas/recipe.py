"""The proxy-training recipe's defaults, in one place for the controller (which writes them
into a spec) and the trainer (which applies them to fields a request leaves unset)."""

from __future__ import annotations

__all__ = ["EVALUATION_EXAMPLES", "LABEL_SMOOTHING", "MOMENTUM", "optimizer_defaults"]

MOMENTUM = 0.9
LABEL_SMOOTHING = 0.1
EVALUATION_EXAMPLES = 2000  # held-out images of an intermediate evaluation
SGD_LEARNING_RATE = 0.05
RMSPROP_LEARNING_RATE_PER_256 = 0.016  # MnasNet: 0.016 per 256 images of batch
RMSPROP_WARMUP_FRACTION = 0.05


def optimizer_defaults(optimizer: str, batch_size: int) -> dict[str, float]:
    """``learning_rate``, ``weight_decay`` and ``warmup_fraction`` for ``optimizer``
    (``sgd`` or ``rmsprop``, MnasNet's) at ``batch_size``."""
    if optimizer == "rmsprop":
        return {
            "learning_rate": RMSPROP_LEARNING_RATE_PER_256 * batch_size / 256,
            "weight_decay": 1e-5,
            "warmup_fraction": RMSPROP_WARMUP_FRACTION,
        }
    return {"learning_rate": SGD_LEARNING_RATE, "weight_decay": 4e-5, "warmup_fraction": 0.0}
