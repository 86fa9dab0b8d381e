"""The PPO strategy's saved state, in two layers.

- The weights: the policy's parameters and Adam's moments as one flat buffer
  (:func:`save_state`, :func:`load_state`), what the learner process receives and sends.
- The strategy state (:meth:`~services.controller.ppo.PPOStrategy.state`), format 2:
  :data:`STATE_MAGIC`, the length of a JSON header (8 bytes, big-endian), the header,
  then the weights (:func:`write_state`). Format 1, one ``torch.save`` of everything, is
  still read (:func:`read_state`).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch

__all__ = [
    "STATE_FORMAT",
    "STATE_MAGIC",
    "WEIGHTS_MAGIC",
    "load_state",
    "read_state",
    "save_state",
    "write_state",
]

# 2: a JSON header, then policy and optimizer as the learner process sends them (1: all
# in one torch.save, still read).
STATE_FORMAT = 2
STATE_MAGIC = b"mnas-ppo-state\n"
WEIGHTS_MAGIC = b"mnas-ppo-weights-1\n"


def save_state(policy: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bytes:
    """The policy's parameters and Adam's moments as one flat buffer: no pickling, so
    writing and reading it cost a copy. The layout: :data:`WEIGHTS_MAGIC`, the number of
    parameters ``n`` (8 bytes, big-endian), ``n`` float64 step counts (-1: no state yet),
    then float32 parameters, first moments and second moments, each in the order of
    ``policy.parameters()``."""
    params = list(policy.parameters())
    steps, first, second = [], [], []
    for param in params:
        state = optimizer.state.get(param, {})
        if "step" in state:
            steps.append(float(state["step"]))
            first.append(state["exp_avg"].reshape(-1))
            second.append(state["exp_avg_sq"].reshape(-1))
        else:
            steps.append(-1.0)
            first.append(torch.zeros(param.numel()))
            second.append(torch.zeros(param.numel()))
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params] + first + second)
    return b"".join(
        [
            WEIGHTS_MAGIC,
            len(params).to_bytes(8, "big"),
            np.asarray(steps, dtype=">f8").tobytes(),
            flat.numpy().astype("<f4", copy=False).tobytes(),
        ]
    )


def load_state(data: bytes, policy: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put a :func:`save_state` buffer back; ``ValueError`` when it is not one of this
    policy's shape."""
    params = list(policy.parameters())
    total = sum(p.numel() for p in params)
    start = len(WEIGHTS_MAGIC)
    if not data.startswith(WEIGHTS_MAGIC) or int.from_bytes(data[start : start + 8], "big") != len(
        params
    ):
        raise ValueError("strategy state: weights of another format or policy")
    start += 8
    steps = np.frombuffer(data, dtype=">f8", count=len(params), offset=start)
    start += 8 * len(params)
    if len(data) - start != 4 * 3 * total:
        raise ValueError("strategy state: weights of a policy of another size")
    flat = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=start).astype(np.float32))
    values, first, second = (flat[i * total : (i + 1) * total] for i in range(3))
    optimizer.state.clear()
    offset = 0
    with torch.no_grad():
        for param, step in zip(params, steps.tolist(), strict=True):
            size = param.numel()
            param.copy_(values[offset : offset + size].view_as(param))
            if step >= 0:
                optimizer.state[param] = {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": first[offset : offset + size].view_as(param).clone(),
                    "exp_avg_sq": second[offset : offset + size].view_as(param).clone(),
                }
            offset += size


def write_state(header: dict[str, Any], weights: bytes) -> bytes:
    """A format-2 state of ``header`` (``format`` among its keys: :data:`STATE_FORMAT`)
    and the weights (:func:`save_state`)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([STATE_MAGIC, len(text).to_bytes(8, "big"), text, weights])


def read_state(data: bytes) -> dict[str, Any]:
    """A strategy state as a dict, ``weights`` included; also reads format 1 (one
    ``torch.save`` of everything). ``ValueError`` when it is neither."""
    if data.startswith(STATE_MAGIC):
        start = len(STATE_MAGIC)
        size = int.from_bytes(data[start : start + 8], "big")
        try:
            payload = json.loads(data[start + 8 : start + 8 + size])
        except ValueError as err:
            raise ValueError(f"strategy state: not a PPO state ({err})") from None
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise ValueError("strategy state: not a PPO state of a known format")
        payload["weights"] = data[start + 8 + size :]
        return payload
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:
        raise ValueError(f"strategy state: not a PPO state ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != 1:
        raise ValueError("strategy state: not a PPO state of a known format")
    return payload
