"""Sampling from the PPO policy without torch: the LSTM run step by step on NumPy copies
of its weights, a batch's worth of sequences at once (a proposal near a tenth of a
millisecond)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from services.controller.ppo_policy import Policy

__all__ = ["Sampler"]

_F32 = npt.NDArray[np.float32]


class Sampler:
    """The policy's weights as NumPy arrays, for sampling sequences step by step."""

    def __init__(self, policy: Policy) -> None:
        with torch.no_grad():
            lstm = dict(policy.lstm.named_parameters())
            weight_ih = lstm["weight_ih_l0"]
            bias = lstm["bias_ih_l0"] + lstm["bias_hh_l0"]
            # Input contribution of every token's embedding (and the start input), once.
            self.token_gates: _F32 = (policy.embedding @ weight_ih.T + bias).numpy()
            self.start_gates: _F32 = (weight_ih @ policy.start + bias).numpy()
            self.weight_hh_t: _F32 = np.ascontiguousarray(lstm["weight_hh_l0"].numpy().T)
            head_weight = policy.head_weight.numpy()
            head_bias = policy.head_bias.numpy()
        self.hidden = policy.hidden_size
        self.heads = [
            (np.ascontiguousarray(head_weight[o : o + s].T), head_bias[o : o + s].copy(), o)
            for o, s in zip(policy.offsets_list, policy.sizes, strict=True)
        ]

    def sample(
        self, uniforms: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Sequences drawn by inverse CDF from ``uniforms`` ``(B, n)`` (one per decision),
        all ``B`` at once, and their per-decision log-probabilities, each ``(B, n)``."""
        batch = uniforms.shape[0]
        hidden = self.hidden
        h: npt.NDArray[np.floating[Any]] = np.zeros((batch, hidden), dtype=np.float32)
        c: npt.NDArray[np.floating[Any]] = np.zeros((batch, hidden), dtype=np.float32)
        gates_in: npt.NDArray[np.floating[Any]] = self.start_gates
        decisions = np.empty(uniforms.shape, dtype=np.int64)
        log_probs = np.empty(uniforms.shape, dtype=np.float64)
        rows = np.arange(batch)
        for step, (weight_t, bias, offset) in enumerate(self.heads):
            gates = gates_in + h @ self.weight_hh_t
            sig = 1.0 / (1.0 + np.exp(-gates))
            candidate = np.tanh(gates[:, 2 * hidden : 3 * hidden])
            c = sig[:, hidden : 2 * hidden] * c + sig[:, :hidden] * candidate
            h = sig[:, 3 * hidden :] * np.tanh(c)
            logits = (h @ weight_t + bias).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            cdf = np.cumsum(np.exp(logits), axis=1)
            total = cdf[:, -1]
            # The first index whose cumulative mass exceeds u (searchsorted, side="right").
            below = (cdf <= (uniforms[:, step] * total)[:, None]).sum(axis=1)
            choice = np.minimum(below, cdf.shape[1] - 1)
            decisions[:, step] = choice
            log_probs[:, step] = logits[rows, choice] - np.log(total)
            gates_in = self.token_gates[offset + choice]
        return decisions, log_probs
